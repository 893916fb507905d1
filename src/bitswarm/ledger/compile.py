"""Compile the ledger's Vyper contracts locally, with an in-process and an on-disk cache.

The compiler is the `vyper` package pinned in pyproject; nothing is ever fetched. A disk cache
entry is keyed by the vyper version and the text of every source in the contracts folder (an
interface edit changes the bytecode of the contracts that import it), so any edit invalidates
it without bookkeeping.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bitswarm.errors import BitswarmError
from bitswarm.store.atomic import atomic_write_text

__all__ = [
    "CONTRACTS_DIR",
    "CONTRACT_NAMES",
    "CompiledContract",
    "LedgerCompileError",
    "cache_dir",
    "compile_contract",
    "compile_from_dir",
    "sources_key",
]

CONTRACT_NAMES = ("Token", "NodeRegistry", "JobMarket", "SwarmCoordinator")
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
_SOURCE_SUFFIXES = (".vy", ".vyi")


class LedgerCompileError(BitswarmError, RuntimeError):
    """A contract failed to compile (or does not exist)."""


@dataclass(frozen=True)
class CompiledContract:
    name: str
    abi: list
    bytecode: bytes  # deployment (init) code


def cache_dir() -> Path:
    env = os.environ.get("BITSWARM_CACHE_DIR")
    return Path(env) if env else Path("~/.cache/bitswarm/contracts").expanduser()


def sources_key(contracts_dir: Path) -> str:
    """sha256 over the vyper version and every contract source (name and text) in the folder."""
    import vyper

    h = hashlib.sha256(f"vyper {vyper.__version__}\0".encode())
    for path in sorted(p for p in Path(contracts_dir).iterdir() if p.suffix in _SOURCE_SUFFIXES):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _run_vyper(contracts_dir: Path, name: str) -> CompiledContract:
    from vyper.compiler import compile_from_file_input
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.exceptions import VyperException, VyperInternalException

    # The folder is the search path, so `from . import INodeRegistry` resolves beside the source.
    bundle = FilesystemInputBundle([Path(contracts_dir)])
    try:
        file_input = bundle.load_file(f"{name}.vy")
        out = compile_from_file_input(file_input, input_bundle=bundle, output_formats=["abi", "bytecode"])
    except FileNotFoundError as e:
        raise LedgerCompileError(f"contract {name}: no {name}.vy in {contracts_dir}") from e
    except (VyperException, VyperInternalException) as e:
        raise LedgerCompileError(f"contract {name} failed to compile: {e}") from e
    return CompiledContract(name=name, abi=out["abi"], bytecode=bytes.fromhex(out["bytecode"].removeprefix("0x")))


def _read_cache(path: Path, name: str) -> CompiledContract | None:
    # Anything unreadable or malformed is treated as a miss; the caller then rewrites it.
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["name"] != name or not isinstance(data["abi"], list):
            return None
        code = bytes.fromhex(data["bytecode"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return CompiledContract(name=name, abi=data["abi"], bytecode=code) if code else None


def compile_from_dir(contracts_dir: Path, name: str, cache: Path | None = None) -> CompiledContract:
    """Compile `<contracts_dir>/<name>.vy`, through the disk cache in `cache` when given."""
    if cache is None:
        return _run_vyper(contracts_dir, name)
    path = Path(cache) / f"{name}-{sources_key(contracts_dir)}.json"
    hit = _read_cache(path, name)
    if hit is not None:
        return hit
    compiled = _run_vyper(contracts_dir, name)
    payload = {"name": name, "abi": compiled.abi, "bytecode": compiled.bytecode.hex()}
    atomic_write_text(path, json.dumps(payload, sort_keys=True))
    return compiled


@functools.cache
def compile_contract(name: str) -> CompiledContract:
    """One of CONTRACT_NAMES, compiled from this package's contracts folder."""
    if name not in CONTRACT_NAMES:
        raise LedgerCompileError(f"unknown contract {name!r}; expected one of {', '.join(CONTRACT_NAMES)}")
    return compile_from_dir(CONTRACTS_DIR, name, cache_dir())
