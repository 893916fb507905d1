"""The swarm manifest: what a joiner needs, published by the host, signed with its peer key.

A host (`bitswarm swarm run --transport hivemind`) puts one manifest on the DHT under
`bitswarm/swarm/<host peer id>`. The host's peer id is in every bootstrap multiaddr it prints
(`/p2p/<id>`), so `swarm join --bootstrap MADDR` knows whose manifest to read and whose key
must have signed it: nobody else can speak for that host. It holds the model CID, the task mix,
the swarm-wide peer settings, the round schedule and where the model's bytes are served.

Wire format (v1), canonical JSON as records.py writes it:

    {"manifest": <Manifest>, "sig": "<128 hex chars>", "v": 1}

`sig` is the host key's Ed25519 signature over DOMAIN + canonical(manifest); only the exact
bytes `encode_signed` produces are accepted (one manifest, one encoding).

Schedule. Round r runs from start + r * round_seconds; every peer computes the current round
from its own clock with `Schedule.current()`, so a joiner needs no round number from anyone
(clocks must agree to well within a round; NTP does). A host that falls behind skips to the
current round rather than publishing into rounds the others have left.

On chain (`swarm run --ledger`): the manifest's `chain` names the chain id, the
SwarmCoordinator's address and `first_round`, the chain round that is the swarm's round 0. Then
the chain's `current_round` is the clock: swarm round r is chain round first_round + r, every
peer reads it from the contract (coordinator.ChainSchedule), and a round ends when someone
closes it on chain (anyone may once its duration has passed; the host does). `start` and
`round_seconds` then only describe it (round_seconds is the contract's round duration).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Annotated

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bitswarm.errors import BitswarmError
from bitswarm.jobs.tasks import TaskError, TaskMix
from bitswarm.swarm.peer import PeerSettings
from bitswarm.swarm.records import canonical_json, public_key_hex

VERSION = 1
DOMAIN = b"bitswarm/swarm-manifest/v1\x00"
MAX_MANIFEST_BYTES = 16 * 1024
MANIFEST_KEY = "bitswarm/swarm/{peer_id}"
SUBKEY_PREFIX = "manifest:"  # + the host key's hex: the DHT validator checks that key signed it

# Settings every peer of a swarm must share: what it samples and generates, and what its filter
# admits (I groups of group_size per publisher). A peer's own choices stay its own: how many
# external groups it takes (J), its learning rate and micro-batch.
SWARM_WIDE = ("local", "group_size", "max_new_tokens", "temperature", "top_p", "task_seed", "backend", "chat")
PEER_OWN = ("external", "lr", "micro_batch")

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
_NAME = Annotated[str, Field(max_length=64)]
_MADDR = Annotated[str, Field(max_length=512)]


class ManifestError(BitswarmError, ValueError):
    """A manifest that is not a valid one signed by the expected host; says what is wrong."""


class Tasks(BaseModel):
    model_config = _STRICT
    names: list[_NAME] = Field(min_length=1, max_length=64)
    weights: list[float] = Field(min_length=1, max_length=64)
    size: int = Field(gt=0, lt=2**31)


class Settings(BaseModel):
    model_config = _STRICT
    local: int = Field(ge=1, le=64)
    external: int = Field(ge=0, le=1024)
    group_size: int = Field(ge=2, le=64)
    max_new_tokens: int = Field(ge=1, le=1 << 16)
    temperature: float = Field(ge=0, allow_inf_nan=False)
    top_p: float = Field(gt=0, le=1, allow_inf_nan=False)
    lr: float = Field(ge=0, allow_inf_nan=False)
    micro_batch: int = Field(ge=1, le=1 << 16)
    task_seed: int = Field(ge=0, lt=2**63)
    backend: str = Field(pattern=r"^(repro|native)$")
    chat: bool


class ChainRef(BaseModel):
    """Where a swarm's rounds are counted: the chain and its SwarmCoordinator contract."""
    model_config = _STRICT
    chain_id: int = Field(gt=0, lt=2**63)
    coordinator: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    first_round: int = Field(ge=1, lt=2**63)  # the chain round that is the swarm's round 0


class Manifest(BaseModel):
    model_config = _STRICT
    host: str = Field(pattern=r"^[0-9a-f]{64}$")  # the signing key: raw Ed25519 public key, hex
    model: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    tasks: Tasks
    settings: Settings
    start: float = Field(ge=0, allow_inf_nan=False)  # unix seconds at which round 0 began
    round_seconds: float = Field(gt=0, le=86_400, allow_inf_nan=False)
    model_sources: list[_MADDR] = Field(max_length=8)  # where the host serves the model blob
    chain: ChainRef | None = None  # rounds counted on this chain's SwarmCoordinator (`swarm run --ledger`)

    def task_mix(self) -> TaskMix:
        """The swarm's task mix, built from this version's own task definitions (a remote peer
        never passes task configs through to reasoning-gym)."""
        try:
            return TaskMix(self.tasks.names, self.tasks.weights, self.tasks.size)
        except TaskError as exc:
            raise ManifestError(f"the swarm's tasks are not usable here: {exc}") from None

    def peer_settings(self) -> PeerSettings:
        return PeerSettings(**self.settings.model_dump())

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.start, self.round_seconds)


