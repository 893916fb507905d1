"""bitswarm.swarm.claims: a round's rollout batch, its re-scored reward, and the claim check
that refuters, referees and LocalCoordinator share."""

from __future__ import annotations

import pytest

from bitswarm.store import BlobStore
from bitswarm.swarm.claims import batch_reward, claim_holds, encode_batch, rescore, reward_units
from bitswarm.jobs.tasks import score

PEER = "ab" * 32


@pytest.fixture
def batch(tiny_mix):
    refs = tiny_mix.sample(0, 3, PEER, 2)
    right = f"<answer>{tiny_mix.reference_answer(refs[0])}</answer>"
    groups = [(refs[0], [right, "no", right]), (refs[1], ["<answer>-1</answer>", "x"])]
    scores = [[score(ref, c, tiny_mix) for c in cs] for ref, cs in groups]
    return encode_batch(3, PEER, groups), batch_reward(scores)


def test_a_batch_rescores_to_what_its_peer_computed(tiny_mix, batch):
    blob, reward = batch
    assert rescore(blob, tiny_mix) == reward == 2 / 5
    assert blob.startswith(b'{"groups":[{"completions":["<answer>') and blob.endswith(b'"round":3,"v":1}')
    for bad in (b"{}", b"not json", blob.replace(b'"v":1', b'"v":2'), blob + b" ",
                blob.replace(b'{"completions"', b'{ "completions"', 1)):
        with pytest.raises(ValueError):
            rescore(bad, tiny_mix)


def test_claim_holds_only_for_the_exact_reward(tmp_path, tiny_mix, batch):
    store = BlobStore(tmp_path / "store")
    blob, reward = batch
    cid = store.put_bytes(blob)
    units = reward_units(reward)
    assert claim_holds(store, tiny_mix, cid, units)
    assert not claim_holds(store, tiny_mix, cid, units + 1)  # one millionth off is a false claim
    assert not claim_holds(store, tiny_mix, cid, 1_000_000)
    assert not claim_holds(store, tiny_mix, "sha256:" + "0" * 64, units)  # a batch nobody can read
    assert not claim_holds(store, tiny_mix, store.put_bytes(b"[1, 2]"), 0)  # not a batch backs nothing
    assert [reward_units(r) for r in (0.0, 1.0, 0.4, 1.5, -0.1, float("nan"))] == [0, 1_000_000, 400_000, None, None, None]
