"""Checkpoints stay within their disk budget, the initial one is written by reference, and
replays, resumes and disputes still rebuild every state."""

import pytest

from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import prepare, run_training
from bitswarm.repro import train as repro_train
from bitswarm.verify.replay import replay
from bitswarm.verify.trace import state_at


@pytest.fixture(scope="module")
def spec(tiny_model_store):
    _, cid = tiny_model_store
    return example_spec(cid, steps=5).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 1})


def test_a_budget_keeps_the_newest_checkpoint_and_the_initial_one_by_reference(tiny_model_store, spec, tmp_path):
    store, _ = tiny_model_store
    full = run_training(store, spec, tmp_path / "all", checkpoint_budget=None)
    lean = run_training(store, spec, tmp_path / "lean", checkpoint_budget=0)
    assert lean == full  # what is kept on disk never changes the bits
    kept = repro_train.checkpoints(tmp_path / "lean")
    assert sorted(kept) == [0, 5] and sorted(repro_train.checkpoints(tmp_path / "all")) == [0, 1, 2, 3, 4, 5]
    assert not (kept[0] / "state.safetensors").exists()  # the initial state: its hash, not its 1.6 GB
    assert repro_train.checkpoint_meta(kept[0])["initial"] is True

    one = sum(f.stat().st_size for f in kept[5].iterdir())
    mid = run_training(store, spec, tmp_path / "mid", checkpoint_budget=2 * one + 1000)
    assert sorted(repro_train.checkpoints(tmp_path / "mid")) == [0, 4, 5] and mid == full

    # Every step re-executes from what is left: step 0 rebuilt from the spec, or step 4.
    p = prepare(store, spec)
    assert replay(tmp_path / "lean", p).ok and replay(tmp_path / "lean", p).steps_checked == 5
    assert state_at(tmp_path / "lean", p, 3).hash() == repro_train.read_step_log(tmp_path / "all")[2]["state_hash"]


def test_a_run_resumes_from_an_initial_checkpoint_by_reference(tiny_model_store, spec, tmp_path):
    store, _ = tiny_model_store
    whole = run_training(store, spec, tmp_path / "whole", checkpoint_budget=0)
    run = tmp_path / "cut"
    run_training(store, spec.model_copy(update={"steps": 5}), run, checkpoint_budget=0)
    for s, d in repro_train.checkpoints(run).items():  # a crash before the first checkpoint after step 0
        if s:
            import shutil

            shutil.rmtree(d)
    (run / "result.json").unlink()
    (run / "steps.jsonl").write_text("")
    assert run_training(store, spec, run, resume=True, checkpoint_budget=0) == whole


def test_an_initial_checkpoint_by_reference_must_match_what_the_spec_rebuilds(tiny_model_store, spec, tmp_path):
    store, _ = tiny_model_store
    run_training(store, spec, tmp_path / "r", checkpoint_budget=0)
    ck0 = repro_train.checkpoints(tmp_path / "r")[0]
    with pytest.raises(repro_train.TrainError, match="by reference"):
        repro_train.TrainState.load(ck0)
    other = prepare(store, spec.model_copy(update={"seed": spec.seed + 1}))
    with pytest.raises(repro_train.TrainError, match="does not hash"):
        repro_train.TrainState.load(ck0, initial=other.initial_state)
    assert repro_train.TrainState.load(ck0, initial=prepare(store, spec).initial_state).step == 0
