"""What the top-level options decide for every subcommand: the data directory and the config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bitswarm.home import Home, resolve_home
from bitswarm.store import BlobStore

if TYPE_CHECKING:
    from bitswarm.node.config import Settings


@dataclass
class State:
    home: Path
    config_path: Path | None = None  # from --config; None means <home>/config.toml
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def paths(self) -> Home:
        """Every path in the data directory."""
        return Home(self.home)

    @property
    def config_file(self) -> Path:
        return self.config_path if self.config_path is not None else self.paths.config_file

    def settings(self) -> Settings:
        # pydantic-settings loads here, not at import: `--help` and `--version` never need it.
        from bitswarm.node.config import ConfigError, load_settings

        if self._settings is None:
            if self.config_path is not None and not self.config_path.is_file():
                raise ConfigError(f"config file {self.config_path} does not exist")
            self._settings = load_settings(self.config_file)
        return self._settings

    def store(self) -> BlobStore:
        return BlobStore(self.paths.store)


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if root.obj is None:  # invoked without the top-level callback (tests calling a sub-app)
        root.obj = State(home=resolve_home())
    return root.obj
