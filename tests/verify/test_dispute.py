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
