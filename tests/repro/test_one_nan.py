"""One NaN: whatever makes a NaN inside an op (inf - inf, 0 * inf, NaN inputs with any payload,
log of a negative), every verifiable backend writes 0x7FC00000, and a diverging training run
hashes the same whatever NaN rule the hardware follows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bitswarm.repro import backend as backend_mod
from bitswarm.repro.backend import IN_PLACE, OPS, get_backend
from bitswarm.repro.hashing import tensor_hash
from bitswarm.repro.nan import QNAN_BITS

F32 = np.float32
INF = F32(np.inf)
X86_NAN, ARM_PAYLOAD, GPU_NAN = 0xFFC00000, 0x7FC12345, 0x7FFFFFFF
VERIFIABLE = ["reference", "numba", "triton"]


def nan(bits: int) -> F32:
    return np.array(bits, np.uint32).view(F32)[()]


def a(*rows) -> np.ndarray:
    return np.array(rows, F32)


# op -> a function making fresh arguments (in-place ops mutate them) that make or carry a NaN
CASES = {
    "matmul": lambda: (a([INF, -INF], [0, 1]), a([1, 0], [1, INF])),  # inf - inf, 0 * inf
    "matmul_acc": lambda: (a([nan(ARM_PAYLOAD), 1]), a([1], [nan(X86_NAN)]), a([nan(GPU_NAN)])),  # NaN into fma
    "bmm": lambda: (a([[INF, -INF]]), a([[1], [1]])),
    "bmm_acc": lambda: (a([[0, 1]]), a([[INF], [1]]), a([[nan(X86_NAN)]])),
    "exp": lambda: (a(nan(X86_NAN), nan(ARM_PAYLOAD), 1),),
    "log": lambda: (a(-1, -INF, nan(GPU_NAN), 2),),  # log of a negative
    "sigmoid": lambda: (a(nan(X86_NAN), 0),),
    "silu": lambda: (a(nan(ARM_PAYLOAD), -INF, 1),),
    "rsqrt": lambda: (a(-1, -INF, 4),),
    "row_sum": lambda: (a([INF, -INF, 1], [nan(X86_NAN), 1, 2]),),
    "row_max": lambda: (a([1, nan(ARM_PAYLOAD)], [nan(X86_NAN), 2]),),
    "row_mean": lambda: (a([INF, -INF]),),
    "row_dot": lambda: (a([0, 1], [INF, 1]), a([INF, 1], [-INF, INF])),
    "softmax": lambda: (a([INF, INF, 0], [nan(X86_NAN), 1, 2]),),
    "log_softmax": lambda: (a([INF, 1, 0], [-INF, -INF, -INF]),),
    "cross_entropy_fwd": lambda: (a([INF, 1], [nan(GPU_NAN), 0]), np.array([1, 0])),
    "cross_entropy_bwd": lambda: (a([INF, 1], [1, 2]), np.array([1, 0]), a(1, 0)),
    "rmsnorm_fwd": lambda: (a([INF, 1, 2]), a(1, 1, 1), 1e-6),  # rsqrt(inf) = 0, then inf * 0
    "rmsnorm_bwd": lambda: (a([1, INF]), a([1, 2]), a(1, 1), a(0), np.zeros(2, F32)),
    "rope_fwd": lambda: (np.full((1, 1, 2), INF, F32), a([1]), a([1])),  # inf*cos - inf*sin
    "rope_bwd": lambda: (np.full((1, 1, 2), INF, F32), a([1]), a([-1])),
    "embedding_fwd": lambda: (np.array([1, 0]), a([1, 2], [nan(X86_NAN), nan(ARM_PAYLOAD)])),
    "embedding_bwd": lambda: (np.array([0, 0]), a([INF, 1], [-INF, 1]), np.zeros((2, 2), F32)),
    "swiglu_fwd": lambda: (a([INF, 1]), a([0, nan(GPU_NAN)])),  # silu(inf) * 0
    "swiglu_bwd": lambda: (a([1, 0]), a([INF, 1]), a([0, INF])),
    "grpo_token_loss": lambda: (a(nan(X86_NAN), 0), a(0, 0), a(1, INF), a(1, 1), 0.2, 0.28),
    "global_grad_norm_sq": lambda: ([a(INF, nan(ARM_PAYLOAD))],),
    "scale_grads_": lambda: ([a(INF, 1), a(nan(X86_NAN))], F32(0)),  # 0 * inf
    "adamw_step_": lambda: (a(1, 2), a(INF, 1), a(0, 0), a(0, 0)),  # m/sqrt(v) = inf/inf
}
ADAMW = dict(lr=F32(0.1), beta1=F32(0.9), beta2=F32(0.95), eps=F32(1e-8), weight_decay=F32(0.0),
             beta1_pow=F32(0.9), beta2_pow=F32(0.95))
# ops with no NaN to make: integer outputs (sampling refuses NaN), constants of the model, and
# clip_scale, whose NaN norm compares false against the limit and gives 1
NO_NAN = {"greedy", "sample_rows", "rope_tables", "advance_pows", "clip_scale"}


def _floats(x) -> list[np.ndarray]:
    if isinstance(x, (tuple, list)):
        return [f for v in x for f in _floats(v)]
    if isinstance(x, (np.ndarray, np.floating)):
        arr = np.asarray(x)
        return [arr] if arr.dtype == F32 else []
    return []


def _run(backend: str, op: str) -> list[np.ndarray]:
    args = CASES[op]()
    kwargs = ADAMW if op == "adamw_step_" else {}
    with np.errstate(all="ignore"):
        out = getattr(get_backend(backend), op)(*args, **kwargs)
    return _floats(out) + [f for i in IN_PLACE.get(op, ()) for f in _floats(args[i])]


def test_every_op_is_covered():
    assert set(CASES) | NO_NAN == set(OPS)


@pytest.mark.parametrize("op", sorted(CASES))
@pytest.mark.parametrize("backend", VERIFIABLE)
def test_every_nan_an_op_writes_is_the_canonical_one(backend, op):
    got = _run(backend, op)
    nans = np.concatenate([np.isnan(g).reshape(-1) for g in got])
    assert nans.any(), f"{op}: the case should make or carry a NaN"
    for g in got:
        bits = g.reshape(-1).view(np.uint32)
        assert np.all(bits[np.isnan(g.reshape(-1))] == QNAN_BITS), f"{op} on {backend}: {[hex(b) for b in bits]}"
    if backend != "reference":
        ref = _run("reference", op)
        assert [tensor_hash(x) for x in got] == [tensor_hash(x) for x in ref]
        assert [x.tobytes() for x in got] == [x.tobytes() for x in ref], f"{op}: {backend} != reference"


def test_hashes_read_any_nan_as_the_canonical_one():
    with np.errstate(invalid="ignore"):
        glue = a(1, INF) - a(0, INF)  # numpy glue between ops: 0xFFC00000 on x86
    assert tensor_hash(glue) == tensor_hash(a(1, nan(QNAN_BITS))) == tensor_hash(a(1, nan(GPU_NAN)))
    assert tensor_hash(glue) != tensor_hash(a(1, 0))


def _device_with_nan_rule(monkeypatch, base: str, bits: int) -> str:
    """`base`'s kernels on a pretend device whose NaNs all carry `bits` (x86, Arm, GPU rules)."""
    raw = get_backend(base)

    def paint(x):
        for f in _floats(x):
            if f.ndim:
                f[np.isnan(f)] = nan(bits)

    def with_rule(op, fn):
        def op_on_device(*args, **kwargs):
            out = fn(*args, **kwargs)
            paint(out)
            for i in IN_PLACE.get(op, ()):
                paint(args[i])
            return out

        return backend_mod._one_nan(op, op_on_device)

    name = f"{base}-nan-{bits:08x}"
    ns = backend_mod.SimpleNamespace(name=name, verifiable=True,
                                     **{op: with_rule(op, getattr(raw, op).__wrapped__) for op in OPS})
    monkeypatch.setitem(backend_mod._cache, name, ns)
    return name


