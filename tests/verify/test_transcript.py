"""Transcripts (format v1) and Merkle inclusion proofs."""

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bitswarm.cli.main import app
from bitswarm.repro.hashing import merkle_root
from bitswarm.verify import merkle, transcript
from tests.verify.test_replay import honest_run  # noqa: F401

runner = CliRunner()


@given(st.integers(1, 40), st.data())
def test_every_leaf_has_a_proof_and_forgeries_fail(n, data):
    leaves = [hashlib.sha256(bytes([i])).hexdigest() for i in range(n)]
    root = merkle_root(leaves)
    i = data.draw(st.integers(0, n - 1))
    p = merkle.proof(leaves, i)
    assert merkle.verify(leaves[i], p, root, i, n)
    assert not merkle.verify(hashlib.sha256(b"other").hexdigest(), p, root, i, n)
    if p:
        bad = [list(x) for x in p]
        bad[0][1] = "00" * 32
        assert not merkle.verify(leaves[i], bad, root, i, n)
    assert not merkle.verify(leaves[i], [["X", "zz"]], root, i, n)
    assert not merkle.verify(leaves[i], p, root, n, n) and not merkle.verify(leaves[i], p, root, -1, n)


@given(st.integers(2, 40), st.data())
def test_a_proof_is_bound_to_its_index_and_tree_size(n, data):
    """The attack: answer every query with leaf j and j's own valid proof. The old verify took no
    index, so leaf 0 "proved" itself at any index and steered the bisection."""
    leaves = [hashlib.sha256(bytes([i])).hexdigest() for i in range(n)]
    root = merkle_root(leaves)
    j = data.draw(st.integers(0, n - 1))
    asked = data.draw(st.integers(0, n - 1).filter(lambda k: k != j))
    assert not merkle.verify(leaves[j], merkle.proof(leaves, j), root, asked, n)


def test_build_and_load_transcript(honest_run):  # noqa: F811
    store, run = honest_run
    cid, t = transcript.build(store, run)
    assert transcript.load(store, cid) == t
    log = [json.loads(l)["state_hash"] for l in (run / "steps.jsonl").read_text().splitlines()]
    assert t["state_hashes"] == log and t["root"] == merkle_root(transcript.run_leaves(run))
    assert t["root"] == merkle_root(transcript.chain_leaves(t["initial_state_hash"], log))
    assert set(t["checkpoints"]) == {"0", "2", "4", "6"}
    assert store.kind(t["checkpoints"]["2"]) == "dir"
    forged = dict(t, state_hashes=t["state_hashes"][:-1] + ["ab" * 32])
    bad = store.put_bytes(transcript.canonical_json(forged))
    with pytest.raises(transcript.TranscriptError, match="root does not match"):
        transcript.load(store, bad)


def test_transcript_cli(honest_run, bitswarm_home):  # noqa: F811
    store, run = honest_run
    bitswarm_home.mkdir(parents=True, exist_ok=True)
    (bitswarm_home / "store").symlink_to(store.root)
    r = runner.invoke(app, ["verify", "transcript", str(run), "--json"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["steps"] == 6 and res["checkpoints"] == 4 and res["cid"].startswith("sha256:")
