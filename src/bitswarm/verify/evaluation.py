"""Verifiable evaluation: a model's loss on a spec's data, committed per batch, disputed through
verify.game like training and inference.

An eval record (eval.json, version 2) holds the spec (its model and data; the optimizer is not
used), per batch k the mean loss over its counted tokens and the running sum S_k = S_{k-1} +
loss_k (fp32), and one chained commitment per batch: c_k = sha256(c_{k-1} | tensor hash of
[loss_k, S_k]), c_{-1} = the hash of the model's initial training state (its parameters). The
score is S_{T-1} / T, so the reported score is inside the last leaf. Leaf k's trace is the
forward of batch k, its cross-entropy and the loss sum (one canonical micro-batch); the referee
takes S_{k-1} from a side whose losses and sums chain to the agreed commitment.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bitswarm.repro.hashing import merkle_root, tensor_hash
from bitswarm.repro.train import IGNORE, count_loss_tokens
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.game import Computation, GameError, Party, Referee, Trace, play, read_record, sides
from bitswarm.verify.trace import TracingBackend, recompute

FILE = "eval.json"
VERSION = 2  # 2: tensor hashes are BLAKE3 (repro.hashing v2)
F32 = np.float32


class EvalError(GameError):
    pass


def _link(prev: str, loss, total) -> str:
    pair = np.asarray([loss, total], F32)
    return hashlib.sha256(bytes.fromhex(prev) + bytes.fromhex(tensor_hash(pair))).hexdigest()


def batch_loss(prepared, k: int, adversary: Adversary | None = None, outer=None) -> np.float32:
    """Mean loss of batch k over its counted tokens, through `outer` (a tracer) if given."""
    model = prepared.model
    plain = model.B
    inner = adversary.wrap_backend(plain, k + 1) if adversary else plain
    model.B = outer(inner) if outer else inner
    try:
        batches = prepared.batches_for_step(k)
        n = count_loss_tokens(batches)
        losses = []
        for mb in batches:
            logits, _ = model.forward(mb.ids)
            targets = mb.targets.reshape(-1).astype(np.int64)
            counted = targets != IGNORE
            losses.append(model.B.cross_entropy_fwd(logits, np.where(counted, targets, -1))[counted])
        return F32(model.B.row_sum(np.concatenate(losses)[None, :].astype(F32))[0] / F32(n))
    finally:
        model.B = plain


def run(prepared, spec: dict, batches: int, out: Path, adversary: Adversary | None = None) -> dict:
    out = Path(out)
    if (out / FILE).exists():
        raise EvalError(f"{out} already holds an eval record; choose a new --out")
    if adversary is not None:
        try:
            adversary.check(batches, ops_per_batch(prepared) if adversary.name == "bitflip" else None, what="batch")
        except ValueError as e:
            raise EvalError(str(e)) from None
    prev, total = prepared.state.hash(), F32(0)
    losses, sums, leaves = [], [], []
    for k in range(batches):
        loss = batch_loss(prepared, k, adversary)
        total = F32(total + loss)
        prev = _link(prev, loss, total)
        losses.append(float(loss))
        sums.append(float(total))
        leaves.append(prev)
    score = float(F32(total / F32(batches)))
    record = {"version": VERSION, "kind": "eval", "spec": spec, "batches": batches, "losses": losses, "sums": sums,
              "commitments": leaves, "root": merkle_root(leaves), "score": score}
    out.mkdir(parents=True, exist_ok=True)
    if adversary is not None:
        adversary.save(out)
    (out / FILE).write_text(json.dumps(record, indent=1))
    return {"score": score, "batches": batches, "root": record["root"]}


def load(out: Path) -> dict:
    return read_record(out, FILE, "eval", VERSION, EvalError)


def _traced(prepared, k: int, adversary, capture: int | None = None) -> tuple[TracingBackend, np.float32]:
    tracers = []
    loss = batch_loss(prepared, k, adversary,
                      outer=lambda inner: tracers.append(TracingBackend(inner, capture)) or tracers[-1])
    return tracers[-1], loss


def ops_per_batch(prepared) -> int:
    return len(_traced(prepared, 0, None)[0].records)


class EvalRecord(Computation):
    def __init__(self, out: Path, prepared):
        self.rec, self.adversary, self.prepared = load(out), Adversary.load(out), prepared
        self.start = prepared.state.hash()
        self._traces: dict[int, Trace] = {}

    def leaves(self) -> list[str]:
        return list(self.rec["commitments"])

    def _before(self, k: int) -> tuple[str, np.float32]:
        return (self.rec["commitments"][k - 1], F32(self.rec["sums"][k - 1])) if k else (self.start, F32(0))

    def trace(self, k: int) -> Trace:
        if k not in self._traces:
            tracer, loss = _traced(self.prepared, k, self.adversary)
            before, total = self._before(k)
            self._traces[k] = Trace(tracer.records, before, _link(before, loss, F32(total + loss)))
        return self._traces[k]

    def inputs(self, k: int, i: int) -> tuple:
        return _traced(self.prepared, k, self.adversary, capture=i)[0].captured

    def total_before(self, k: int, before: str) -> np.float32 | None:
        """S_{k-1} if this record's losses and sums chain to `before`."""
        prev = self.start
        try:
            for loss, s in zip(self.rec["losses"][:k], self.rec["sums"][:k]):
                prev = _link(prev, F32(loss), F32(s))
            return F32(self.rec["sums"][k - 1]) if prev == before and len(self.rec["sums"]) >= k else None
        except (TypeError, ValueError, KeyError):
            return None


class EvalReferee(Referee):
    def __init__(self, prepared):
        self.prepared = prepared
        self._start = prepared.state.hash()

    def start(self) -> str:
        return self._start

    def recompute(self, op: str, args, kwargs) -> list:
        return recompute(self.prepared.model.B, op, args, kwargs)

    def honest_trace(self, k: int, before: str | None, parties: list[Party]) -> Trace:
        if not k:
            before, total = self._start, F32(0)
        else:
            for p in parties:
                total = p.comp.total_before(k, before)
                if total is not None:
                    break
            else:
                raise EvalError(f"no side handed over losses that chain to the agreed commitment before batch {k}")
        tracer, loss = _traced(self.prepared, k, None)
        return Trace(tracer.records, before, _link(before, loss, F32(total + loss)))


def dispute(dir_a: Path, dir_b: Path, prepared_factory, tactics=(None, None)) -> dict:
    """The game over two eval records of one spec: A answers as the solver, B as the challenger."""
    comps = [EvalRecord(dir_a, prepared_factory()), EvalRecord(dir_b, prepared_factory())]
    if comps[0].rec["spec"] != comps[1].rec["spec"] or comps[0].rec["batches"] != comps[1].rec["batches"]:
        raise EvalError("the two records are of different eval jobs")
    referee = EvalReferee(prepared_factory())
    n = ops_per_batch(referee.prepared)
    return play(*sides(comps, n, tactics), referee, n).report("batch", n)
