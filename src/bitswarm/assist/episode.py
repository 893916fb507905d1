"""Episodes: what one game recorded (its start, both players' timed actions, the outcome), and the one
check every episode passes before it is kept, shared or trained on: a replay through the game's rules.

Format (canonical JSON, sorted keys, no spaces; its sha256 is the CID when shared):
    {"format": "bitswarm-episode", "version": 1,
     "initial": BuildEnv.state() at the start (the goal included: the application knows it),
     "steps":   [{"t": seconds since the start, "player": "human" | "assistant", "action": {...}}, ...],
     "outcome": {"completed": bool, "score": int, "steps": int, ...anything else the application adds}}
States are not stored: each is the replay of the steps before it, which is also how a malformed,
forged or rule-breaking episode is caught — at load, naming the step and the rule.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from bitswarm.assist.game import PLAYERS, Action, BuildEnv, GameRuleError
from bitswarm.errors import BitswarmError

FORMAT, VERSION = "bitswarm-episode", 1
MAX_BYTES = 1 << 20      # 400 steps take ~40 KB; a megabyte is far past any honest episode
MAX_STEPS = 5000
MAX_OUTCOME_BYTES = 4096


class EpisodeError(BitswarmError, ValueError):
    """An episode that is malformed, oversized or breaks a rule; the message names where."""


@dataclass
class Episode:
    initial: dict
    steps: list[dict] = field(default_factory=list)
    outcome: dict | None = None

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "initial": self.initial, "steps": self.steps,
                "outcome": self.outcome}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def replay(self):
        """Yield (obs before, player, action) for every step, checking each against the rules."""
        env = BuildEnv.from_state(self.initial)
        for n, s in enumerate(self.steps):
            try:
                action = Action.from_json(s["action"])
            except GameRuleError as e:
                raise EpisodeError(f"step {n}: {e}") from None
            yield env, env.observation(), s["player"], action
            try:
                env.step(action, s["player"])
            except GameRuleError as e:
                raise EpisodeError(f"step {n}: {e}") from None

    def final_env(self) -> BuildEnv:
        env = BuildEnv.from_state(self.initial)
        for env, *_ in self.replay():
            pass
        return env


def parse(data: bytes | str | dict, where: str = "episode") -> Episode:
    """A checked Episode: schema, sizes, timing, every action legal in turn, the outcome true."""
    if isinstance(data, (bytes, str)):
        if len(data) > MAX_BYTES:
            raise EpisodeError(f"{where} is {len(data)} bytes; an episode may hold at most {MAX_BYTES}")
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise EpisodeError(f"{where} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EpisodeError(f"{where} is not an episode (format must be {FORMAT!r})")
    if data.get("version") != VERSION:
        raise EpisodeError(f"{where}: version {data.get('version')!r} is not supported (this build reads {VERSION})")
    extra = set(data) - {"format", "version", "initial", "steps", "outcome"}
    if extra:
        raise EpisodeError(f"{where}: unknown fields {', '.join(sorted(extra))}")
    steps = data.get("steps")
    if not isinstance(steps, list) or len(steps) > MAX_STEPS:
        raise EpisodeError(f"{where}: steps must be a list of at most {MAX_STEPS}")
    try:
        BuildEnv.from_state(data.get("initial"))
    except GameRuleError as e:
        raise EpisodeError(f"{where}: initial state: {e}") from None
    last = 0.0
    for n, s in enumerate(steps):
        if not isinstance(s, dict) or set(s) != {"t", "player", "action"}:
            raise EpisodeError(f"{where} step {n}: a step is {{t, player, action}}")
        t = s["t"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < last:
            raise EpisodeError(f"{where} step {n}: t must be a finite number of seconds, never decreasing")
        last = t
        if s["player"] not in PLAYERS:
            raise EpisodeError(f"{where} step {n}: unknown player {s['player']!r} (players: {', '.join(PLAYERS)})")
    outcome = data.get("outcome")
    if not isinstance(outcome, dict) or len(json.dumps(outcome)) > MAX_OUTCOME_BYTES:
        raise EpisodeError(f"{where}: outcome must be an object of at most {MAX_OUTCOME_BYTES} bytes")
    ep = Episode(data["initial"], steps, outcome)
    try:
        env = ep.final_env()
    except EpisodeError as e:
        raise EpisodeError(f"{where} {e}") from None
    truth = outcome_of(env)
    for key, value in truth.items():
        if outcome.get(key) != value:
            raise EpisodeError(f"{where}: outcome {key} is {outcome.get(key)!r} but the replay gives {value!r}")
    return ep


def outcome_of(env: BuildEnv, **extra) -> dict:
    return {"completed": env.complete, "score": env.score, "steps": env.steps, **extra}
