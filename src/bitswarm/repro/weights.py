"""Loading a Hugging Face-format Llama checkpoint into repro's float32 parameter dict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitswarm.repro.config import LlamaConfig, ModelConfigError


def load_params(model_dir: Path, cfg: LlamaConfig) -> dict[str, np.ndarray]:
    """Every parameter as a C-contiguous float32 array, checked against the config's shapes."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ModelConfigError(f"{model_dir} has no *.safetensors weights")
    want = cfg.param_shapes()
    params: dict[str, np.ndarray] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for name in sf.keys():
                if name in want:
                    params[name] = np.ascontiguousarray(sf.get_tensor(name).float().numpy())
    missing = [n for n in want if n not in params]
    if missing:
        raise ModelConfigError(f"{model_dir} lacks weights: {', '.join(missing[:5])}")
    for name, shape in want.items():
        if params[name].shape != shape:
            raise ModelConfigError(f"{name} has shape {params[name].shape}, config says {shape}")
    return dict(sorted(params.items()))


def save_params(params: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sorted(params.items())}, str(path))
