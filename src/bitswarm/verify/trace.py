"""Per-op traces of one training step: every backend op in call order with its tensors' hashes.

A trace record is {"i": index, "op": name, "in": [hashes], "out": [hashes]} where each hash is
repro's canonical tensor hash (scalars are hashed as 0-d float32/int64 tensors, lists of
tensors element by element, None as "-"). Ops that update arguments in place (accumulators,
optimizer state) list those arguments' hashes after the call among their outputs, so an
op's record pins both what it read and what it wrote. The canonical order is the call order of
the step: forward, backward, optimizer. Records are chained from the state the step starts from: c_{-1} = that state's
hash, c_i = sha256(c_{i-1} | sha256 of record i's canonical JSON), and the trace root is the
Merkle root (0x00 leaves, 0x01 nodes) over c_0..c_{n-1}, so a bisection over i finds the first
op where two traces part, and a trace cannot be moved onto another starting state.

Tracing only observes: it hashes before and after each call and passes every argument through
unchanged, so a traced step produces the same bits as an untraced one (tested).

RoPE tables (constants of the model) are computed when the job is prepared, never inside a
step, so every step traces the same op sequence. Not yet traced: the elementwise numpy glue between ops (residual adds, scaling, masking). A
dispute that must localise a fault inside that glue needs those made into backend ops first.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bitswarm.repro import train as repro_train
from bitswarm.repro.backend import IN_PLACE, OPS
from bitswarm.repro.hashing import merkle_root, tensor_hash
from bitswarm.verify.adversary import do_step
from bitswarm.verify.replay import ReplayError



def _hash(x) -> list[str] | str:
    if x is None:
        return "-"
    if isinstance(x, (list, tuple)):
        return [_hash(v) for v in x]
    if isinstance(x, np.ndarray):
        return tensor_hash(x)
    if isinstance(x, (bool, np.bool_)):
        return tensor_hash(np.asarray(x, np.bool_))
    if isinstance(x, (int, np.integer)):
        return tensor_hash(np.asarray(x, np.int64))
    if isinstance(x, (float, np.floating)):
        return tensor_hash(np.asarray(x, np.float32))
    raise TypeError(f"cannot hash a {type(x).__name__} in a trace")


def record_digest(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def chain_digests(records: list[dict], seed: str) -> list[str]:
    """c_i = H(c_{i-1} | digest(record_i)), c_{-1} = `seed` (32 bytes, hex): the commitment the
    computation starts from.

    Ops form a graph, not a chain: a corrupted op's neighbours can have equal records again.
    Chaining makes "differs at i" monotone in i, so bisection finds the FIRST differing op.
    """
    out, prev = [], bytes.fromhex(seed)
    if len(prev) != 32:
        raise ValueError(f"a trace chain starts from a 32-byte commitment, not {seed!r}")
    for r in records:
        prev = hashlib.sha256(prev + bytes.fromhex(record_digest(r))).digest()
        out.append(prev.hex())
    return out


def input_hashes(args, kwargs) -> list:
    """What an op record lists under "in": positional arguments, then keywords by name."""
    return [_hash(a) for a in args] + [_hash(kwargs[k]) for k in sorted(kwargs)]


def output_hashes(op: str, result, args) -> list:
    """What an op record lists under "out": the result, then in-place arguments after the call."""
    return [_hash(result)] + [_hash(args[i]) for i in IN_PLACE.get(op, ()) if i < len(args)]


def recompute(backend, op: str, args, kwargs) -> list:
    """The referee's ruling material: run one op on its own kernels, hash what it produced."""
    return output_hashes(op, getattr(backend, op)(*args, **kwargs), args)


class TracingBackend(SimpleNamespace):
    """Wraps a backend namespace; records every op call in order."""

    def __init__(self, inner, capture: int | None = None):
        self.records: list[dict] = []
        self.capture, self.captured = capture, None
        wrapped = {op: self._wrap(op, getattr(inner, op)) for op in OPS}
        super().__init__(name=inner.name, verifiable=inner.verifiable, records=self.records, **wrapped)

    def _wrap(self, op: str, fn):
        def traced(*args, **kwargs):
            ins = input_hashes(args, kwargs)
            if self.capture == len(self.records):  # the referee's copy of this op's inputs
                self.captured = (op, copy.deepcopy(args), copy.deepcopy(kwargs))
            result = fn(*args, **kwargs)
            self.records.append({"i": len(self.records), "op": op, "in": ins, "out": output_hashes(op, result, args)})
            return result

        return traced

    def root(self, seed: str) -> str:
        return merkle_root(chain_digests(self.records, seed))


def state_at(run: Path, prepared, step: int, adversary=None):
    """The state after `step`, rebuilt from the run's newest checkpoint at or before it (whose
    hash TrainState.load checks) by re-executing the steps in between, with the adversary's
    fault if one is given; `prepared.model` is left pointing at its parameters."""
    ckpts = repro_train.checkpoints(run)
    base = max((s for s in ckpts if s <= step), default=None)
    if base is None:
        raise ReplayError(f"{run} has no checkpoint at or before step {step}")
    state = repro_train.TrainState.load(ckpts[base], initial=getattr(prepared, "initial_state", None))
    prepared.model.params = state.params
    while state.step < step:
        do_step(prepared.model, state, prepared.batches_for_step, prepared.hyper, adversary)
    return state


def trace_step(run: Path, prepared, step: int, adversary=None, capture: int | None = None) -> dict:
    """Re-execute step `step` (1-based: the step that produces state `step`) with tracing.

    With an adversary, the step is computed with its fault (the trace a cheating party would
    commit to: consistent with the state it claims)."""
    run = Path(run)
    log = {r["step"]: r["state_hash"] for r in repro_train.read_step_log(run)}
    if step not in log:
        raise ReplayError(f"step {step} is not in {run}/steps.jsonl (logged: 1..{max(log, default=0)})")
    state = state_at(run, prepared, step - 1, adversary)
    model = prepared.model
    before = state.hash()
    tracers = []

    def outer(inner):
        tracers.append(TracingBackend(inner, capture))
        return tracers[-1]

    start = time.perf_counter()
    do_step(model, state, prepared.batches_for_step, prepared.hyper, adversary, outer=outer)
    seconds = time.perf_counter() - start
    tracer = tracers[-1]
    after = state.hash()
    return {
        "step": step,
        "ops": len(tracer.records),
        "root": tracer.root(before),
        "state_hash_before": before,
        "state_hash_after": after,
        "matches_log": after == log[step],
        "records": tracer.records,
        "seconds": seconds,
        "captured": tracer.captured,
    }


def count_ops(prepared) -> int:
    """The number of ops one training step traces: a pure function of the spec, the same for
    every step (one untraced step on a copy of the initial state, counting calls)."""
    from bitswarm.verify.adversary import BitFlipBackend

    state = copy.deepcopy(prepared.state)
    model = prepared.model
    counters = []

    def outer(inner):
        counters.append(BitFlipBackend(inner, -1))  # target -1: counts, never flips
        return counters[-1]

    saved = model.params
    model.params = state.params
    try:
        do_step(model, state, prepared.batches_for_step, prepared.hyper, None, outer=outer)
    finally:
        model.params = saved
    return counters[-1].calls
