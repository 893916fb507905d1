"""Tasks and their verifiable rewards, generated procedurally by reasoning-gym: the swarm's rounds
and the market's eval jobs (jobs.eval_job) draw from them, so they live in jobs, below swarm.

A task is named only by TaskRef(dataset, seed, index): `dataset` is a task name from TASKS,
and entry `index` of that task's reasoning-gym dataset built with `seed` is the problem. Any
peer (or verifier) regenerates the entry itself, so nothing but the ref ever travels, and the
reward of a completion is recomputed from the regenerated entry, never from what a peer sent.
Peers must agree on the TaskMix (names, weights, size, configs): that is swarm configuration.

Tasks (TASKS):
  the nine of RL Swarm (DEFAULT_TASKS), each reasoning-gym's dataset of that name, default config;
  tiny_sum (TINY_TASK), for tiny models: reasoning-gym `basic_arithmetic` with
    min_terms=max_terms=2, min_digits=max_digits=1, operators=("+",), allow_parentheses=False,
    allow_negation=False, i.e. "Calculate a + b." with a, b drawn from [0, 10] (reasoning-gym's
    one-digit range includes 10), answers 0..20; no reasoning-gym config gives single-digit sums.
Presets (PRESETS), for `--tasks`: "default" (the nine) and "tiny" (tiny_sum); resolve_tasks()
also takes comma-separated task names.

Prompt/answer format: prompt() is the dataset's question, a blank line, then ANSWER_INSTRUCTION
asking for the final answer inside <answer>...</answer>. extract_answer() takes the last complete
<answer>...</answer> pair (innermost when nested) in the last MAX_SCAN_CHARS characters, stripped.

Reward: score() is exactly the dataset's own score_answer(answer, entry), in [0, 1], except that
  no answer (no tags, or empty tags) and over-long answers (MAX_ANSWER_CHARS, or twice the
  oracle's length if more; 256 for propositional_logic, whose recursive parser is quadratic)
  score 0.0 without reaching the scorer (fraction_simplification pays 0.01 for an empty answer), and
  binary_matrix answers are handed to its scorer only if made of digits, whitespace, commas and
  brackets, because that scorer eval()s the answer text (others score 0.0, where the dataset
  could at most have given 0.1 for a Python expression that evaluates to the right matrix).
Wrong answers inside the tags still get each dataset's partial credit (e.g. fraction_simplification
0.05 for anything non-empty, calendar_arithmetic 0.1 for a wrong weekday name, the default scorer
len(oracle)/len(answer) when the answer contains the oracle); only a missing answer is sure to be 0.
Entry answers, checked for all nine: only propositional_logic has none (answer is None): its
score_answer checks by truth table that the answer follows from metadata["premises"] using only
metadata["variables"] (1.0; 0.25 if a tautology; 0.05 if parseable but not implied), so it needs
no oracle; metadata["example_answer"] is one conclusion (reference_answer() returns it), but when
the generator finds none it falls back to the first variable, which may score only 0.05.
fraction_simplification scores by metadata["simplified_numerator"/"_denominator"] (any of the four
fraction styles is accepted); calendar_arithmetic uses metadata["task"] to pick how to compare.
"""

from __future__ import annotations

import contextlib
import decimal
import hashlib
import io
import json
import logging
import math
import re
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bitswarm.errors import BitswarmError

log = logging.getLogger(__name__)

DEFAULT_TASKS = (
    "arc_1d", "basic_arithmetic", "base_conversion", "bf", "binary_matrix",
    "calendar_arithmetic", "decimal_arithmetic", "fraction_simplification", "propositional_logic",
)
TINY_TASK = "tiny_sum"


@dataclass(frozen=True)
class TaskSpec:
    dataset: str                                   # reasoning-gym dataset name
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # never seed/size


TASKS: Mapping[str, TaskSpec] = MappingProxyType({
    **{name: TaskSpec(name) for name in DEFAULT_TASKS},
    TINY_TASK: TaskSpec("basic_arithmetic", MappingProxyType({
        "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
        "operators": ("+",), "allow_parentheses": False, "allow_negation": False,
    })),
    # Count a letter in one word: answers are small counts, so a tiny model learns it in minutes.
    "tiny_count": TaskSpec("letter_counting", MappingProxyType({"min_words": 1, "max_words": 1})),
})
PRESETS: Mapping[str, tuple[str, ...]] = MappingProxyType({"default": DEFAULT_TASKS, "tiny": (TINY_TASK,)})

