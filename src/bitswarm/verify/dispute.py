"""Training disputes: verify.game played between two run directories of one spec.

Leaf k is the chained commitment to the state after step k+1 (transcript.chain_leaves); the
before of leaf 0 is the spec's initial state hash. A side's trace of leaf k is its own
re-execution of step k+1 from its own checkpoints (with its adversary's fault, if it has one),
chained from its leaf k-1; it ends at sha256(leaf k-1 | the state hash it reached). The referee rebuilds the agreed state before the disputed step from whichever side's
checkpoints hash to the agreed leaf (or from the spec, for the first step), then recomputes one
op, or the step. Trust: the referee needs only the spec, the agreed hash and its own kernels.
"""

from __future__ import annotations

import copy
from pathlib import Path

from bitswarm.repro import train as repro_train
from bitswarm.verify.adversary import Adversary, do_step
from bitswarm.verify.game import Computation, GameError, Party, Referee, Trace, play, sides
from bitswarm.verify.replay import ReplayError
from bitswarm.verify.trace import count_ops, recompute, state_at, trace_step
from bitswarm.verify.transcript import TranscriptError, chain_leaves, run_leaves


def _link(before: str, state_hash: str) -> str:
    return chain_leaves(before, [state_hash])[0]


class DisputeError(GameError):
    pass


class TrainRun(Computation):
    """A side's run directory, computed as its adversary (if any) computes."""

    def __init__(self, run: Path, prepared, adversary: Adversary | None = None):
        self.run, self.prepared, self.adversary = Path(run), prepared, adversary
        self._traces: dict[int, dict] = {}
        self._inputs: dict[tuple, tuple] = {}

    def leaves(self) -> list[str]:
        if not hasattr(self, "_leaves"):
            self._leaves = run_leaves(self.run)
        return self._leaves

    def state_hashes(self) -> list[str]:
        return [r["state_hash"] for r in repro_train.read_step_log(self.run)]

    def _traced(self, k: int) -> dict:
        if k not in self._traces:
            adv = self.adversary.when_tracing() if self.adversary else None
            self._traces[k] = trace_step(self.run, self.prepared, k + 1, adv)
        return self._traces[k]

    def trace(self, k: int) -> Trace:
        t = self._traced(k)
        leaves = self.leaves()
        before = leaves[k - 1] if k else repro_train.checkpoint_meta(repro_train.checkpoints(self.run)[0])["state_hash"]
        return Trace(t["records"], before, _link(before, t["state_hash_after"]))

    def inputs(self, k: int, i: int) -> tuple:

        if (k, i) not in self._inputs:
            adv = self.adversary.when_tracing() if self.adversary else None
            self._inputs[(k, i)] = trace_step(self.run, self.prepared, k + 1, adv, capture=i)["captured"]
        return copy.deepcopy(self._inputs[(k, i)])  # the referee's op may update them in place


class TrainReferee(Referee):
    """Rules with its own `prepared` (a fresh jobs.train_job.Prepared of the spec)."""

    def __init__(self, prepared):
        self.prepared = prepared
        self._start = prepared.state.hash()
        self._honest: dict[tuple, Trace] = {}  # (leaf, before) -> the true computation

    def start(self) -> str:
        return self._start

    def recompute(self, op: str, args, kwargs) -> list:
        return recompute(self.prepared.model.B, op, args, kwargs)

    def _state_before(self, k: int, before: str | None, parties: list[Party]):
        """The agreed state before step k+1 (state k), rebuilt and hash-checked: its hash must be
        the one a side logged for step k, and that side's leaves must chain to the agreed leaf."""
        p = self.prepared
        if before is None or k == 0:
            return copy.deepcopy(p.state)
        for party in parties:  # a side whose data does not reach the agreed leaf is passed over
            comp = party.comp
            try:
                if comp.leaves()[k - 1] != before:
                    continue
                want = comp.state_hashes()[k - 1]
                state = state_at(comp.run, p, k)  # honest steps from that side's checkpoint
            except (repro_train.TrainError, ReplayError, TranscriptError, OSError, KeyError, IndexError, ValueError):
                continue
            if state.hash() == want:
                return state
        raise DisputeError(f"no side handed over a state that chains to the agreed leaf {before[:12]}… of step {k}")

    def honest_trace(self, k: int, before: str | None, parties: list[Party]) -> Trace:
        from bitswarm.verify.trace import TracingBackend

        if (k, before) in self._honest:
            return self._honest[(k, before)]
        p = self.prepared
        state = self._state_before(k, before, parties)
        seed = before if k else self._start
        p.model.params = state.params
        tracers = []
        do_step(p.model, state, p.batches_for_step, p.hyper, None,
                outer=lambda inner: tracers.append(TracingBackend(inner)) or tracers[-1])
        self._honest[(k, before)] = Trace(tracers[-1].records, seed, _link(seed, state.hash()))
        return self._honest[(k, before)]


def dispute(run_a: Path, run_b: Path, prepared_factory, tactics=(None, None)) -> dict:
    """Play the game between two run directories of the same spec (A answers as the solver, B as
    the challenger); `prepared_factory()` builds a fresh jobs.train_job.Prepared, so each side
    and the referee compute independently. `tactics` overrides how each side answers queries."""
    referee = TrainReferee(prepared_factory())
    n = count_ops(referee.prepared)
    comps = [TrainRun(run, prepared_factory(), Adversary.load(run)) for run in (run_a, run_b)]
    try:
        return play(*sides(comps, n, tactics), referee, n).report("step", n, first=1)
    except ReplayError as e:
        raise DisputeError(str(e)) from None
