"""Adversaries for tests and demos: parties that cheat in one specific, selectable way.

Selected as NAME[@step=K[,op=I]] (`bitswarm train --adversary ...`), recorded in the run
directory as adversary.json so that the same side answers a dispute with the same behaviour.
Parameters are checked against the job (`check`): a step past the end or an op past the last
op of a step is an error, never a cheat that silently changes nothing.

Training faults, acting on step K (1-based: the step that produces state K):
  bitflip    flip the top mantissa bit of the first element of op I's output in step K
             (a lowest-bit flip can be rounded away downstream and change nothing at all)
  data       train step K on another step's data
  skip       from step K on, do no work: copy the previous state and only advance the counter
  lr         from step K on, use ten times the learning rate
  lazy       from step K on, do no work and log invented state hashes; challenged, it answers
             with the honest trace of the step (which does not reach its committed hash)
  tracelie   train with the lr fault from step K, but answer the dispute with the honest trace
             of the step (a trace that does not reproduce its own committed state)
Inference faults (`bitswarm infer --adversary`; step K means generated token K, 1-based):
  bitflip    as above, in the forward pass that produces token K
  token      report another token than the one sampled at K
Protocol faults (they also train with the `lr` fault, so that there is something to dispute):
  inconsistent  answer leaf queries with hashes their own commitment does not prove
  silent        stop answering after the first query
  short, long   commit the disputed step's trace one op shorter / longer than the spec's
  wrongindex    answer every op query with another op's digest and that op's (valid) proof
Ledger faults (played by jobs.onchain against the contracts; they need no special run):
  sybil         the cheating side votes for itself through throwaway referee accounts
  selfchallenge the poster challenges its own job to get its bounty back
  zerostake     challenge (or claim) without the stake the job asks for
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bitswarm.errors import BitswarmError
from bitswarm.repro.backend import OPS
from bitswarm.repro.train import train_step

TRAINING = ("bitflip", "data", "skip", "lr", "lazy", "tracelie")
INFERENCE = ("token",)  # inference only: report token K+1 instead of the sampled one
PROTOCOL = ("inconsistent", "silent", "short", "long", "wrongindex")
LEDGER = ("sybil", "selfchallenge", "zerostake")
NAMES = TRAINING + PROTOCOL + INFERENCE + LEDGER
FILE = "adversary.json"
DATA_OFFSET = 1_000_003


class AdversaryError(BitswarmError, ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Adversary:
    name: str
    step: int = 1
    op: int = 10

    @classmethod
    def parse(cls, text: str) -> "Adversary":
        m = re.fullmatch(r"([a-z]+)(?:@(.*))?", text.strip())
        if not m or m.group(1) not in NAMES:
            raise AdversaryError(f"unknown adversary {text!r}; choose one of: {', '.join(NAMES)} (NAME[@step=K[,op=I]])")
        fields: dict[str, int] = {}
        for part in filter(None, (m.group(2) or "").split(",")):
            key, _, value = part.partition("=")
            if key not in ("step", "op") or not value.isdigit():
                raise AdversaryError(f"bad adversary option {part!r}; allowed: step=K (K >= 1), op=I (I >= 0)")
            fields[key] = int(value)
        if fields.get("step", 1) < 1:
            raise AdversaryError("step=K needs K >= 1")
        if "op" in fields and m.group(1) != "bitflip":
            raise AdversaryError(f"op=I applies to bitflip only, not to {m.group(1)}")
        return cls(m.group(1), **fields)

    def describe(self) -> str:
        return f"{self.name}@step={self.step}" + (f",op={self.op}" if self.name == "bitflip" else "")

    def check(self, steps: int, ops_per_step: int | None = None, what: str = "step") -> None:
        """Refuse parameters that would change nothing: K past the job's last step, I past the
        last op of a step (`what` names the job's unit: "step" or "token")."""
        if self.name in LEDGER:
            raise AdversaryError(f"{self.name} is a ledger fault, played against the contracts (jobs.onchain), "
                                 "not a way to compute a run")
        if self.step > steps:
            raise AdversaryError(f"{self.describe()} acts at {what} {self.step}, but the job has {steps} {what}s")
        if self.name == "bitflip" and ops_per_step is not None and self.op >= ops_per_step:
            raise AdversaryError(f"{self.describe()}: op={self.op} is past the last op of a {what} "
                                 f"(ops 0..{ops_per_step - 1})")

    def save(self, run: Path) -> None:
        (Path(run) / FILE).write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def load(cls, run: Path) -> "Adversary | None":
        f = Path(run) / FILE
        return cls(**json.loads(f.read_text())) if f.exists() else None

    # -- training behaviour -------------------------------------------------------------

    def wrap_backend(self, backend, step: int):
        if self.name == "bitflip" and step == self.step:
            return BitFlipBackend(backend, self.op)
        return backend

    def data_step(self, step0: int) -> int:
        """Which step's data to use for the step that starts at state `step0`."""
        return step0 + DATA_OFFSET if self.name == "data" and step0 + 1 == self.step else step0

    def hyper(self, hp, step: int):
        lr_fault = self.name in ("lr", "tracelie") + PROTOCOL
        return dataclasses.replace(hp, lr=hp.lr * 10) if lr_fault and step >= self.step else hp

    def skips(self, step: int) -> bool:
        return self.name in ("skip", "lazy") and step >= self.step

    def claimed_hash(self, step: int, true_hash: str) -> str:
        """The state hash this party logs for `step`: invented from K on for the lazy one."""
        if self.name == "lazy" and step >= self.step:
            return hashlib.sha256(f"lazy-{step}".encode()).hexdigest()
        return true_hash

    def when_tracing(self) -> "Adversary | None":
        """The behaviour with which this party computes a step's trace in a dispute: the lazy
        and trace-lying parties trace the honest computation."""
        return None if self.name in ("lazy", "tracelie") else self

    # -- how it answers the game's queries (verify.game) ----------------------------------

    def tactic(self):
        """A verify.game Tactic: (query kind, index) -> action."""
        asked = {"n": 0}

        def answer(kind: str, index: int) -> str:
            asked["n"] += 1
            if self.name == "silent" and asked["n"] > 1:
                return "silent"
            if self.name == "inconsistent" and kind == "leaf":
                return "lie"
            if self.name in ("short", "long") and kind == "trace":
                return self.name
            if self.name == "wrongindex" and kind == "op":
                return "other_index"
            return "honest"

        return answer


FLIP = np.uint32(1 << 22)


def _flip(x):
    """Flip the top mantissa bit of the first element, in place where possible."""
    if isinstance(x, np.ndarray) and x.size and x.dtype == np.float32:
        x.reshape(-1).view(np.uint32)[0] ^= FLIP
        return x
    if isinstance(x, np.float32):
        return (np.array(x).view(np.uint32) ^ FLIP).view(np.float32)[()]
    return x


class BitFlipBackend(SimpleNamespace):
    """Counts op calls; corrupts the output of call number `target`."""

    IN_PLACE_FIRST = {"embedding_bwd": 2, "scale_grads_": 0, "adamw_step_": 0}

    def __init__(self, inner, target: int):
        self.calls = 0
        super().__init__(name=inner.name, verifiable=inner.verifiable,
                         **{op: self._wrap(op, getattr(inner, op), target) for op in OPS})

    def _wrap(self, op, fn, target):
        def wrapped(*args, **kwargs):
            index = self.calls
            self.calls += 1
            result = fn(*args, **kwargs)
            if index != target:
                return result
            if result is None:
                arg = args[self.IN_PLACE_FIRST.get(op, 0)]
                _flip(arg[0] if isinstance(arg, list) else arg)
                return result
            if isinstance(result, tuple):
                return (_flip(result[0]), *result[1:])
            return _flip(result)

        return wrapped


def do_step(model, state, batches_for_step, hp, adversary: "Adversary | None" = None, outer=None) -> dict:
    """One training step, honest or with the adversary's fault; `outer` wraps the backend
    outermost (a tracer), so a trace records what this party really computed."""
    step = state.step + 1
    plain = model.B
    inner = adversary.wrap_backend(plain, step) if adversary else plain
    model.B = outer(inner) if outer else inner
    try:
        if adversary and adversary.skips(step):
            state.step += 1
            return {"loss": None, "grad_norm": None, "lr": None, "tokens": 0}
        data_step = adversary.data_step(state.step) if adversary else state.step
        h = adversary.hyper(hp, step) if adversary else hp
        return train_step(model, state, batches_for_step(data_step), h)
    finally:
        model.B = plain
