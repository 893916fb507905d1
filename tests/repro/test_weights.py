"""Weights load as float32 whatever their stored dtype, without torch unless they are bfloat16."""

import shutil

import numpy as np

from bitswarm.repro.config import LlamaConfig
from bitswarm.repro.weights import _dtypes, load_params


def test_bfloat16_weights_load_as_their_exact_float32_values(tiny_model_store, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    store, cid = tiny_model_store
    src = store.checkout(cid)
    cfg = LlamaConfig.from_dir(src)
    as_f32 = load_params(src, cfg)
    assert _dtypes(next(src.glob("*.safetensors"))) == {"F32"}

    bf = tmp_path / "bf16"
    shutil.copytree(src, bf)
    for f in bf.glob("*.safetensors"):
        tensors = {k: v.to(torch.bfloat16) for k, v in load_file(str(f)).items()}
        f.unlink()
        save_file(tensors, str(f))
    assert "BF16" in _dtypes(next(bf.glob("*.safetensors")))
    loaded = load_params(bf, cfg)
    for name, value in as_f32.items():
        want = torch.from_numpy(value).to(torch.bfloat16).float().numpy()
        assert loaded[name].dtype == np.float32 and np.array_equal(loaded[name], want), name
