"""The data directory: everything bitswarm keeps on disk lives under one folder, and one Home
object knows every path in it (so no module builds a path under the home by hand)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "BITSWARM_HOME"
DEFAULT_HOME = Path("~/.bitswarm")
# In each swarm peer's folder: one line per round it ran (what the round was worth, without the
# CIDs and paths that peer.json keeps for resuming), for the dashboard's reward curves. Named
# here, not in swarm.peer, so that readers (the dashboard, the demo) need not import the swarm (torch).
SWARM_REPORTS_LOG = "round_reports.jsonl"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike | None = None) -> "Home":
        """--home beats BITSWARM_HOME beats ~/.bitswarm."""
        raw = explicit if explicit not in (None, "") else os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(raw).expanduser().absolute())

    @property
    def store(self) -> Path:
        """The content-addressed blob store."""
        return self.root / "store"

    @property
    def keys(self) -> Path:
        """The identity: account keystore and libp2p peer key."""
        return self.root / "keys"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def deployments(self) -> Path:
        """Contract addresses per chain id (ledger.deployment)."""
        return self.root / "deployments"

    @property
    def node_db(self) -> Path:
        """The running node's state (SQLite): followed events, jobs, decisions, disputes."""
        return self.root / "node.db"

    @property
    def api_token_file(self) -> Path:
        """The local token every mutating API request must carry (mode 0600)."""
        return self.root / "api.token"

    @property
    def node_info_file(self) -> Path:
        """Where a running node says how to reach it (pid, API URL, libp2p addresses)."""
        return self.root / "node.json"

    @property
    def jobs(self) -> Path:
        """Per-job work directories of a node (runs, records, a verifier's replays)."""
        return self.root / "jobs"

    def job_dir(self, job_id: int, role: str) -> Path:
        return self.jobs / f"{job_id}-{role}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def devnet(self) -> Path:
        """The embedded devnet's chain data (ledger.devnet)."""
        return self.root / "devnet"

    @property
    def swarms(self) -> Path:
        """Swarm state: one folder per swarm, for `swarm run` and `swarm join` alike."""
        return self.root / "swarm"

    def swarm(self, kind: str, key: str) -> Path:
        """One swarm's state (its swarm.json, peer state, training runs): `kind` is the command
        ("run" or "join"), `key` the short hash of what defines the swarm (swarm.state.key_of),
        so a swarm with another model, tasks or settings never continues this one's peers."""
        return self.swarms / f"{kind}-{key}"

    def swarm_states(self, kind: str) -> list[Path]:
        """Every swarm state folder of one command, for telling a new swarm from the last one."""
        return sorted(p for p in self.swarms.glob(f"{kind}-*") if p.is_dir())


    @property
    def assist(self) -> Path:
        """The assistant's local data: episodes recorded (kept here until the user shares one) and
        models.jsonl, the trained assistant models in the order they were made (assist.sdk)."""
        return self.root / "assist"

    @property
    def episodes(self) -> Path:
        return self.assist / "episodes"

    @property
    def assist_models(self) -> Path:
        return self.assist / "models.jsonl"

    @property
    def assist_shared(self) -> Path:
        """One receipt per episode this home shared ({"cid", "size", "tx_hash", "file"}), in order."""
        return self.assist / "shared.jsonl"

    @property
    def assist_simulations(self) -> Path:
        """One line per `assist simulate` run: the episodes, the model and what it was worth."""
        return self.assist / "simulations.jsonl"


def resolve_home(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory's root (Home.resolve(...).root), for callers that only need the folder."""
    return Home.resolve(explicit).root
