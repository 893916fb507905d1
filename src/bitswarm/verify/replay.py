"""Re-execute steps of a recorded training run and compare every state hash with the log.

A window [from, to] starts at the newest checkpoint at or before `from` and runs forward to
`to`, comparing each step's state hash (steps before `from` are recomputed but not counted as
checked). Sampling picks K steps and replays each from its nearest earlier checkpoint. The
checkpoint a replay starts from is itself checked: its state must hash to the logged value.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bitswarm.errors import BitswarmError
from bitswarm.repro import train as repro_train


class ReplayError(BitswarmError, RuntimeError):
    pass


@dataclass
class ReplayResult:
    ok: bool
    first_mismatch_step: int | None
    steps_checked: int

    def as_dict(self) -> dict:
        return {"ok": self.ok, "first_mismatch_step": self.first_mismatch_step, "steps_checked": self.steps_checked}


def replay(run: Path, prepared, start: int | None = None, stop: int | None = None,
           sample: int | None = None, seed: int | None = None, on_step=None) -> ReplayResult:
    """`prepared` carries what the run's spec determines: .model, .batches_for_step, .hyper
    (jobs.train_job.prepare builds it; verify itself does not read specs or the store)."""
    run = Path(run)
    log = {r["step"]: r["state_hash"] for r in repro_train.read_step_log(run)}
    if not log:
        raise ReplayError(f"{run} has no logged steps to check")
    last = max(log)
    ckpts = repro_train.checkpoints(run)
    if 0 not in ckpts:
        raise ReplayError(f"{run} lacks the initial checkpoint (step 0)")
    if sample is not None:
        if sample < 1:
            raise ReplayError("--sample must be at least 1")
        rng = random.Random(seed)
        targets = sorted(rng.sample(range(1, last + 1), min(sample, last)))
        windows = [(t, t) for t in targets]
    else:
        lo, hi = start if start is not None else 1, stop if stop is not None else last
        if not 1 <= lo <= hi <= last:
            raise ReplayError(f"steps must satisfy 1 <= --from <= --to <= {last} (the last logged step)")
        windows = [(lo, hi)]
    p = prepared
    checked = 0
    for lo, hi in windows:
        base = max(s for s in ckpts if s <= lo - 1)
        try:
            state = repro_train.TrainState.load(ckpts[base], initial=getattr(p, "initial_state", None))
        except repro_train.TrainError:
            return ReplayResult(False, base, checked)  # the checkpoint does not match its own hash
        # TrainState.load checked the tensors against the checkpoint's meta: compare that, not
        # a second hash of the same state.
        if base > 0 and log.get(base) != repro_train.checkpoint_meta(ckpts[base])["state_hash"]:
            return ReplayResult(False, base, checked)
        p.model.params = state.params
        while state.step < hi:
            repro_train.train_step(p.model, state, p.batches_for_step(state.step), p.hyper)
            if state.step >= lo:
                checked += 1
                if state.hash() != log.get(state.step):
                    return ReplayResult(False, state.step, checked)
                if on_step:
                    on_step(state.step)
    return ReplayResult(True, None, checked)
