"""One local game as the web server plays it: the env, the assistant, whose turn it is and the event log.

Turns follow humans.play_episode: the human acts whenever they like (never blocked), and each legal
human action gives the assistant one chance to act, taken at the next tick. Ticks with no human action
since the assistant's last chance do nothing, so an assistant cannot race through the episode's steps
while the person thinks. The assistant is a plug-in (sdk.Assistant, or anything with its methods):
what it proposes is checked by env.legal like the human's actions and dropped, with the reason in the
event log, when the rules forbid it; an exception in it is logged and shown, and the game goes on.

Concurrency: the server calls these methods from a thread pool, so every public method holds one lock
for its whole run, assistant calls included (the assistant object is not thread-safe, and a state read
must never see half a step). A slow assistant therefore delays the next state read by its act() time.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from typing import Any, Protocol

from bitswarm.assist.episode import outcome_of
from bitswarm.assist.game import COLORS, REACH, SIZE, Action, BuildEnv, GameRuleError
from bitswarm.errors import BitswarmError

log = logging.getLogger(__name__)

COLOR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple")  # block ids 1..COLORS; the page's palette
assert len(COLOR_NAMES) == COLORS
EVENTS_KEPT = 40  # the page shows the newest dozen; the rest let a slow poller catch up
SEED_MAX = 2**63 - 1
FAILED = object()  # what _call returns when the assistant raised (None is a valid answer: "wait")


class AssistantLike(Protocol):
    def begin_episode(self, env_state: dict) -> None: ...
    def observe(self, obs: dict, human_action: Action) -> None: ...
    def act(self, obs: dict) -> Action | None: ...
    def end_episode(self, outcome: dict) -> Any: ...
    def share(self) -> Any: ...


class Refused(BitswarmError):
    """A request the game cannot do now; `status` is its HTTP code (400 bad input, 409 wrong moment)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def describe(player: str, a: Action) -> str:
    """'assistant placed red at (3,0,2)': an action as the event log says it."""
    if a.kind == "place":
        return f"{player} placed {COLOR_NAMES[a.block - 1]} at ({a.x},{a.y},{a.z})"
    if a.kind == "remove":
        return f"{player} removed the block at ({a.x},{a.y},{a.z})"
    if a.kind == "move":
        return f"{player} moved {'+' if a.x + a.z > 0 else '-'}{'x' if a.x else 'z'}"
    return f"{player} waited"


