"""Which folder holds a swarm's state: one per swarm, keyed by what defines the swarm.

A swarm is defined by its base model, its tasks and every setting that changes what its peers
compute (for `swarm run` also the peer count, transport and adversaries; for `swarm join` the
peer's own key). The state folder's name ends in a short hash of the canonical JSON of that
definition, and the folder keeps the definition itself (swarm.json), compared on every start:
the same swarm resumes where its peers stopped, a different one starts fresh in a folder of
its own. Peer state is never carried into a swarm it was not trained in: a peer that resumed
under another model would train the old policy and report it as the new one's.

`--rounds` is not part of the definition: asking for more rounds continues the same swarm.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bitswarm.errors import BitswarmError
from bitswarm.jobs.tasks import TaskMix
from bitswarm.store.atomic import atomic_write_text
from bitswarm.swarm.peer import PeerSettings
from bitswarm.swarm.records import canonical_json

MANIFEST = "swarm.json"
VERSION = 1  # of the manifest's layout; the key hashes only the definition
KEY_HEX = 12  # 48 bits: enough to tell one person's swarms apart; the manifest catches a collision


class SwarmStateError(BitswarmError):
    """A state folder that cannot be used for this swarm; says whose it is and what to do."""


def definition(kind: str, model: str, mix: TaskMix, settings: PeerSettings, **extra) -> dict:
    """What defines a swarm, as plain JSON values. `extra` holds the command's own defining
    settings (peers, transport, adversaries; the peer key of a joined peer)."""
    defn = {
        "kind": kind, "model": model,
        "tasks": {"names": list(mix.names), "weights": list(mix.weights), "size": mix.size, "configs": mix.configs},
        **dataclasses.asdict(settings), **extra,
    }
    try:  # through JSON once, so tuples are lists and the stored copy compares equal
        return json.loads(canonical_json(defn))
    except ValueError as exc:  # NaN or infinity: not JSON, and not a setting anyone means
        raise SwarmStateError(f"swarm settings must be finite numbers: {exc}") from None


def key_of(defn: dict) -> str:
    """The short hash that names a swarm's state folder."""
    return hashlib.sha256(canonical_json(defn)).hexdigest()[:KEY_HEX]


def differences(a: dict, b: dict) -> list[str]:
    """The fields of two definitions that differ (each top-level field counts once)."""
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@dataclass(frozen=True)
class SwarmState:
    dir: Path
    key: str
    resumed: bool  # the folder already held this swarm
    changed: tuple[str, ...] = ()  # a new swarm: the fields in which it differs from the last one used
    previous: Path | None = None  # a new swarm: the state folder of the last one used, left as it was

    def as_json(self, from_round: int) -> dict:
        return {"swarm": self.key, "dir": str(self.dir), "resumed": self.resumed, "from_round": from_round,
                "changed": list(self.changed)}


def _read(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())["swarm"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _last_used(folders: Iterable[Path]) -> Path | None:
    dated = []
    for f in folders:
        try:
            dated.append(((f / MANIFEST).stat().st_mtime_ns, f))
        except OSError:
            continue
    return max(dated)[1] if dated else None


def open_state(folder: Path, defn: dict, others: Iterable[Path] = ()) -> SwarmState:
    """The state folder of the swarm `defn`, created if new. `others` are the folders of other
    swarms of the same command, so a new swarm can say how it differs from the last one used."""
    folder = Path(folder)
    key = key_of(defn)
    manifest = folder / MANIFEST
    if manifest.exists():
        held = _read(folder)
        if held is None:
            raise SwarmStateError(f"{manifest} is unreadable; move {folder} away to start this swarm afresh there")
        if held != defn:
            raise SwarmStateError(
                f"{folder} holds another swarm (it differs in {', '.join(differences(held, defn))}); one folder "
                "keeps one swarm's peers: choose another folder, or move this one away")
        os.utime(manifest)  # the last one used: what the next new swarm is compared with
        return SwarmState(folder, key, resumed=True)
    if folder.exists() and any(folder.iterdir()):
        raise SwarmStateError(
            f"{folder} holds files but no {MANIFEST}, so which swarm they belong to is unknown (state written "
            "before swarms were keyed, or not a swarm folder): choose another folder, or move this one away")
    previous = _last_used(f for f in others if Path(f) != folder)
    held = _read(previous) if previous is not None else None
    changed = tuple(differences(held, defn)) if held is not None else ()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest, json.dumps({"version": VERSION, "key": key, "swarm": defn}, indent=1))
    return SwarmState(folder, key, resumed=False, changed=changed, previous=previous if changed else None)
