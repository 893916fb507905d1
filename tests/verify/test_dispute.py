"""The dispute game: the honest side wins against every adversary, at the step and op it acted."""

import json

import pytest
from typer.testing import CliRunner

from bitswarm.cli.main import app
from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import prepare, run_training
from bitswarm.verify.adversary import Adversary, AdversaryError
from bitswarm.verify.dispute import dispute

runner = CliRunner()
STEPS = 6


@pytest.fixture(scope="module")
def arena(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=STEPS).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
    root = tmp_path_factory.mktemp("arena")
    run_training(store, spec, root / "honest")
    return store, spec, root


def _play(arena, a, b):
    store, spec, _ = arena
    return dispute(a, b, lambda: prepare(store, spec))


@pytest.mark.parametrize("adv, step", [
    ("bitflip@step={k},op=40", 1), ("bitflip@step={k},op=40", 5),
    ("data@step={k}", 2), ("data@step={k}", 6),
    ("skip@step={k}", 3), ("skip@step={k}", 6),
    ("lr@step={k}", 1), ("lr@step={k}", 4),
])
def test_honest_side_wins_where_the_adversary_acted(arena, adv, step):
    store, spec, root = arena
    name = adv.format(k=step)
    cheat = root / name.replace("@", "-").replace(",", "-").replace("=", "")
    if not cheat.exists():
        run_training(store, spec, cheat, adversary=name)
    for honest_side, a, b in (("A", root / "honest", cheat), ("B", cheat, root / "honest")):
        r = _play(arena, a, b)
        assert r["agree"] is False and r["winner"] == honest_side, r
        assert r["first_divergent_step"] == step
        assert r["rounds"] <= r["round_bound"]
    if name.startswith("bitflip"):
        assert (r["op_index"], r["referee"]) == (40, "op")
    if name.startswith("lr"):
        assert r["op"] == "adamw_step_"
    if name.startswith("data") or name.startswith("skip"):
        assert (r["op_index"], r["op"]) == (0, "embedding_fwd")


@pytest.mark.parametrize("name, referee", [("inconsistent@step=2", "proof"), ("silent@step=2", "deadline")])
def test_protocol_cheats_lose(arena, name, referee):
    store, spec, root = arena
    cheat = root / name.split("@")[0]
    run_training(store, spec, cheat, adversary=name)
    r = _play(arena, cheat, root / "honest")
    assert (r["winner"], r["referee"]) == ("B", referee)


def test_honest_runs_agree_whatever_threads_or_micro_batch(arena):
    store, spec, root = arena
    other = root / "honest-mb1"
    run_training(store, spec, other, micro_batch=1, threads=1)
    r = _play(arena, root / "honest", other)
    assert r["agree"] is True and r["winner"] is None


def test_adversary_names_are_validated():
    assert Adversary.parse("bitflip@step=3,op=7") == Adversary("bitflip", 3, 7)
    for bad in ("nonsense", "lr@step=0", "lr@when=3", "bitflip@op=x"):
        with pytest.raises(AdversaryError):
            Adversary.parse(bad)


