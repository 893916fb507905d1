"""swarm.state: which folder holds a swarm, and what it says when the folder is not this swarm's."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bitswarm.swarm.state import MANIFEST, SwarmStateError, definition, key_of, open_state

from .conftest import FAST


def test_a_swarm_is_its_definition(tiny_mix, tmp_path):
    a = definition("run", "sha256:aa", tiny_mix, FAST, peers=2)
    assert key_of(a) == key_of(definition("run", "sha256:aa", tiny_mix, FAST, peers=2))
    b = definition("run", "sha256:aa", tiny_mix, dataclasses.replace(FAST, temperature=0.5), peers=2)
    assert key_of(a) != key_of(b)

    first = open_state(tmp_path / "a", a)
    assert not first.resumed and json.loads((tmp_path / "a" / MANIFEST).read_text())["swarm"] == a
    assert open_state(tmp_path / "a", a).resumed
    new = open_state(tmp_path / "b", b, others=[tmp_path / "a"])
    assert new.changed == ("temperature",) and new.previous == tmp_path / "a"


def test_a_folder_it_cannot_read_is_refused_in_words(tiny_mix, tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(SwarmStateError, match="unreadable; move .* away"):
        open_state(tmp_path, definition("run", "sha256:aa", tiny_mix, FAST))
    with pytest.raises(SwarmStateError, match="finite numbers"):
        definition("run", "sha256:aa", tiny_mix, dataclasses.replace(FAST, lr=float("nan")))
