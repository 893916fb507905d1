"""CUDA: the same spec must give the same final state hash on a GPU as on the CPU."""

import pytest
import torch

from bitswarm.repro.backend import BackendError, get_backend


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_cuda_backend_without_a_device_says_what_to_use():
    with pytest.raises(BackendError, match="needs a CUDA device.*--backend triton"):
        get_backend("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine; the CPU side is the whole check here")
def test_cuda_final_state_hash_equals_cpu(tiny_model_store, tmp_path):
    from bitswarm.jobs.spec import example_spec
    from bitswarm.jobs.train_job import run_training

    try:
        get_backend("cuda")
    except BackendError as e:
        pytest.fail(f"a GPU is here but the triton kernels are not: {e}")
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=3).model_copy(update={"seq_len": 16, "global_batch": 2})
    cpu = run_training(store, spec, tmp_path / "cpu", backend="numba")
    gpu = run_training(store, spec, tmp_path / "gpu", backend="cuda")
    assert gpu["final_state_hash"] == cpu["final_state_hash"]
