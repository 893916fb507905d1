"""A tiny policy that already writes <answer> tags, so swarm tests have rewards that differ."""

from __future__ import annotations

import pytest

from bitswarm.store import BlobStore
from bitswarm.swarm.peer import PeerSettings
from bitswarm.jobs.tasks import TaskMix

# Small rounds: one or two tasks per peer, short completions.
FAST = PeerSettings(local=2, external=2, group_size=4, max_new_tokens=20, lr=3e-3, micro_batch=8)


@pytest.fixture(scope="session")
def tiny_mix() -> TaskMix:
    return TaskMix(["tiny_sum"])


@pytest.fixture(scope="session")
def warm_tiny(tmp_path_factory, tiny_mix) -> tuple[BlobStore, str]:
    from bitswarm.models.importer import init_model
    from bitswarm.swarm.warmstart import warm_start

    root = tmp_path_factory.mktemp("warm")
    store = BlobStore(root / "store")
    base = init_model(store, "tiny", 0)
    return store, warm_start(store, base, tiny_mix, root / "run", steps=80, lr=1e-2)
