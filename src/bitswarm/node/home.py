"""The data directory: everything bitswarm keeps on disk lives under one folder."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "BITSWARM_HOME"
DEFAULT_HOME = Path("~/.bitswarm")


def resolve_home(explicit: str | os.PathLike | None = None) -> Path:
    """--home beats BITSWARM_HOME beats ~/.bitswarm."""
    raw = explicit if explicit not in (None, "") else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(raw).expanduser().absolute()


def store_dir(home: Path) -> Path:
    return home / "store"


def keys_dir(home: Path) -> Path:
    return home / "keys"


def config_file(home: Path) -> Path:
    return home / "config.toml"
