"""Backends: one namespace of ops per implementation, so the model code never changes.

- `reference`: the numpy spec (slow; the definition of the bits)
- `numba`:     the CPU kernels, bit-identical to `reference`
- `native`:    plain torch, fast and NOT bit-exact: for speed comparisons and unverified work
- `triton`:    the triton kernels, bit-identical to `reference`: on a CUDA device when there is
               one, otherwise in triton's interpreter on the CPU (slow; it is how CI tests them)
- `cuda`:      the triton kernels on a CUDA device, refused where there is none

The bits never depend on the backend, so a job, a dispute or a hash never records which one ran.
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
# op name -> positions of the arguments the op updates in place
IN_PLACE = {
    "matmul_acc": (2,),
    "bmm_acc": (2,),
    "rmsnorm_bwd": (4,),
    "embedding_bwd": (2,),
    "scale_grads_": (0,),
    "adamw_step_": (0, 2, 3),
}
_MODULES = {
    "reference": ["matmul", "transcendental", "nn", "layers", "optim", "grpo", "sampling"],
    "numba": ["gemv", "matmul", "transcendental", "nn", "layers", "optim", "grpo", "sampling"],
}
_MODULES["triton"] = ["matmul", "transcendental", "nn", "layers", "optim", "grpo", "sampling"]
_PACKAGES = {
    "reference": "bitswarm.repro.reference",
    "numba": "bitswarm.repro.kernels.cpu",
    "triton": "bitswarm.repro.kernels.triton",
}
BACKENDS = ("reference", "numba", "native", "triton", "cuda")
VERIFIABLE = ("reference", "numba", "triton", "cuda")
_cache: dict[str, SimpleNamespace] = {}


class BackendError(BitswarmError, ValueError):
    pass


def get_backend(name: str) -> SimpleNamespace:
    if name in _cache:
        return _cache[name]
    if name == "cuda":
        from bitswarm.repro.kernels.triton.runtime import ON_GPU

        if not ON_GPU:
            raise BackendError(
                "the cuda backend needs a CUDA device and this machine has none (or TRITON_INTERPRET=1 "
                "is set); '--backend triton' runs the same kernels in triton's interpreter on the CPU "
                "(slow), and 'numba' gives the same bits fast"
            )
        ns = SimpleNamespace(**vars(get_backend("triton")))
        ns.name = "cuda"
        _cache[name] = ns
        return ns
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
        ns = SimpleNamespace(name=name, verifiable=True, **{op: _one_nan(op, fn) for op, fn in found.items()})
        if name == "numba":  # not an op: W prepared for few-row x @ W.T, which its matmul takes as b
            from bitswarm.repro.kernels.cpu.gemv import PackedWT

            ns.decode_weight = PackedWT
    else:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    _cache[name] = ns
    return ns


def _one_nan(op: str, fn):
    """`fn` with every NaN it writes made the canonical one (see `repro.nan`)."""
    from bitswarm.repro.nan import canonical

    mutated = IN_PLACE.get(op, ())

    def op_with_one_nan(*args, **kwargs):
        result = canonical(fn(*args, **kwargs))
        for i in mutated:
            if i < len(args):
                canonical(args[i])
        return result

    op_with_one_nan.__name__ = op_with_one_nan.__qualname__ = op
    op_with_one_nan.__doc__ = fn.__doc__
    op_with_one_nan.__wrapped__ = fn
    return op_with_one_nan


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
