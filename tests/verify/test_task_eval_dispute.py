"""Task-eval disputes: one token chain over every item, bisected to the item's token, then its op."""

import json

import pytest

from bitswarm.models.generate import load
from bitswarm.verify import inference, task_eval
from bitswarm.verify.adversary import Adversary

N = 4  # tokens per item
JOB = {"prompt_ids": [[1, 30, 40, 50, 7], [1, 60, 61], [1, 70, 71, 72, 73, 74, 75]], "seed": 5, "temperature": 0.8,
       "top_p": 0.9, "max_new_tokens": N}


@pytest.fixture(scope="module")
def records(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    root = tmp_path_factory.mktemp("task-eval")
    job = {"model": cid, **JOB}
    make = lambda: load(store, cid)[0]  # noqa: E731
    task_eval.run(make(), job, root / "honest")
    return root, job, make


def _cheat(records, adv: str):
    root, job, make = records
    out = root / adv.replace("@", "-").replace(",", "-").replace("=", "")
    if not out.exists():
        task_eval.run(make(), job, out, Adversary.parse(adv))
    return out


def test_record_is_one_chain_over_every_item(records, tmp_path):
    root, job, make = records
    rec = task_eval.load(root / "honest")
    assert [len(t) for t in rec["tokens"]] == [N] * len(JOB["prompt_ids"])
    assert len(rec["commitments"]) == task_eval.num_leaves(job)
    prev = "00" * 32
    for toks, rows in zip(rec["tokens"], rec["row_hashes"]):
        for t, r in zip(toks, rows):
            prev = inference.commit(prev, t, r)
    assert prev == rec["commitments"][-1]
    # item i is inference of its prompt with request id i: the same tokens, token for token
    inference.run(make(), {"model": job["model"], **task_eval.item_job(job, 1)}, tmp_path / "item1")
    assert json.loads((tmp_path / "item1" / "inference.json").read_text())["tokens"] == rec["tokens"][1]


def test_honest_records_agree(records, tmp_path):
    root, job, make = records
    task_eval.run(make(), job, tmp_path / "again")
    r = task_eval.dispute(root / "honest", tmp_path / "again", make)
    assert r["agree"] is True and r["first_divergent_token"] is None


@pytest.mark.parametrize("adv, referee", [("bitflip@step=6,op=30", "op"), ("token@step=11", "step"),
                                          ("bitflip@step=1,op=3", "op")])
def test_honest_side_wins_at_the_item_token_and_op(records, adv, referee):
    root, job, make = records
    a = Adversary.parse(adv)
    cheat = _cheat(records, adv)
    r = task_eval.dispute(root / "honest", cheat, make)  # the solver honest, the challenger cheats
    assert (r["winner"], r["first_divergent_token"], r["referee"]) == ("A", a.step - 1, referee), r
    assert (r["first_divergent_item"], r["item_token"]) == divmod(a.step - 1, N)
    if adv.startswith("bitflip"):
        assert r["op_index"] == a.op
    r = task_eval.dispute(cheat, root / "honest", make)  # the solver cheats
    assert (r["winner"], r["first_divergent_token"]) == ("B", a.step - 1), r


def test_answers_are_proof_checked(records):
    root, job, make = records
    cheat = _cheat(records, "bitflip@step=6,op=30")
    last = task_eval.num_leaves(job) - 1
    lying = lambda kind, index: "lie" if kind == "leaf" and index != last else "honest"  # noqa: E731
    r = task_eval.dispute(root / "honest", cheat, make, tactics=(None, lying))
    assert (r["winner"], r["referee"]) == ("A", "proof"), r


def test_every_leaf_traces_the_same_number_of_ops(records):
    root, job, make = records
    comp = task_eval.TaskEvalRecord(root / "honest", make)
    n = task_eval.ops_per_token(comp.model, job)
    assert {len(comp.trace(k).records) for k in range(task_eval.num_leaves(job))} == {n}


def test_bad_adversary_and_malformed_records_are_refused(records, tmp_path):
    root, job, make = records
    with pytest.raises(task_eval.TaskEvalError, match="has 12 tokens"):
        task_eval.run(make(), job, tmp_path / "late", Adversary.parse("token@step=13"))
    rec = json.loads((root / "honest" / task_eval.FILE).read_text())
    rec["tokens"][2] = rec["tokens"][2][:-1]
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / task_eval.FILE).write_text(json.dumps(rec))
    with pytest.raises(task_eval.TaskEvalError, match="tokens must hold 4 entries"):
        task_eval.load(tmp_path / "short")
