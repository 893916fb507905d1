"""Loading a Hugging Face-format Llama checkpoint into repro's float32 parameter dict."""

from __future__ import annotations

import json
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
        # numpy reads F32 and F16 exactly; only bfloat16 (which numpy lacks) needs torch, whose
        # import costs a second that a model stored in float32 (ours are) should not pay.
        framework = "pt" if "BF16" in _dtypes(f) else "numpy"
        with safe_open(str(f), framework=framework) as sf:
            for name in sf.keys():
                if name in want:
                    t = sf.get_tensor(name)
                    t = t.float().numpy() if framework == "pt" else t.astype(np.float32, copy=False)
                    params[name] = np.ascontiguousarray(t)
    missing = [n for n in want if n not in params]
    if missing:
        raise ModelConfigError(f"{model_dir} lacks weights: {', '.join(missing[:5])}")
    for name, shape in want.items():
        if params[name].shape != shape:
            raise ModelConfigError(f"{name} has shape {params[name].shape}, config says {shape}")
    return dict(sorted(params.items()))


def _dtypes(path: Path) -> set[str]:
    """The tensor dtypes a .safetensors file declares in its header (8-byte length, then JSON)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= 100 << 20:
            raise ModelConfigError(f"{path} is not a safetensors file (header of {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise ModelConfigError(f"{path} is not a safetensors file (its header is not JSON)") from None
    return {v.get("dtype") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def save_params(params: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sorted(params.items())}, str(path))
