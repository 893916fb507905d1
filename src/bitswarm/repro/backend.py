"""Backends: one namespace of ops per implementation, so the model code never changes.

- `reference`: the numpy spec (slow; the definition of the bits)
- `numba`:     the CPU kernels, bit-identical to `reference`
- `native`:    plain torch, fast and NOT bit-exact: for speed comparisons and unverified work
- `cuda`:      triton kernels; not built yet (no GPU was available to test them on)
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from bitswarm.errors import BitswarmError

OPS = (
    "matmul", "matmul_acc", "bmm", "bmm_acc",
    "exp", "log", "sigmoid", "silu", "rsqrt",
    "row_sum", "row_max", "row_mean", "row_dot", "softmax", "log_softmax",
    "cross_entropy_fwd", "cross_entropy_bwd",
    "rmsnorm_fwd", "rmsnorm_bwd", "rope_tables", "rope_fwd", "rope_bwd",
    "embedding_fwd", "embedding_bwd", "swiglu_fwd", "swiglu_bwd",
    "grpo_token_loss", "sample_rows", "greedy",
    "global_grad_norm_sq", "clip_scale", "scale_grads_", "adamw_step_", "advance_pows",
)
_MODULES = {
    "reference": ["matmul", "transcendental", "nn", "layers", "optim", "grpo", "sampling"],
    "numba": ["gemv", "matmul", "transcendental", "nn", "layers", "optim", "grpo", "sampling"],
}
_PACKAGES = {"reference": "bitswarm.repro.reference", "numba": "bitswarm.repro.kernels.cpu"}
BACKENDS = ("reference", "numba", "native", "cuda")
VERIFIABLE = ("reference", "numba", "cuda")
_cache: dict[str, SimpleNamespace] = {}


class BackendError(BitswarmError, ValueError):
    pass


def get_backend(name: str) -> SimpleNamespace:
    if name in _cache:
        return _cache[name]
    if name == "cuda":
        raise BackendError(
            "the cuda backend is not built yet: its triton kernels are written only where a GPU "
            "can test them bit for bit against the reference; use 'numba' (bit-identical) or 'native'"
        )
    if name == "native":
        from bitswarm.repro import native

        ns = SimpleNamespace(name="native", verifiable=False, **{op: getattr(native, op) for op in OPS})
    elif name in _MODULES:
        found = {}
        for mod in _MODULES[name]:
            m = importlib.import_module(f"{_PACKAGES[name]}.{mod}")
            found |= {op: getattr(m, op) for op in OPS if hasattr(m, op) and op not in found}
        missing = [op for op in OPS if op not in found]
        if missing:
            raise BackendError(f"backend {name!r} lacks ops: {', '.join(missing)}")
        ns = SimpleNamespace(name=name, verifiable=True, **found)
    else:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    _cache[name] = ns
    return ns


def set_threads(n: int | None) -> None:
    """Thread count for numba and torch; results never depend on it for verifiable backends."""
    if n is None:
        return
    import numba
    import torch

    if n < 1:
        raise BackendError("threads must be at least 1")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)
