"""bitswarm.ledger.compile: local compilation, its caches, its errors; and a guard that every
revert reason in the contracts is exercised by some test here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import boa
import pytest
from eth_abi import encode

from bitswarm.ledger import compile as lc
from bitswarm.ledger.compile import (
    CONTRACT_NAMES,
    CONTRACTS_DIR,
    CompiledContract,
    LedgerCompileError,
    compile_contract,
    compile_from_dir,
    sources_key,
)

from .conftest import contract_path

TESTS_DIR = Path(__file__).parent


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "contract-cache"
    monkeypatch.setenv("BITSWARM_CACHE_DIR", str(d))
    compile_contract.cache_clear()
    yield d
    compile_contract.cache_clear()


@pytest.fixture
def sources(tmp_path) -> Path:
    """A private copy of the contracts folder, free to edit."""
    return Path(shutil.copytree(CONTRACTS_DIR, tmp_path / "contracts"))


def test_every_contract_compiles_like_boa_compiles_it(cache):
    for name in CONTRACT_NAMES:
        c = compile_contract(name)
        assert isinstance(c, CompiledContract) and c.name == name
        assert any(e.get("type") == "constructor" for e in c.abi)
        assert c.bytecode == boa.load_partial(contract_path(name)).compiler_data.bytecode
    assert compile_contract("Token") is compile_contract("Token")  # in-process cache
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == sorted(CONTRACT_NAMES)


def test_compiled_bytecode_deploys_and_runs(cache):
    c = compile_contract("Token")
    me = boa.env.eoa
    args = encode(["string", "string", "address"], ["credits", "CR", me])
    address, _ = boa.env.deploy_code(bytecode=c.bytecode + args)
    token = boa.loads_abi(json.dumps(c.abi), name="Token").at(address)
    assert (token.name(), token.symbol(), token.decimals(), token.minter()) == ("credits", "CR", 18, me)


def test_default_cache_dir(monkeypatch):
    monkeypatch.delenv("BITSWARM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    assert lc.cache_dir() == Path("/nonexistent-home/.cache/bitswarm/contracts")


def test_disk_cache_hit_skips_the_compiler(sources, tmp_path, monkeypatch):
    first = compile_from_dir(sources, "Token", tmp_path / "c")
    (entry,) = (tmp_path / "c").iterdir()
    assert entry.name == f"Token-{sources_key(sources)}.json"

    def no_compiler(*_args):
        raise AssertionError("compiled again despite a cache hit")

    monkeypatch.setattr(lc, "_run_vyper", no_compiler)
    assert compile_from_dir(sources, "Token", tmp_path / "c") == first


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "{not json",
        "[1, 2]",
        '{"name": "Token"}',
        '{"name": "Other", "abi": [], "bytecode": "00"}',
        '{"name": "Token", "abi": [], "bytecode": "zz"}',
    ],
)
def test_corrupt_cache_entry_is_ignored_and_rewritten(sources, tmp_path, garbage):
    good = compile_from_dir(sources, "Token", tmp_path / "c")
    (entry,) = (tmp_path / "c").iterdir()
    entry.write_text(garbage)
    assert compile_from_dir(sources, "Token", tmp_path / "c") == good
    assert json.loads(entry.read_text())["bytecode"] == good.bytecode.hex()


def test_any_source_edit_changes_the_key(sources):
    key = sources_key(sources)
    iface = sources / "INodeRegistry.vyi"
    iface.write_text(iface.read_text() + "\n# edited\n")
    assert sources_key(sources) != key


def test_compile_errors_name_the_contract(sources):
    broken = "#pragma version ~=0.4.3\n@external\ndef f() -> uint256:\n    return undefined_name\n"
    (sources / "Token.vy").write_text(broken)
    with pytest.raises(LedgerCompileError, match=r"contract Token failed to compile.*undefined_name"):
        compile_from_dir(sources, "Token")
    with pytest.raises(LedgerCompileError, match="no Missing.vy"):
        compile_from_dir(sources, "Missing")


def test_unknown_contract_name():
    with pytest.raises(LedgerCompileError, match="unknown contract 'Nope'"):
        compile_contract("Nope")


def _other_tests_text() -> str:
    return "".join(p.read_text() for p in TESTS_DIR.glob("test_*.py") if p.name != Path(__file__).name)


def test_every_external_function_is_called(cache):
    """Each function in each contract's ABI is called somewhere in these tests."""
    tests = _other_tests_text()
    uncalled = [
        f"{name}.{fn['name']}"
        for name in CONTRACT_NAMES
        for fn in compile_contract(name).abi
        if fn["type"] == "function" and f".{fn['name']}(" not in tests
    ]
    assert not uncalled, f"functions no test calls: {uncalled}"


def test_every_revert_reason_is_tested():
    """A new `assert ..., "reason"` in a contract must come with a test that hits it."""
    reasons = set()
    for src in CONTRACTS_DIR.glob("*.vy"):
        reasons |= set(re.findall(r'^\s*assert .*, "([^"]+)"\s*$', src.read_text(), flags=re.MULTILINE))
    assert len(reasons) > 40  # the pattern still matches the contracts' style
    tests = _other_tests_text()
    untested = sorted(r for r in reasons if f'"{r}"' not in tests)
    assert not untested, f"revert reasons no test hits: {untested}"
