"""One validated settings model: defaults < config.toml < BITSWARM_* environment < explicit values."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bitswarm.errors import BitswarmError
from bitswarm.store.atomic import atomic_write_text

ENV_PREFIX = "BITSWARM_"


class ConfigError(BitswarmError):
    """A config file or value that cannot be used; the message names the field and what is allowed."""


class Settings(BaseSettings):
    """Node settings. Each field can be set in config.toml or as BITSWARM_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    rpc_url: str = Field(
        "http://127.0.0.1:8545",
        # BITSWARM_RPC is the short name the docs use; BITSWARM_RPC_URL follows the field's name.
        validation_alias=AliasChoices("rpc_url", "bitswarm_rpc", "bitswarm_rpc_url"),
        description="JSON-RPC endpoint of the EVM chain (env BITSWARM_RPC); the embedded devnet listens here by default",
    )
    api_host: str = Field(
        "127.0.0.1",
        description="address the node's HTTP API binds to; loopback unless you mean to expose it",
    )
    api_port: int = Field(8700, ge=0, le=65535, description="TCP port of the node's HTTP API (0 picks a free one)")
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="compute threads for training and inference; unset uses every core",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="how much the node logs"
    )
    roles: list[Literal["solver", "verifier", "referee"]] = Field(
        ["solver", "verifier", "referee"],
        description="what `bitswarm node run` does: solve jobs, audit others' results, referee disputes "
        "(each also needs that role registered on chain with `bitswarm node register --roles`)",
    )
    listen: list[str] = Field(
        ["/ip4/127.0.0.1/tcp/0"],
        description="libp2p multiaddrs the node listens on for peers (use /ip4/0.0.0.0/tcp/PORT to be reachable "
        "from other machines)",
    )
    bootstrap: list[str] = Field(
        [], description="multiaddrs (ending in /p2p/<peer id>) of peers to join the network through"
    )
    solver_kinds: list[Literal["train", "infer", "eval"]] = Field(
        ["train", "infer", "eval"], description="job kinds this node claims as a solver"
    )
    max_model_bytes: int = Field(
        4 * 2**30, ge=0, description="memory budget: the largest model (bytes) this node claims a job for"
    )
    max_steps: int = Field(
        10_000, ge=1, description="the most leaves (training steps, tokens, batches) a job may have for this node to claim it"
    )
    verify_sample_rate: float = Field(
        0.1, gt=0, le=1,
        description="share of a committed job's steps a verifier re-executes (at least one, plus the drawn audit step)",
    )
    serve_blobs: Literal["announced", "all", "none"] = Field(
        "announced",
        description="which blobs peers may fetch from this node: announced (job specs, inputs and results this "
        "node published; the safe default), all (everything in the store), none",
    )
    poll_seconds: float = Field(1.0, gt=0, le=60, description="how often the node reads the chain")

    @field_validator("rpc_url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        if not v.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must start with http://, https://, ws:// or wss://")
        return v


def _sources_for(toml_path: Path | None):
    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ):
            sources = [init_settings, env_settings]
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    return _FromFile


def _describe(err: ValidationError, toml_path: Path | None) -> str:
    lines = []
    allowed = ", ".join(Settings.model_fields)
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(config)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown setting '{field}'; allowed settings: {allowed}")
            continue
        got = e.get("input")
        lines.append(
            f"invalid value for '{field}': {e['msg']} (got {got!r}); "
            f"set it in {toml_path or 'config.toml'} or as {ENV_PREFIX}{field.upper()}"
        )
    return "\n".join(lines)


def load_settings(toml_path: Path | None, **overrides: Any) -> Settings:
    """Read settings; a missing file means defaults, a broken one is a ConfigError."""
    path = Path(toml_path) if toml_path is not None else None
    if path is not None and path.exists():
        try:
            tomllib.loads(path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
    else:
        path = None
    try:
        loaded = _sources_for(path)(**overrides)
    except ValidationError as e:
        raise ConfigError(_describe(e, path)) from None
    return Settings.model_construct(**loaded.model_dump())


def set_value(toml_path: Path, key: str, value: str) -> Settings:
    """Validate one new value against the whole file, then write the file atomically."""
    if key not in Settings.model_fields:
        raise ConfigError(f"unknown setting '{key}'; allowed settings: {', '.join(Settings.model_fields)}")
    current: dict[str, Any] = {}
    if toml_path.exists():
        try:
            current = tomllib.loads(toml_path.read_text("utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{toml_path} is not valid TOML: {e}") from None
    candidate = {**current, key: value}
    try:
        checked = Settings.model_validate(candidate)
    except ValidationError as e:
        raise ConfigError(_describe(e, toml_path)) from None
    current[key] = getattr(checked, key)
    atomic_write_text(toml_path, tomli_w.dumps({k: v for k, v in current.items() if v is not None}))
    return checked


def describe_fields() -> list[dict[str, Any]]:
    return [
        {"name": name, "default": f.default, "description": f.description or ""}
        for name, f in Settings.model_fields.items()
    ]