def test_dispute_cli(arena, bitswarm_home, tmp_path):
    store, spec, root = arena
    bitswarm_home.mkdir(parents=True, exist_ok=True)
    (bitswarm_home / "store").symlink_to(store.root)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.model_dump(mode="json")))
    r = runner.invoke(app, ["train", "--spec", str(spec_file), "--out", str(tmp_path / "cheat"),
                            "--adversary", "bitflip@step=4,op=12", "--json"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["dispute", str(root / "honest"), str(tmp_path / "cheat"), "--json"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert {"agree", "first_divergent_step", "op", "op_index", "rounds", "winner", "referee_seconds", "step_seconds"} <= set(res)
    assert (res["winner"], res["first_divergent_step"], res["op_index"]) == ("A", 4, 12)
    r = runner.invoke(app, ["train", "--spec", str(spec_file), "--out", str(tmp_path / "x"), "--adversary", "evil", "--json"])
    assert r.exit_code == 1 and "unknown adversary" in json.loads(r.stdout)["error"]


@pytest.mark.parametrize("adv", ["bitflip@step=2,op=77", "lr@step=3"])
def test_a_second_model_size(adv, tmp_path):
    from bitswarm.models.importer import init_model
    from bitswarm.store import BlobStore

    store = BlobStore(tmp_path / "store")
    cid = init_model(store, "small", 1)
    spec = example_spec(cid, steps=4).model_copy(update={"seq_len": 12, "global_batch": 2, "checkpoint_every": 2})
    run_training(store, spec, tmp_path / "honest")
    run_training(store, spec, tmp_path / "cheat", adversary=adv)
    r = dispute(tmp_path / "cheat", tmp_path / "honest", lambda: prepare(store, spec))
    assert (r["winner"], r["first_divergent_step"]) == ("B", Adversary.parse(adv).step)
    if adv.startswith("bitflip"):
        assert (r["op_index"], r["referee"]) == (77, "op")


# -- issue 10: cheaters who do not behave like our own adversaries ------------------------------


def _cheat(arena, name):
    store, spec, root = arena
    cheat = root / name.replace("@", "-").replace(",", "-").replace("=", "")
    if not cheat.exists():
        run_training(store, spec, cheat, adversary=name)
    return cheat


def _both_ways(arena, cheat):
    """The honest run wins as solver (A) and as challenger (B)."""
    _, _, root = arena
    results = []
    for honest_side, a, b in (("A", root / "honest", cheat), ("B", cheat, root / "honest")):
        r = _play(arena, a, b)
        assert r["agree"] is False and r["winner"] == honest_side, r
        results.append(r)
    return results


def test_invented_step_hashes_lose_even_with_an_honest_trace(arena, tmp_path):
    """Class 1, the raw attack: copy an honest run and invent the logged hashes from step 3 on.
    The trace of step 3 is honest, so no op differs; the old game returned winner None."""
    import shutil

    _, _, root = arena
    lazy = tmp_path / "lazy"
    shutil.copytree(root / "honest", lazy)
    rows = [json.loads(x) for x in (lazy / "steps.jsonl").read_text().splitlines()]
    for r in rows[2:]:
        r["state_hash"] = format(int(r["state_hash"], 16) ^ 0xBAD, "064x")
    (lazy / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in _both_ways(arena, lazy):
        assert r["first_divergent_step"] == 3
        assert r["op_index"] == r["ops_per_step"] and r["referee"] == "step"  # the virtual end: its own leaf


@pytest.mark.parametrize("name", ["lazy@step=2", "tracelie@step=4"])
def test_a_trace_that_does_not_reach_its_own_committed_state_loses(arena, name):
    for r in _both_ways(arena, _cheat(arena, name)):
        assert r["first_divergent_step"] == Adversary.parse(name).step
        assert (r["op_index"], r["op"]) == (r["ops_per_step"], "result")


@pytest.mark.parametrize("name, referee", [("short@step=3", "trace length"), ("long@step=3", "trace length"),
                                           ("wrongindex@step=3", "proof")])
def test_a_trace_of_the_wrong_length_or_a_proof_for_another_op_loses(arena, name, referee):
    for r in _both_ways(arena, _cheat(arena, name)):
        assert r["referee"] == referee and r["first_divergent_step"] == 3


def test_the_reported_loss_is_committed(arena):
    """Class 8: a fault in the last op of a step changes only the loss; the old state hash did
    not cover it, so both runs "agreed"."""
    store, spec, root = arena
    from bitswarm.verify.trace import count_ops

    last = count_ops(prepare(store, spec)) - 1
    cheat = _cheat(arena, f"bitflip@step=5,op={last}")
    honest_log = [json.loads(x) for x in (root / "honest" / "steps.jsonl").read_text().splitlines()]
    cheat_log = [json.loads(x) for x in (cheat / "steps.jsonl").read_text().splitlines()]
    assert honest_log[4]["loss"] != cheat_log[4]["loss"]
    for r in _both_ways(arena, cheat):
        assert (r["first_divergent_step"], r["op_index"], r["referee"]) == (5, last, "op")


def test_every_step_traces_the_same_op_sequence_and_step_1_faults_land_where_named(arena):
    """Class 9: step 1 built the RoPE tables inside the step, so op=I hit op I-1 of the trace."""
    store, spec, root = arena
    from bitswarm.verify.trace import trace_step

    names = [[r["op"] for r in trace_step(root / "honest", prepare(store, spec), t)["records"]] for t in (1, 2, STEPS)]
    assert names[0] == names[1] == names[2]
    for op in (0, 1, 40):
        r = _play(arena, root / "honest", _cheat(arena, f"bitflip@step=1,op={op}"))
        assert (r["winner"], r["first_divergent_step"], r["op_index"]) == ("A", 1, op), r


def test_out_of_range_adversary_parameters_are_errors(arena, tmp_path):
    store, spec, _ = arena
    for bad, says in [("bitflip@step=2,op=999999", "past the last op"), (f"lr@step={STEPS + 1}", "the job has"),
                      ("sybil", "ledger fault"), ("lr@step=2,op=3", "bitflip only")]:
        with pytest.raises(AdversaryError, match=says):
            run_training(store, spec, tmp_path / bad.replace("@", "-"), adversary=bad)
        assert not (tmp_path / bad.replace("@", "-")).exists()