class GameSession:
    """The one game a local server holds; every method returns the human's view (state())."""

    def __init__(self, assistant: AssistantLike | None = None, seed: int | None = None, max_steps: int = 400):
        self.assistant = assistant
        self.env = BuildEnv(max_steps)
        self._lock = threading.Lock()
        self._events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self._counter, self.episode, self.seed = 0, 0, 0
        self.new(secrets.randbelow(2**31) if seed is None else seed)  # a person gets a fresh goal per start

    # -- what the page sees -----------------------------------------------------------------------

    def state(self) -> dict:
        with self._lock:
            return self._view()

    def _view(self) -> dict:
        env = self.env
        return {"version": self._counter, "episode": self.episode, "seed": self.seed, "goal_name": env.goal.name,
                "size": list(SIZE), "reach": REACH, "colors": list(COLOR_NAMES),
                "blocks": env.blocks.tolist(), "goal": env.goal.blocks.tolist(),
                "human": list(env.positions["human"]), "assistant": list(env.positions["assistant"]),
                "step": env.steps, "max_steps": env.max_steps, "score": env.score, "goal_blocks": env.goal.count,
                "turn": self.turn, "has_assistant": self.assistant is not None,
                "ended": env.done, "outcome": self.outcome, "recorded": self.recorded, "receipt": self.receipt,
                "assistant_last": self.assistant_last, "events": list(self._events)[::-1]}

    def _event(self, who: str, text: str, kind: str, action: Action | None = None) -> dict:
        """Log what happened. Every change of state logs one, so the event counter is the state's version
        (the page keeps the newest of answers that cross on the wire)."""
        self._counter += 1
        event = {"n": self._counter, "episode": self.episode, "step": self.env.steps, "who": who, "kind": kind,
                 "text": text, "action": None if action is None else action.to_json()}
        self._events.append(event)
        return event

    # -- the game -------------------------------------------------------------------------------

    def new(self, seed: int | None = None) -> dict:
        """A new episode on the goal for `seed` (None: the last seed + 1); the assistant is told."""
        with self._lock:
            if seed is None:
                seed = (self.seed + 1) % (SEED_MAX + 1)
            elif type(seed) is not int or not 0 <= seed <= SEED_MAX:
                raise Refused(f"seed must be null or an integer in 0-{SEED_MAX}, got {seed!r}")
            # An episode left unfinished is dropped, not recorded: begin_episode starts the assistant afresh.
            self.obs, _ = self.env.reset(seed=seed)
            self.seed, self.episode = seed, self.episode + 1
            self.turn, self.assistant_last = "human", None
            self.outcome = self.recorded = self.receipt = None
            self._record_failed = False
            self._event("game", f"new episode {self.episode}: goal {self.env.goal.name} (seed {seed})", "new")
            # The state holds the goal: the SDK records it for training and keeps it from its policy.
            self._call("begin_episode", self.env.state())
            return self._view()

    def act(self, data: object) -> dict:
        """The human's action, as the page sent it: checked completely before anything changes."""
        with self._lock:
            action = Action.from_json(data)  # GameRuleError for anything malformed
            if (reason := self.env.legal(action, "human")) is not None:
                raise GameRuleError(reason)
            self.obs, *_ = self.env.step(action, "human")
            self._event("human", describe("you", action), action.kind, action)
            self.turn = "assistant" if self.assistant is not None else "human"
            self._call("observe", self.obs, action)  # also after the last step: the recording needs it
            self._end_if_done()
            return self._view()

    def tick(self) -> dict:
        """The assistant's chance to act, if it is its turn; what it proposes passes env.legal or is dropped."""
        with self._lock:
            if self.turn != "assistant" or self.env.done:
                return self._view()
            self.turn = "human"
            proposed = self._call("act", self.obs)
            if proposed is None or proposed is FAILED:
                return self._view()
            if not isinstance(proposed, Action):
                self._event("assistant", f"assistant's proposal {proposed!r} is not an Action: dropped", "dropped")
            elif (reason := self.env.legal(proposed, "assistant")) is not None:
                self._event("assistant", f"assistant tried: {reason}: dropped", "dropped", proposed)
            else:
                self.obs, *_ = self.env.step(proposed, "assistant")
                self.assistant_last = self._event("assistant", describe("assistant", proposed), proposed.kind,
                                                  proposed)
                self._end_if_done()
            return self._view()

    def share(self) -> dict:
        """Put the ended, recorded episode into the content store (once); the receipt."""
        with self._lock:
            if self.receipt is not None:
                return self.receipt  # sharing twice would store (and pay for) the same episode again
            if not self.env.done:
                raise Refused("the episode has not ended yet: share it once the goal is built or the steps "
                              "run out", 409)
            if self.assistant is None:
                raise Refused("this game runs without an assistant, so nothing was recorded to share", 409)
            if self._record_failed:
                raise Refused("the episode was not recorded (see the event log), so there is nothing to share", 409)
            try:
                receipt = self.assistant.share()
            except Exception as e:  # noqa: BLE001 - the person sees why; the game stays up
                log.exception("sharing the episode failed")
                raise Refused(f"sharing the episode failed: {e}", 502) from None
            tx = receipt.tx_hash
            if isinstance(tx, bytes):
                tx = "0x" + tx.hex()
            self.receipt = {"cid": str(receipt.cid), "size": int(receipt.size),
                            "tx_hash": None if tx is None else str(tx)}
            self._event("game", f"shared episode {self.episode}: {self.receipt['cid']} "
                                f"({self.receipt['size']} bytes)", "share")
            return self.receipt

    def _end_if_done(self) -> None:
        if not self.env.done:
            return
        self.outcome = outcome_of(self.env, goal=self.env.goal.name, seed=self.seed)
        self.turn = "human"
        done = "built the goal" if self.env.complete else "ran out of steps"
        self._event("game", f"episode {self.episode} ended: {done} in {self.env.steps} steps, "
                            f"score {self.env.score}", "end")
        path = self._call("end_episode", self.outcome)
        self._record_failed = path is FAILED
        self.recorded = None if path is FAILED or path is None else str(path)

    def _call(self, method: str, *args: Any) -> Any:
        """An assistant method's result (None without an assistant, FAILED if it raised). Its failures are
        shown, not raised: the assistant is a plug-in (often a model), and a bug in it must not take the
        person's game down."""
        if self.assistant is None:
            return None
        try:
            return getattr(self.assistant, method)(*args)
        except Exception as e:  # noqa: BLE001 - see the docstring
            log.exception("assistant.%s failed", method)
            self._event("assistant", f"assistant.{method} failed: {type(e).__name__}: {e}", "error")
            return FAILED

