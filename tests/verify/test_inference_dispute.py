"""Inference disputes: bisection over tokens, then over that token's ops, then the referee."""

import json

import pytest
from typer.testing import CliRunner

from bitswarm.cli.main import app
from bitswarm.models.generate import load
from bitswarm.verify import inference
from bitswarm.verify.adversary import Adversary

runner = CliRunner()
JOB = {"prompt_ids": [1, 30, 40, 50, 7], "seed": 5, "request_id": 9, "temperature": 0.8, "top_p": 0.9, "max_new_tokens": 10}


@pytest.fixture(scope="module")
def records(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    root = tmp_path_factory.mktemp("infer")
    job = {"model": cid, **JOB}
    make = lambda: load(store, cid)[0]  # noqa: E731
    inference.run(make(), job, root / "honest")
    return store, cid, root, job, make


@pytest.mark.parametrize("adv, referee", [("bitflip@step=4,op=30", "op"), ("token@step=7", "step"), ("bitflip@step=1,op=3", "op")])
def test_honest_side_wins_at_the_token_and_op(records, adv, referee):
    store, cid, root, job, make = records
    a = Adversary.parse(adv)
    cheat = root / adv.replace("@", "-").replace(",", "-").replace("=", "")
    inference.run(make(), job, cheat, a)
    r = inference.dispute(root / "honest", cheat, make)
    assert (r["winner"], r["first_divergent_token"], r["referee"]) == ("A", a.step - 1, referee), r
    if adv.startswith("bitflip"):
        assert r["op_index"] == a.op
    assert inference.dispute(cheat, root / "honest", make)["winner"] == "B"


def test_honest_records_agree(records, tmp_path):
    store, cid, root, job, make = records
    inference.run(make(), job, tmp_path / "again")
    assert inference.dispute(root / "honest", tmp_path / "again", make)["agree"] is True
    assert json.loads((tmp_path / "again" / "inference.json").read_text())["tokens"] == \
        json.loads((root / "honest" / "inference.json").read_text())["tokens"]


def test_infer_and_dispute_cli(records, tmp_path, bitswarm_home):
    store, cid, root, job, make = records
    bitswarm_home.mkdir(parents=True, exist_ok=True)
    (bitswarm_home / "store").symlink_to(store.root)
    base = ["infer", "--model", cid, "--prompt", "hi", "--max-new-tokens", "6", "--temperature", "0.7", "--seed", "3", "--json"]
    r = runner.invoke(app, base + ["--out", str(tmp_path / "h")])
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout)["tokens"]) == 6
    r = runner.invoke(app, base + ["--out", str(tmp_path / "c"), "--adversary", "token@step=3"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["dispute", str(tmp_path / "h"), str(tmp_path / "c"), "--json"])
    res = json.loads(r.stdout)
    assert (res["winner"], res["first_divergent_token"]) == ("A", 2)


@pytest.mark.parametrize("tactic, why", [("lie", "proof"), ("other_index", "proof"), ("forge", "proof"), ("silent", "deadline")])
def test_inference_answers_are_proof_checked(records, tactic, why):
    """Class 10: the old inference game computed the bisection from both records itself and asked
    no side for anything; now every answer is a query a cheating side may lie in, checked
    against its own committed root by the same arbiter as training."""
    store, cid, root, job, make = records
    cheat = root / "bitflip-step4-op30"
    if not cheat.exists():
        inference.run(make(), job, cheat, Adversary.parse("bitflip@step=4,op=30"))
    lying = lambda kind, index: tactic if kind == "leaf" and index != job["max_new_tokens"] - 1 else "honest"  # noqa: E731
    r = inference.dispute(root / "honest", cheat, make, tactics=(None, lying))
    assert (r["winner"], r["referee"]) == ("A", why), r
    r = inference.dispute(cheat, root / "honest", make, tactics=(lying, None))
    assert (r["winner"], r["referee"]) == ("B", why), r


def test_every_token_traces_the_same_number_of_ops(records):
    store, cid, root, job, make = records
    counts = {len(inference.traced_token(make(), job, [7] * 10, j, None)[0].records) for j in range(job["max_new_tokens"])}
    assert counts == {inference.ops_per_token(make(), job)}
