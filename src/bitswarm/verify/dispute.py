"""Training disputes: verify.game played between two run directories of one spec.

Leaf k is the state hash after step k+1 (steps.jsonl); the before of leaf 0 is the spec's
initial state. A side's trace of leaf k is its own re-execution of step k+1 from its own
checkpoints (with its adversary's fault, if it has one), chained from the state it started
from. The referee rebuilds the agreed state before the disputed step from whichever side's
checkpoints hash to the agreed leaf (or from the spec, for the first step), then recomputes one
op, or the step. Trust: the referee needs only the spec, the agreed hash and its own kernels.
"""

from __future__ import annotations

from pathlib import Path

from bitswarm.repro import train as repro_train
from bitswarm.verify.adversary import Adversary, do_step
from bitswarm.verify.game import Computation, GameError, Party, Referee, Trace, honest, play
from bitswarm.verify.replay import ReplayError
from bitswarm.verify.trace import count_ops, recompute, trace_step


class DisputeError(GameError):
    pass


class TrainRun(Computation):
    """A side's run directory, computed as its adversary (if any) computes."""

    def __init__(self, run: Path, prepared, adversary: Adversary | None = None):
        self.run, self.prepared, self.adversary = Path(run), prepared, adversary
        self._traces: dict[int, dict] = {}

    def leaves(self) -> list[str]:
        return [r["state_hash"] for r in repro_train.read_step_log(self.run)]

    def _traced(self, k: int) -> dict:
        if k not in self._traces:
            adv = self.adversary.when_tracing() if self.adversary else None
            self._traces[k] = trace_step(self.run, self.prepared, k + 1, adv)
        return self._traces[k]

    def trace(self, k: int) -> Trace:
        t = self._traced(k)
        return Trace(t["records"], t["state_hash_before"], t["state_hash_after"], t["seconds"])

    def inputs(self, k: int, i: int) -> tuple:
        adv = self.adversary.when_tracing() if self.adversary else None
        return trace_step(self.run, self.prepared, k + 1, adv, capture=i)["captured"]


class TrainReferee(Referee):
    """Rules with its own `prepared` (a fresh jobs.train_job.Prepared of the spec)."""

    def __init__(self, prepared):
        self.prepared = prepared
        self._start = prepared.state.hash()

    def start(self) -> str:
        return self._start

    def recompute(self, op: str, args, kwargs) -> list:
        return recompute(self.prepared.model.B, op, args, kwargs)

    def _state_before(self, k: int, before: str | None, parties: list[Party]):
        """The agreed state before step k+1, rebuilt and hash-checked."""
        import copy

        p = self.prepared
        if before is None or k == 0:
            return copy.deepcopy(p.state)
        for party in parties:  # a side whose checkpoints do not reach the agreed hash is passed over
            run = getattr(party.comp, "run", None)
            ckpts = repro_train.checkpoints(run) if run else {}
            base = max((s for s in ckpts if s <= k), default=None)
            if base is None:
                continue
            try:
                state = repro_train.TrainState.load(ckpts[base])
            except (repro_train.TrainError, OSError, KeyError, ValueError):
                continue
            p.model.params = state.params
            while state.step < k:
                repro_train.train_step(p.model, state, p.batches_for_step(state.step), p.hyper)
            if state.hash() == before:
                return state
        raise DisputeError(f"no side handed over a state that hashes to the agreed state {before[:12]}… of step {k}")

    def honest_trace(self, k: int, before: str | None, parties: list[Party]) -> Trace:
        from bitswarm.verify.trace import TracingBackend

        p = self.prepared
        state = self._state_before(k, before, parties)
        start = state.hash()
        p.model.params = state.params
        tracers = []
        do_step(p.model, state, p.batches_for_step, p.hyper, None,
                outer=lambda inner: tracers.append(TracingBackend(inner)) or tracers[-1])
        return Trace(tracers[-1].records, start, state.hash())


def parties(run_a: Path, run_b: Path, prepared_factory, ops_per_leaf: int, tactics=(None, None)):
    """Both sides of a training dispute, answering with their recorded adversaries' tactics."""
    out = []
    for name, run, tactic in (("A", run_a, tactics[0]), ("B", run_b, tactics[1])):
        adv = Adversary.load(run)
        comp = TrainRun(run, prepared_factory(), adv)
        out.append(Party(name, comp, ops_per_leaf, tactic or (adv.tactic() if adv else honest)))
    return out


def dispute(run_a: Path, run_b: Path, prepared_factory, tactics=(None, None)) -> dict:
    """Play the game between two run directories of the same spec (A answers as the solver, B as
    the challenger); `prepared_factory()` builds a fresh jobs.train_job.Prepared, so each side
    and the referee compute independently. `tactics` overrides how each side answers queries."""
    referee = TrainReferee(prepared_factory())
    n = count_ops(referee.prepared)
    a, b = parties(run_a, run_b, prepared_factory, n, tactics)
    try:
        outcome = play(a, b, referee, n)
    except ReplayError as e:
        raise DisputeError(str(e)) from None
    r = outcome.as_dict()
    r["first_divergent_step"] = None if outcome.leaf is None else outcome.leaf + 1
    r["step_seconds"] = r.pop("trace_seconds")
    r["ops_per_step"] = n
    del r["leaf"]
    return r
