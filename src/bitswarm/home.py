"""The data directory: everything bitswarm keeps on disk lives under one folder, and one Home
object knows every path in it (so no module builds a path under the home by hand)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "BITSWARM_HOME"
DEFAULT_HOME = Path("~/.bitswarm")


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

    def swarm(self, name: str) -> Path:
        """A swarm's working state ("local" for `swarm run`, "joined" for `swarm join`)."""
        return self.root / "swarm" / name


def resolve_home(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory's root (Home.resolve(...).root), for callers that only need the folder."""
    return Home.resolve(explicit).root