OPEN, CLOSE = "<answer>", "</answer>"
ANSWER_INSTRUCTION = "Give your final answer, and nothing else, inside <answer></answer> tags."
MAX_SCAN_CHARS = 1 << 16     # only the tail of a completion is searched for the answer
MAX_ANSWER_CHARS = 1 << 12   # longer answers score 0 (raised to twice the oracle's length if larger)
# propositional_logic parses recursively and rescans per level (quadratic): 256 chars is ~50 ms
# worst case (4 KiB would be ~5 s), and the conclusions it asks for are a few operators long.
_ANSWER_CAPS = {"propositional_logic": 256}
_CACHE_SIZE = 32             # datasets kept per TaskMix; one per (task, seed), and seeds change rarely
_HASH_DOMAIN = "bitswarm.swarm.tasks/1"  # the module's old home; kept, since it fixes every sample
_SAFE_MATRIX = re.compile(r"[0-9\s,\[\]()]*")

# decimal_arithmetic sets the precision of the *current* decimal context while generating, and
# both its answers and its scoring depend on that context: pin it (Python's documented default)
# so that every peer computes the same entry and reward, and so the caller's context is untouched.
_DECIMAL = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN, Emin=-999_999, Emax=999_999,
                           capitals=1, clamp=0,
                           traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])


class TaskError(BitswarmError, ValueError):
    pass


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class TaskRef:
    dataset: str   # task name (a key of TASKS)
    seed: int      # reasoning-gym dataset seed
    index: int     # entry index in that dataset

    def __post_init__(self):
        # Refs arrive from other peers: reject the malformed here rather than deep in a generator.
        if not isinstance(self.dataset, str):
            raise TaskError(f"TaskRef.dataset must be a str, not {type(self.dataset).__name__}")
        if not (_is_int(self.seed) and 0 <= self.seed < 2**64):
            raise TaskError(f"TaskRef.seed must be an int in [0, 2**64), got {self.seed!r}")
        if not (_is_int(self.index) and self.index >= 0):
            raise TaskError(f"TaskRef.index must be a non-negative int, got {self.index!r}")


def _allowed() -> str:
    return f"tasks: {', '.join(TASKS)}; presets: {', '.join(PRESETS)}"


def resolve_tasks(spec: str | Sequence[str]) -> tuple[str, ...]:
    """`--tasks` value -> task names: a preset name, or task names (comma-separated or a list)."""
    if isinstance(spec, str):
        if spec.strip() in PRESETS:
            return PRESETS[spec.strip()]
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = tuple(spec)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise TaskError(f"unknown task name(s) {unknown or names!r}; allowed {_allowed()}")
    return names


def _rg():
    # Imported on first use: it loads every reasoning-gym dataset module (~0.5 s).
    import reasoning_gym
    return reasoning_gym


