"""Job documents and each role's work on a train and an infer job (jobs.market), in process.

The node tests run the same functions across real processes; here each is pinned down alone:
a document is checked, a solver's result audits, a cheat's result fails the audit and the
verifier's own run wins the game, with the referee ruling from the solver's published data or,
when that is withheld, from its own recomputation.
"""

from __future__ import annotations

import json

import pytest

from bitswarm.errors import BitswarmError
from bitswarm.jobs import market
from bitswarm.jobs.onchain import last_leaf
from bitswarm.jobs.spec import example_spec
from bitswarm.verify.game import play

STEPS = 5


@pytest.fixture(scope="module")
def jobs(tiny_model_store):
    store, model = tiny_model_store
    spec = example_spec(model, steps=STEPS).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
    train = market.load_doc(store, market.store_doc(store, market.make_doc(store, "train", spec.model_dump(mode="json"))))
    infer = market.load_doc(store, market.store_doc(store, market.make_doc(
        store, "infer", {"model": model, "prompt": "Add 2 and 3.", "max_new_tokens": 5})))
    return store, {"train": train, "infer": infer}


def _fetch_nothing(cid):  # everything is already in the one store
    return None


def _withheld(cid):
    raise market.MarketError(f"no provider serves {cid}")


@pytest.mark.parametrize("kind,cheat", [("train", "bitflip@step=3,op=40"), ("infer", "bitflip@step=2,op=7")])
def test_a_cheat_fails_the_audit_and_the_verifiers_run_wins_whoever_supplies_the_state(jobs, tmp_path, kind, cheat):
    store, docs = jobs
    doc = docs[kind]
    honest = market.solve(store, doc, tmp_path / "honest")
    bad = market.solve(store, doc, tmp_path / "cheat", cheat)
    leaf = last_leaf(bad.party)[0]
    ok = market.audit(store, doc, honest.result_cid, _fetch_nothing, tmp_path / "v0", root=honest.party.root,
                      last_leaf=last_leaf(honest.party)[0], audit_leaf=1, samples=STEPS, seed=3)
    assert ok.ok and ok.attestation and ok.party is None
    audit = market.audit(store, doc, bad.result_cid, _fetch_nothing, tmp_path / "v1", root=bad.party.root,
                         last_leaf=leaf, audit_leaf=None, samples=STEPS, seed=3)
    assert not audit.ok and audit.party is not None and "reproduce" in audit.why
    assert audit.party.root == honest.party.root  # the verifier's own run is the honest result
    n = market.plan(store, doc)[1]
    for own in (False, True):
        ref, _ = market.referee(store, doc, bad.result_cid, _fetch_nothing, tmp_path / f"r{own}", 0, own=own)
        out = play(bad.party, audit.party, ref, n)
        assert out.winner == "challenger", (own, out)


def test_a_referee_whose_solver_withholds_its_data_rules_from_its_own_run(jobs, tmp_path):
    store, docs = jobs
    with pytest.raises(BitswarmError, match="no provider"):
        market.referee(store, docs["train"], "sha256:" + "ab" * 32, _withheld, tmp_path / "r", 2)
    ref, sides = market.referee(store, docs["train"], None, _withheld, tmp_path / "r", 2, own=True)
    assert sides["solver"].root == market.solve(store, docs["train"], tmp_path / "honest").party.root


@pytest.mark.parametrize("kind,spec,needle", [
    ("train", {"model": "x"}, "model"),
    ("infer", {"model": "sha256:" + "00" * 32, "prompt": ""}, "prompt"),
    ("infer", {"model": "sha256:" + "00" * 32, "prompt": "hi", "top_p": 1.5}, "top_p"),
    ("sing", {}, "kind must be one of"),
])
def test_bad_job_documents_are_refused_naming_what_is_wrong(jobs, kind, spec, needle):
    store, _ = jobs
    with pytest.raises(market.MarketError, match=needle):
        market.make_doc(store, kind, spec)


def test_a_stored_document_that_is_not_one_is_refused(jobs):
    store, docs = jobs
    for bad in (b"not json", json.dumps({"version": 9}).encode(),
                market.canonical({**docs["train"], "model_bytes": -1})):
        with pytest.raises(market.MarketError):
            market.load_doc(store, store.put_bytes(bad))