def test_a_diverging_run_hashes_alike_whatever_the_nan_rule(tiny_model_store, monkeypatch):
    from bitswarm.jobs.spec import example_spec
    from bitswarm.jobs.train_job import prepare
    from bitswarm.repro.train import train_step

    store, cid = tiny_model_store
    spec = example_spec(cid, steps=3).model_copy(update={"seq_len": 12, "global_batch": 2})
    hashes, losses = {}, {}
    for rule in (None, X86_NAN, ARM_PAYLOAD, GPU_NAN):
        backend = "numba" if rule is None else _device_with_nan_rule(monkeypatch, "numba", rule)
        p = prepare(store, spec, backend)
        hyper = dataclasses.replace(p.hyper, lr=1e30, grad_clip=0.0)  # far past any stable rate
        with np.errstate(all="ignore"):
            for step in range(3):
                r = train_step(p.model, p.state, p.batches_for_step(step), hyper)
        losses[rule] = r["loss"]
        tensors = p.state.tensors()
        nans = [k for k, v in tensors.items() if v.dtype == F32 and np.isnan(v).any()]
        assert nans, "the run should have diverged into NaN"
        assert all(np.all(v.reshape(-1).view(np.uint32)[np.isnan(v.reshape(-1))] == QNAN_BITS)
                   for v in tensors.values() if v.dtype == F32)
        hashes[rule] = p.state.hash()
    assert len(set(hashes.values())) == 1, hashes
    assert all(np.isnan(v) for v in losses.values())
