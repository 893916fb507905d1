"""Eval disputes: the same game as training and inference, the score inside the last leaf."""

import json

import pytest
from typer.testing import CliRunner

from bitswarm.cli.main import app
from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import prepare
from bitswarm.verify import evaluation
from bitswarm.verify.adversary import Adversary

runner = CliRunner()
BATCHES = 5


@pytest.fixture(scope="module")
def evals(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=BATCHES).model_copy(update={"seq_len": 12, "global_batch": 2})
    root = tmp_path_factory.mktemp("eval")
    make = lambda: prepare(store, spec)  # noqa: E731
    evaluation.run(make(), spec.model_dump(mode="json"), BATCHES, root / "honest")
    return store, spec, root, make


def test_honest_evals_agree_and_the_score_is_committed(evals, tmp_path):
    store, spec, root, make = evals
    evaluation.run(make(), spec.model_dump(mode="json"), BATCHES, tmp_path / "again")
    assert evaluation.dispute(root / "honest", tmp_path / "again", make)["agree"] is True
    rec = evaluation.load(root / "honest")
    assert rec["score"] == pytest.approx(rec["sums"][-1] / BATCHES)


@pytest.mark.parametrize("adv", ["bitflip@step=2,op=1", "bitflip@step=5,op={last}"])
def test_honest_side_wins_an_eval_dispute(evals, adv):
    store, spec, root, make = evals
    adv = adv.format(last=evaluation.ops_per_batch(make()) - 1)  # the loss sum itself
    a = Adversary.parse(adv)
    cheat = root / adv.replace("@", "-").replace(",", "-").replace("=", "")
    evaluation.run(make(), spec.model_dump(mode="json"), BATCHES, cheat, a)
    assert evaluation.load(cheat)["score"] != evaluation.load(root / "honest")["score"]
    r = evaluation.dispute(root / "honest", cheat, make)
    assert (r["winner"], r["first_divergent_batch"], r["op_index"], r["referee"]) == ("A", a.step - 1, a.op, "op"), r
    assert evaluation.dispute(cheat, root / "honest", make)["winner"] == "B"


def test_a_reported_score_that_the_sums_do_not_give_loses(evals, tmp_path):
    """Editing the running sums (the committed score) without the losses: the last leaf differs,
    and the referee's recomputation of the batch rules."""
    store, spec, root, make = evals
    rec = evaluation.load(root / "honest")
    rec["sums"][-1] += 1.0
    rec["commitments"][-1] = evaluation._link(rec["commitments"][-2], rec["losses"][-1], rec["sums"][-1])
    rec["root"] = evaluation.merkle_root(rec["commitments"])
    (tmp_path / "lie").mkdir()
    (tmp_path / "lie" / "eval.json").write_text(json.dumps(rec))
    r = evaluation.dispute(tmp_path / "lie", root / "honest", make)
    assert (r["winner"], r["first_divergent_batch"], r["op"]) == ("B", BATCHES - 1, "result"), r


def test_eval_cli(evals, bitswarm_home, tmp_path):
    store, spec, root, make = evals
    bitswarm_home.mkdir(parents=True, exist_ok=True)
    (bitswarm_home / "store").symlink_to(store.root)
    f = tmp_path / "spec.json"
    f.write_text(json.dumps(spec.model_dump(mode="json")))
    r = runner.invoke(app, ["eval", "--spec", str(f), "--out", str(tmp_path / "h"), "--batches", "3", "--json"])
    assert r.exit_code == 0, r.stderr
    assert set(json.loads(r.stdout)) == {"score", "batches", "root"}
    r = runner.invoke(app, ["eval", "--spec", str(f), "--out", str(tmp_path / "c"), "--batches", "3",
                            "--adversary", "bitflip@step=2,op=1", "--json"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["dispute", str(tmp_path / "h"), str(tmp_path / "c"), "--json"])
    assert r.exit_code == 0, r.stderr
    assert (json.loads(r.stdout)["winner"], json.loads(r.stdout)["first_divergent_batch"]) == ("A", 1)
    r = runner.invoke(app, ["eval", "--spec", str(f), "--out", str(tmp_path / "x"), "--batches", "3",
                            "--adversary", "bitflip@step=9", "--json"])
    assert r.exit_code == 1 and "acts at batch 9, but the job has 3 batch" in json.loads(r.stdout)["error"]
