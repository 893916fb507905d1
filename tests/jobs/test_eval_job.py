"""Eval jobs on the market: the document fixes the items, the solver's tokens are audited and
disputed like inference, and scores that the tokens do not give are refused."""

import json
import math

import pytest

from bitswarm.jobs import eval_job, market, tasks
from bitswarm.models.generate import load_tokenizer
from bitswarm.store import BlobStore
from bitswarm.verify import attest, task_eval
from bitswarm.verify.game import Party, play

ITEMS, N = 4, 3
SPEC = {"tasks": "tiny", "items": ITEMS, "max_new_tokens": N, "temperature": 0.7, "seed": 3}


def no_fetch(cid: str) -> None:
    """Everything is in the local store already."""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Its own store (results are added to it), an eval document and the honest solver's result."""
    from bitswarm.models.importer import init_model

    root = tmp_path_factory.mktemp("eval-job")
    store = BlobStore(root / "store")
    cid = init_model(store, "tiny", 0)
    doc = market.make_doc(store, "eval", {"model": cid, **SPEC})
    return store, doc, market.solve(store, doc, root / "solver"), root


def _audit(store, doc, result_cid, out, party, **kw):
    kw = {"audit_leaf": None, "samples": ITEMS * N, "seed": 1, **kw}
    return market.audit(store, doc, result_cid, no_fetch, out, root=party.root, last_leaf=party.log[-1], **kw)


def test_document_fixes_every_item(job):
    store, doc, solved, root = job
    spec = doc["spec"]
    refs = eval_job.refs_of(spec)
    mix = tasks.TaskMix(tasks.PRESETS["tiny"], size=eval_job.MIX_SIZE)
    assert refs == mix.sample(SPEC["seed"], 0, eval_job.SAMPLE_PEER, ITEMS)
    tok = load_tokenizer(store, spec["model"])
    assert [tok.decode(p) for p in spec["prompt_ids"]] == [
        f"<|im_start|>user\n{mix.prompt(r)}<|im_end|>\n<|im_start|>assistant\n" for r in refs]
    assert market.load_doc(store, market.store_doc(store, doc)) == doc
    assert market.plan(store, doc) == (ITEMS * N, solved.party.n)


@pytest.mark.parametrize("change, field", [({"tasks": "nope"}, "unknown task"), ({"items": 0}, "items"),
                                           ({"items": 1001}, "items"), ({"extra": 1}, "extra"),
                                           ({"weights": [1.0, 2.0]}, "one per task"),
                                           ({"weights": [-1.0]}, "weights"), ({"weights": [0.0]}, "not all zero"), ({"items": "4"}, "items")])
def test_bad_specs_are_refused_naming_the_field(job, change, field):
    store, doc, solved, root = job
    with pytest.raises(market.MarketError, match=field):
        market.make_doc(store, "eval", {"model": doc["spec"]["model"], **SPEC, **change})


def test_weights_choose_the_tasks(job):
    store, doc, solved, root = job
    spec = {"model": doc["spec"]["model"], **SPEC, "tasks": "tiny_sum,tiny_count", "weights": [0.0, 1.0]}
    assert {r["dataset"] for r in market.make_doc(store, "eval", spec)["spec"]["refs"]} == {"tiny_count"}


def test_document_without_prompt_ids_is_refused(job):
    store, doc, solved, root = job
    bare = {**doc, "spec": {**doc["spec"], "prompt_ids": None}}
    with pytest.raises(market.MarketError, match="prompt token ids"):
        market.load_doc(store, market.store_doc(store, bare))


def test_result_holds_the_record_and_the_scores_its_tokens_give(job):
    store, doc, solved, root = job
    res = json.loads(store.read_bytes(solved.result_cid))
    assert res["kind"] == task_eval.KIND and res["commitments"] == solved.party.log
    tok, mix = load_tokenizer(store, doc["spec"]["model"]), eval_job.mix_of(doc["spec"], weighted=False)
    for item, ref, toks in zip(res["scores"]["items"], eval_job.refs_of(doc["spec"]), res["tokens"]):
        assert item["completion"] == tok.decode(toks, skip_special_tokens=True)
        assert item["answer"] == tasks.extract_answer(item["completion"])
        assert item["score"] == tasks.score(ref, item["completion"], mix)
    assert res["scores"]["mean"] == math.fsum(i["score"] for i in res["scores"]["items"]) / ITEMS
    assert market.solve(store, doc, root / "solver").result_cid == solved.result_cid  # a rerun resumes


def test_honest_result_audits_ok_with_the_solvers_attestation(job, tmp_path):
    store, doc, solved, root = job
    a = _audit(store, doc, solved.result_cid, tmp_path, solved.party, audit_leaf=5, samples=2)
    assert a.ok and a.party is None and 5 in a.checked, a.why
    assert a.attestation == attest.attestation(solved.party, 5)


@pytest.mark.parametrize("adv, leaf", [("token@step=6", 5), ("bitflip@step=10,op=30", 9)])
def test_cheating_solver_fails_the_audit_and_loses_the_dispute(job, tmp_path, adv, leaf):
    store, doc, solved, root = job
    cheat = market.solve(store, doc, tmp_path / "cheat", adversary=adv)
    a = _audit(store, doc, cheat.result_cid, tmp_path / "audit", cheat.party)
    assert (a.ok, a.mismatch, a.attestation) == (False, leaf, None)
    assert f"item {leaf // N}" in a.why
    assert a.party.name == "challenger" and a.party.root == solved.party.root  # its own honest run
    ref, _ = market.referee(store, doc, cheat.result_cid, no_fetch, tmp_path / "referee", leaf)
    out = play(cheat.party, a.party, ref, a.party.n)
    assert (out.winner, out.leaf) == ("challenger", leaf)
    # and the other way round: the honest solver against a cheating challenger
    ref, _ = market.referee(store, doc, solved.result_cid, no_fetch, tmp_path / "referee2", leaf)
    challenger = Party("challenger", cheat.party.comp, cheat.party.n, cheat.party.tactic)
    assert play(solved.party, challenger, ref, solved.party.n).winner == "solver"


@pytest.mark.parametrize("field", ["mean", "item"])
def test_misreported_scores_fail_the_audit_without_a_challenge(job, tmp_path, field):
    store, doc, solved, root = job
    res = json.loads(store.read_bytes(solved.result_cid))
    if field == "mean":
        res["scores"]["mean"] = res["scores"]["mean"] + 0.5
    else:
        res["scores"]["items"][2]["score"] = 1.0 - res["scores"]["items"][2]["score"]
    forged = store.put_bytes(json.dumps(res).encode(), label="forged eval result")
    a = _audit(store, doc, forged, tmp_path, solved.party, audit_leaf=1)
    assert (a.ok, a.party, a.attestation, a.mismatch) == (False, None, None, None)
    assert ("reported mean score" if field == "mean" else "item 2's reported score") in a.why, a.why
    assert "not disputable" in a.why