@dataclass(frozen=True)
class Schedule:
    start: float
    round_seconds: float

    def current(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return max(0, math.floor((now - self.start) / self.round_seconds))

    def start_of(self, round_: int) -> float:
        return self.start + round_ * self.round_seconds

    def wait_for(self, round_: int, sleep=time.sleep) -> None:
        """Sleep until `round_` has begun (at once if it has)."""
        while (left := self.start_of(round_) - time.time()) > 0:
            sleep(min(left, 1.0))

    @classmethod
    def resuming(cls, at_round: int, round_seconds: float, now: float | None = None) -> Schedule:
        """A schedule whose current round, now, is `at_round` (a host resuming its swarm)."""
        now = time.time() if now is None else now
        return cls(now - at_round * round_seconds, round_seconds)


def build(host: Ed25519PrivateKey, model: str, mix: TaskMix, settings: PeerSettings, schedule: Schedule,
          model_sources: list[str], chain: ChainRef | None = None) -> Manifest:
    return Manifest(
        host=public_key_hex(host), model=model,
        tasks=Tasks(names=list(mix.names), weights=[float(w) for w in mix.weights], size=mix.size),
        settings=Settings(**dataclasses.asdict(settings)), start=float(schedule.start),
        round_seconds=float(schedule.round_seconds), model_sources=list(model_sources), chain=chain,
    )


def encode_signed(manifest: Manifest, priv: Ed25519PrivateKey) -> bytes:
    if manifest.host != public_key_hex(priv):
        raise ValueError("manifest.host must be the signing key's public key hex")
    body = manifest.model_dump(mode="json")
    sig = priv.sign(DOMAIN + canonical_json(body)).hex()
    blob = canonical_json({"manifest": body, "sig": sig, "v": VERSION})
    if len(blob) > MAX_MANIFEST_BYTES:
        raise ValueError(f"manifest is {len(blob)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit peers accept")
    return blob


def decode_verified(blob: bytes, host: str | None = None) -> Manifest:
    """Parse and check a manifest (size, envelope, schema, canonical bytes, signature by its
    host; and that the host is `host` when given); raise ManifestError saying which failed."""
    if not isinstance(blob, (bytes, bytearray)):
        raise ManifestError(f"a manifest is bytes, not {type(blob).__name__}")
    if len(blob) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest of {len(blob)} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        env = json.loads(bytes(blob).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"manifest is not UTF-8 JSON: {exc}") from None
    if not isinstance(env, dict) or set(env) != {"manifest", "sig", "v"} or env["v"] != VERSION:
        raise ManifestError("manifest envelope is not {manifest, sig, v: 1}")
    try:
        manifest = Manifest.model_validate(env["manifest"])
        sig = bytes.fromhex(env["sig"]) if isinstance(env["sig"], str) and len(env["sig"]) == 128 else b""
    except (ValidationError, ValueError) as exc:
        raise ManifestError(f"manifest does not fit the schema: {exc}") from None
    if canonical_json(env) != bytes(blob):
        raise ManifestError("manifest is not in canonical form")
    if host is not None and manifest.host != host:
        raise ManifestError(f"manifest is by key {manifest.host}, not by the host {host}")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(manifest.host)).verify(
            sig, DOMAIN + canonical_json(env["manifest"]))
    except (InvalidSignature, ValueError):
        raise ManifestError("manifest signature does not verify against its host key") from None
    return manifest


def mismatches(manifest: Manifest, model: str | None, mix: TaskMix | None, given: dict) -> list[str]:
    """What the joiner asked for that the swarm does not do, one phrase per field: `model` and
    `mix` when the joiner named them, `given` the swarm-wide settings it set explicitly."""
    out = []
    if model is not None and model != manifest.model:
        out.append(f"model: yours {model}, the swarm's {manifest.model}")
    if mix is not None:
        swarm = manifest.task_mix()
        # Weights compare with a tolerance: the swarm's were normalised once more on the way here.
        if ((mix.names, mix.size) != (swarm.names, swarm.size)
                or not all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(mix.weights, swarm.weights))):
            out.append(f"tasks: yours {','.join(mix.names)}, the swarm's {','.join(swarm.names)}")
    theirs = manifest.settings.model_dump()
    for name, value in sorted(given.items()):
        if name in SWARM_WIDE and value != theirs[name]:
            out.append(f"--{name.replace('_', '-')}: yours {value}, the swarm's {theirs[name]}")
    return out
