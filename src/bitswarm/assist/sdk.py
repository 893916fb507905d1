"""The assistant an application embeds: it watches, acts, records each episode on this machine, and
shares an episode (into the content store, with a receipt) only when the user says so.

    assistant = Assistant(model=cid)          # None: record only, never act
    assistant.begin_episode(env.state())
    assistant.observe(obs, human_action)      # after each human action
    action = assistant.act(obs)               # a legal action for the assistant, or None
    assistant.end_episode(outcome)            # -> the local episode file
    receipt = assistant.share()               # -> Receipt(cid, size, tx_hash)
    assistant.update()                        # the newest model `bitswarm assist train` made

Nothing leaves the machine but what share() stores, and the store is local too until a peer fetches
a CID the user gave out (or a job names it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bitswarm.assist.episode import Episode, EpisodeError, parse
from bitswarm.assist.game import Action, BuildEnv, check_action
from bitswarm.assist.policy import CONFIDENCE, AssistantPolicy
from bitswarm.errors import BitswarmError
from bitswarm.home import Home
from bitswarm.store import BlobStore
from bitswarm.store.atomic import atomic_write_bytes
from bitswarm.store.jsonl import append_line, read_lines


class AssistError(BitswarmError, RuntimeError):
    pass


@dataclass(frozen=True)
class Receipt:
    cid: str
    size: int
    tx_hash: str | None = None
    file: str | None = None

    def to_json(self) -> dict:
        return {"cid": self.cid, "size": self.size, "tx_hash": self.tx_hash, "file": self.file}


def load_assistant_policy(store: BlobStore, cid: str, backend: str = "numba",
                          confidence: float = CONFIDENCE, imitate: bool = False) -> AssistantPolicy:
    from bitswarm.assist.features import policy_config
    from bitswarm.models.policy import PolicyModelError, load_policy
    from bitswarm.repro.backend import get_backend
    from bitswarm.repro.policy import PolicyNet

    cfg, params, _ = load_policy(store, cid)
    if cfg.features != policy_config().features or cfg.heads != policy_config().heads:
        raise PolicyModelError(f"model {cid} is a policy for another game (its inputs or heads differ)")
    return AssistantPolicy(PolicyNet(cfg, params, get_backend(backend)), confidence, imitate)


def newest_model(home: Home) -> str | None:
    """The last model `bitswarm assist train` recorded in this home, or None."""
    models = [r["model"] for r in read_lines(home.assist_models) if isinstance(r.get("model"), str)]
    return models[-1] if models else None


class Assistant:
    def __init__(self, model: str | None = None, *, home: Home | None = None, store: BlobStore | None = None,
                 confidence: float = CONFIDENCE, imitate: bool = False, backend: str = "numba",
                 clock=time.monotonic):
        self.home = home or Home.resolve()
        self.store = store or BlobStore(self.home.store)
        self.confidence, self.imitate, self.backend, self.clock = confidence, imitate, backend, clock
        self.model: str | None = None
        self.policy: AssistantPolicy | None = None
        if model is not None:
            self.load(model)
        self.episode: Episode | None = None
        self.last_file: Path | None = None
        self._history: list[Action] = []
        self._own: set[tuple[int, int, int]] = set()
        self._refused: set[tuple[int, int, int]] = set()
        self._t0 = 0.0

    def load(self, model: str) -> None:
        self.policy = load_assistant_policy(self.store, model, self.backend, self.confidence, self.imitate)
        self.model = model

    def update(self) -> str | None:
        """Switch to the newest trained model, if there is a newer one; its CID (or None)."""
        newest = newest_model(self.home)
        if newest is not None and newest != self.model:
            self.load(newest)
        return self.model

    # -- an episode ------------------------------------------------------------------------

    def begin_episode(self, state: dict) -> None:
        BuildEnv.from_state(state)  # refuses a malformed state now, not at share time
        self.episode, self._history, self._t0 = Episode(state), [], self.clock()
        self._own, self._refused = set(), set()

    def _record(self, player: str, action: Action) -> None:
        if self.episode is None:
            raise AssistError("no episode: call begin_episode(env.state()) first")
        self.episode.steps.append({"t": round(self.clock() - self._t0, 3), "player": player,
                                   "action": action.to_json()})

    def observe(self, obs: dict, human_action: Action) -> None:
        """The human took `human_action`; `obs` is the world after it."""
        self._record("human", human_action)
        self._history.append(human_action)
        cell = (human_action.x, human_action.y, human_action.z)
        if human_action.kind == "remove" and cell in self._own:
            self._refused.add(cell)  # the human took the assistant's block down: it was wrong
        if human_action.kind in ("place", "remove"):
            self._own.discard(cell)

    def act(self, obs: dict) -> Action | None:
        """The assistant's next action (legal in `obs`, and recorded as taken), or None to wait."""
        if self.policy is None or self.episode is None:
            return None
        action = self.policy.choose(obs, self._history, self._own, self._refused)
        if action is None:
            return None
        at = (int(obs["assistant"][0]), int(obs["assistant"][1]))
        if check_action(obs["blocks"], at, action, "assistant") is not None:
            return None  # never propose what the rules forbid
        self._record("assistant", action)
        cell = (action.x, action.y, action.z)
        if action.kind == "place":
            self._own.add(cell)
        elif action.kind == "remove":
            self._own.discard(cell)
        return action

    def end_episode(self, outcome: dict) -> Path:
        """Check the episode by replaying it and keep it on this machine; the file's path."""
        if self.episode is None:
            raise AssistError("no episode to end")
        self.episode.outcome = dict(outcome)
        ep = parse(self.episode.to_bytes(), "this episode")  # the same check a trainer applies
        data = ep.to_bytes()
        path = self.home.episodes / f"{time.strftime('%Y%m%d-%H%M%S')}-{len(data):x}-{abs(hash(data)) % 10**8}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        self.episode, self.last_file = None, path
        return path

    def share(self, path: Path | None = None, ledger=None) -> Receipt:
        """Put an ended episode (the last one, or the file at `path`) into the content store."""
        return share_episode(self.store, path or self.last_file, ledger, home=self.home)


def shared_episodes(home: Home) -> list[str]:
    """Every episode CID this home shared, first shared first, each once."""
    return list(dict.fromkeys(r["cid"] for r in read_lines(home.assist_shared) if isinstance(r.get("cid"), str)))


def share_episode(store: BlobStore, path: Path | None, ledger=None, home: Home | None = None) -> Receipt:
    """Check an episode file and store it; the receipt names its CID and size (and is logged in
    `home`'s shared.jsonl). With `ledger` (a callable taking the CID and returning a transaction
    hash) the CID is also announced on chain."""
    if path is None:
        raise AssistError("no ended episode to share; play one first")
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise AssistError(f"episode file {path} does not exist") from None
    try:
        data = parse(raw, str(path)).to_bytes()
    except EpisodeError as e:
        raise AssistError(f"not shared: {e}") from None
    cid = store.put_bytes(data, label="assist-episode")
    receipt = Receipt(cid, len(data), ledger(cid) if ledger is not None else None, str(path))
    if home is not None:
        append_line(home.assist_shared, receipt.to_json())
    return receipt
