"""A policy (repro.policy) is trained as an ordinary job: same bits everywhere, provenance, disputes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save

from bitswarm.jobs.datasets import DatasetError
from bitswarm.jobs.spec import SpecError, parse_spec
from bitswarm.jobs.train_job import JobError, model_from_run, prepare, run_training
from bitswarm.models.policy import PolicyModelError, dataset_metadata, init_policy, load_policy
from bitswarm.repro.policy import IGNORE, Head, PolicyConfig
from bitswarm.store import BlobStore
from bitswarm.verify.dispute import dispute

CFG = PolicyConfig(features=120, active=9, hidden=16, heads=(Head("action", 1, 30), Head("goal", 6, 4)))


def _dataset(store: BlobStore, n: int = 40, **override) -> str:
    rng = np.random.default_rng(5)
    goal = rng.integers(0, 4, (n, 6)).astype(np.int32)
    goal[::7] = IGNORE
    t = {"inputs": rng.integers(-1, CFG.features, (n, CFG.active)).astype(np.int32),
         "targets.action": rng.integers(0, 30, (n, 1)).astype(np.int32), "targets.goal": goal} | override
    return store.put_bytes(save(t, metadata=dataset_metadata({"episodes": ["sha256:" + "ab" * 32], "format": "x"})))


def _spec(model: str, data: str, **kw):
    return parse_spec({"model_kind": "policy", "model": model, "loss": "bc", "steps": 4, "global_batch": 8,
                       "dataset": {"kind": "tensors", "cid": data}, "lr": {"peak": 0.01},
                       "checkpoint_every": 2} | kw)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    store = BlobStore(tmp_path_factory.mktemp("policy-store"))
    return store, init_policy(store, CFG, 0), _dataset(store)


def test_same_state_hash_across_micro_batches_and_threads(setup, tmp_path):
    store, model, data = setup
    spec = _spec(model, data)
    a = run_training(store, spec, tmp_path / "a")
    b = run_training(store, spec, tmp_path / "b", micro_batch=2, threads=1)
    c = run_training(store, spec, tmp_path / "c", backend="reference", micro_batch=4)
    assert a["final_state_hash"] == b["final_state_hash"] == c["final_state_hash"]
    assert a["step_hashes_root"] == b["step_hashes_root"] == c["step_hashes_root"]


def test_trained_policy_names_its_data_and_run(setup, tmp_path):
    store, model, data = setup
    spec = _spec(model, data)
    res = run_training(store, spec, tmp_path / "run")
    out = model_from_run(store, tmp_path / "run")
    cfg, params, prov = load_policy(store, out["model"])
    assert cfg == CFG and out["dataset"] == data
    assert prov["base_model"] == model and prov["dataset"] == data
    assert prov["final_state_hash"] == res["final_state_hash"]
    assert prov["dataset_metadata"] == {"episodes": ["sha256:" + "ab" * 32], "format": "x"}
    assert not np.array_equal(params["w_in"], load_policy(store, model)[1]["w_in"])


def test_a_cheating_policy_run_loses_its_dispute(setup, tmp_path):
    store, model, data = setup
    spec = _spec(model, data)
    run_training(store, spec, tmp_path / "honest")
    run_training(store, spec, tmp_path / "cheat", adversary="bitflip@step=3,op=5")
    r = dispute(tmp_path / "cheat", tmp_path / "honest", lambda: prepare(store, spec))
    assert (r["winner"], r["first_divergent_step"], r["op_index"]) == ("B", 3, 5)


def test_specs_that_mix_kinds_are_refused(setup):
    store, model, data = setup
    with pytest.raises(SpecError, match="model_kind 'policy' trains with loss 'bc'"):
        _spec(model, data, loss="lm")
    with pytest.raises(SpecError, match="are for model_kind 'policy'"):
        parse_spec({"model": model, "loss": "bc", "steps": 1, "global_batch": 1,
                    "dataset": {"kind": "tensors", "cid": data}})


def test_bad_models_and_datasets_are_refused(setup, tmp_path):
    store, model, data = setup
    with pytest.raises(JobError, match="is not a policy"):
        prepare(store, _spec(store.put_dir(_llama_like(tmp_path)), data))
    bad = _dataset(store, **{"targets.goal": np.full((40, 6), 9, np.int32)})
    with pytest.raises(DatasetError, match="must lie in 0..3"):
        prepare(store, _spec(model, bad))
    with pytest.raises(DatasetError, match="not a safetensors"):
        prepare(store, _spec(model, store.put_bytes(b"not tensors")))
    with pytest.raises(PolicyModelError, match="single file"):
        load_policy(store, data)


def _llama_like(tmp_path):
    d = tmp_path / "llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return d