class TaskMix:
    """A weighted mix of tasks; deterministic sampling and regeneration of entries."""

    def __init__(self, names: Sequence[str], weights: Sequence[float] | None = None,
                 size: int = 10_000, configs: dict[str, dict] | None = None):
        if isinstance(names, str):
            raise TaskError("names must be a sequence of task names, not one string (see resolve_tasks)")
        names = tuple(names)
        if not names:
            raise TaskError(f"no tasks given; allowed {_allowed()}")
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            raise TaskError(f"unknown task name(s) {unknown!r}; allowed {_allowed()}")
        if len(set(names)) != len(names):
            raise TaskError(f"duplicate task names in {names!r}")
        if weights is None:
            weights = [1.0] * len(names)
        weights = tuple(weights)
        if len(weights) != len(names):
            raise TaskError(f"{len(weights)} weights for {len(names)} tasks")
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise TaskError(f"weights must be finite non-negative numbers, got {w!r}")
        total = math.fsum(weights)
        if total <= 0:
            raise TaskError("weights must not all be zero")
        if not (_is_int(size) and size > 0):
            raise TaskError(f"size must be a positive int, got {size!r}")
        configs = dict(configs or {})
        for name, cfg in configs.items():
            if name not in names:
                raise TaskError(f"config given for {name!r}, which is not in this mix {names!r}")
            if not isinstance(cfg, Mapping):
                raise TaskError(f"config for {name!r} must be a dict, got {type(cfg).__name__}")
            if {"seed", "size"} & set(cfg):
                raise TaskError(f"config for {name!r} may not set seed or size (TaskRef and TaskMix do)")

        self.names = names
        self.weights = tuple(w / total for w in weights)
        self.size = size
        self.configs = {n: {**TASKS[n].config, **configs.get(n, {})} for n in names}
        self._cum = [math.fsum(self.weights[: i + 1]) for i in range(len(names))]
        self._last = max(i for i, w in enumerate(self.weights) if w > 0)
        self._cache: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()
        for n in names:   # fail at startup on a bad config, not mid-round
            self._dataset(n, 0)

    def __repr__(self) -> str:
        return f"TaskMix(names={self.names!r}, weights={self.weights!r}, size={self.size})"

    def _dataset(self, name: str, seed: int):
        key = (name, seed)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            ds = _rg().create_dataset(TASKS[name].dataset, seed=seed, size=self.size, **self.configs[name])
        except (TypeError, ValueError, AssertionError) as e:
            raise TaskError(f"bad reasoning-gym config for task {name!r} {self.configs[name]!r}: {e}") from e
        with self._lock:
            self._cache[key] = ds
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return ds

    def sample(self, rng_seed: int, round: int, peer: str, n: int) -> list[TaskRef]:
        """n refs for `peer` in `round`: a pure function of the arguments and the mix."""
        if not (_is_int(rng_seed) and 0 <= rng_seed < 2**64):
            raise TaskError(f"rng_seed must be an int in [0, 2**64), got {rng_seed!r}")
        if not _is_int(round) or not isinstance(peer, str) or not (_is_int(n) and n >= 0):
            raise TaskError(f"bad sample arguments round={round!r} peer={peer!r} n={n!r}")
        refs = []
        for i in range(n):
            # JSON keeps the fields unambiguous (a peer name can contain any separator).
            msg = json.dumps([_HASH_DOMAIN, rng_seed, round, peer, i], separators=(",", ":"))
            d = hashlib.sha256(msg.encode()).digest()
            u = (int.from_bytes(d[:8], "big") >> 11) / 2**53          # uniform in [0, 1)
            task = min(bisect_right(self._cum, u), self._last)         # float edge: stay on a weighted task
            refs.append(TaskRef(self.names[task], rng_seed, int.from_bytes(d[8:16], "big") % self.size))
        return refs

    def _check(self, ref: TaskRef) -> None:
        if not isinstance(ref, TaskRef):
            raise TypeError(f"expected a TaskRef, got {type(ref).__name__}")
        if ref.dataset not in self.names:
            raise TaskError(f"task {ref.dataset!r} is not in this mix; its tasks: {', '.join(self.names)}")
        if ref.index >= self.size:
            raise TaskError(f"index {ref.index} out of range for mix size {self.size}")

    def _generate(self, ref: TaskRef) -> dict:
        self._check(ref)
        ds = self._dataset(ref.dataset, ref.seed)
        if TASKS[ref.dataset].dataset == "bf":
            # bf's compiler prints a "." to stdout per program; keep stdout clean (briefly swaps
            # sys.stdout for the whole process, so another thread's prints in that window are lost).
            with contextlib.redirect_stdout(io.StringIO()):
                return ds[ref.index]
        return ds[ref.index]

    def entry(self, ref: TaskRef) -> dict:
        """The dataset entry ({question, answer, metadata}), regenerated from the ref alone."""
        with decimal.localcontext(_DECIMAL):
            return self._generate(ref)

    def prompt(self, ref: TaskRef) -> str:
        return f"{self.entry(ref)['question'].rstrip()}\n\n{ANSWER_INSTRUCTION}"

    def reference_answer(self, ref: TaskRef) -> str:
        """A correct answer: entry["answer"], or metadata["example_answer"] where that is None."""
        e = self.entry(ref)
        a = e["answer"]
        return a if a not in (None, "") else str(e["metadata"]["example_answer"])


def extract_answer(completion: str) -> str | None:
    """Content of the last complete <answer>...</answer> (innermost if nested), stripped; else None."""
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, not {type(completion).__name__}")
    t = completion[-MAX_SCAN_CHARS:]
    # Plain rfind/find (linear), no regex: the text may be hostile.
    last_close = t.rfind(CLOSE)
    if last_close < 0:
        return None
    start = t.rfind(OPEN, 0, last_close)
    if start < 0:
        return None
    start += len(OPEN)
    return t[start:t.find(CLOSE, start)].strip()


def score(ref: TaskRef, completion: str, mix: TaskMix) -> float:
    """Reward in [0, 1] of `completion` for task `ref`: the dataset's own score of its answer."""
    answer = extract_answer(completion)
    with decimal.localcontext(_DECIMAL):   # same context for generation and scoring, on every peer
        entry = mix._generate(ref)         # errors here are ours (or a bad ref): let them raise
        rg_name = TASKS[ref.dataset].dataset
        cap = _ANSWER_CAPS.get(rg_name, max(MAX_ANSWER_CHARS, 2 * len(entry["answer"] or "")))
        if not answer or len(answer) > cap:
            return 0.0
        ds = mix._dataset(ref.dataset, ref.seed)
        if rg_name == "binary_matrix" and not _SAFE_MATRIX.fullmatch(answer):
            return 0.0                     # its scorer eval()s the answer: no names, no calls
        try:
            # Third-party code on hostile text (a recursive parser, Decimal, int()): a peer must
            # not fail on a completion, so any error the scorer raises scores 0.
            r = float(ds.score_answer(answer, entry))
        except Exception as e:  # noqa: BLE001
            log.debug("scorer for %s raised %s on a %d-char answer", ref.dataset, type(e).__name__, len(answer))
            return 0.0
    return min(max(r, 0.0), 1.0) if math.isfinite(r) else 0.0
