"""`verify replay`: honest runs check out; a tampered log, checkpoint or spec is caught where it acts."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from bitswarm.cli.main import app
from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import load_run_spec, prepare, run_training
from bitswarm.verify.replay import ReplayError, replay

runner = CliRunner()


@pytest.fixture(scope="module")
def honest_run(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=6).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
    run = tmp_path_factory.mktemp("run") / "r"
    run_training(store, spec, run, micro_batch=1)
    return store, run


def _replay(store, run, **kw):
    return replay(run, prepare(store, load_run_spec(run)), **kw)


def _copy(run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def test_honest_run_replays(honest_run):
    store, run = honest_run
    assert _replay(store, run).as_dict() == {"ok": True, "first_mismatch_step": None, "steps_checked": 6}
    assert _replay(store, run, start=3, stop=4).steps_checked == 2
    sampled = _replay(store, run, sample=2, seed=1)
    assert sampled.ok and sampled.steps_checked == 2


def test_tampered_log_is_caught_at_its_step(honest_run, tmp_path):
    store, run = honest_run
    run = _copy(run, tmp_path)
    rows = [json.loads(l) for l in (run / "steps.jsonl").read_text().splitlines()]
    rows[4]["state_hash"] = "00" * 32  # step 5
    (run / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _replay(store, run)
    assert (result.ok, result.first_mismatch_step) == (False, 5)


def test_damaged_checkpoint_is_caught(honest_run, tmp_path):
    store, run = honest_run
    run = _copy(run, tmp_path)
    f = run / "checkpoints" / "step-00000002" / "state.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x40
    f.write_bytes(bytes(data))
    result = _replay(store, run, start=3, stop=4)
    assert (result.ok, result.first_mismatch_step) == (False, 2)


def test_work_done_under_another_spec_is_caught(tiny_model_store, honest_run, tmp_path):
    store, run = honest_run
    cheat = tmp_path / "cheat"
    spec = load_run_spec(run)
    other = spec.model_copy(update={"lr": spec.lr.model_copy(update={"peak": spec.lr.peak * 2})})
    run_training(store, other, cheat)
    (cheat / "spec.json").write_text((run / "spec.json").read_text())  # claims the honest spec
    result = _replay(store, cheat)
    assert (result.ok, result.first_mismatch_step) == (False, 1)


def test_bad_windows(honest_run):
    store, run = honest_run
    with pytest.raises(ReplayError, match="--from"):
        _replay(store, run, start=4, stop=9)


def test_cli_json_and_exit_codes(honest_run, tmp_path, bitswarm_home):
    store, run = honest_run
    (bitswarm_home).mkdir(parents=True, exist_ok=True)
    (bitswarm_home / "store").symlink_to(store.root)
    r = runner.invoke(app, ["verify", "replay", str(run), "--from", "5", "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "first_mismatch_step": None, "steps_checked": 2}
    bad = _copy(run, tmp_path)
    rows = (bad / "steps.jsonl").read_text().splitlines()
    rows[5] = rows[5].replace(json.loads(rows[5])["state_hash"], "11" * 32)
    (bad / "steps.jsonl").write_text("\n".join(rows) + "\n")
    r = runner.invoke(app, ["verify", "replay", str(bad), "--sample", "6", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["first_mismatch_step"] == 6
    r = runner.invoke(app, ["verify", "replay", str(tmp_path), "--json"])
    assert r.exit_code == 1 and "holds no training run" in json.loads(r.stdout)["error"]
