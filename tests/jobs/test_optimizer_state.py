"""A training spec that starts from a stored AdamW state (`optimizer_state`): continuing a run in
two jobs gives the very bits of one run, and a state that does not fit is refused in words."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save

from bitswarm.jobs.market import inputs
from bitswarm.jobs.spec import SpecError, parse_spec
from bitswarm.jobs.train_job import JobError, prepare, run_training, store_optimizer_state
from bitswarm.models.importer import init_model, store_trained
from bitswarm.repro.train import TrainError, TrainState, latest_checkpoint
from bitswarm.store import BlobStore

ROWS = [
    {"prompt_ids": [5, 6, 7], "completion_ids": [8, 9, 2], "advantage": 1.0},
    {"prompt_ids": [5, 6, 7], "completion_ids": [10, 11], "advantage": -1.0},
    {"prompt_ids": [12, 13], "completion_ids": [14, 2], "advantage": 0.5},
    {"prompt_ids": [12, 13], "completion_ids": [15, 16, 17], "advantage": -0.5},
]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[BlobStore, str]:
    store = BlobStore(tmp_path_factory.mktemp("opt-state") / "store")
    return store, init_model(store, "tiny", 0)


def _spec(store: BlobStore, model: str, rows: list[dict], steps: int, optimizer_state: str | None = None):
    data = store.put_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    return parse_spec({"model": model, "dataset": {"kind": "cid", "cid": data, "order": "sequential"},
                       "loss": "grpo", "seq_len": 8, "steps": steps, "global_batch": 2,
                       "lr": {"peak": 1e-2}, "seed": 3, "optimizer_state": optimizer_state})


def _final(run) -> TrainState:
    return TrainState.load(latest_checkpoint(run))


def test_two_jobs_continuing_the_moments_give_the_bits_of_one_run(base, tmp_path):
    store, model = base
    run_training(store, _spec(store, model, ROWS, 2), tmp_path / "one")
    whole = _final(tmp_path / "one")

    run_training(store, _spec(store, model, ROWS[:2], 1), tmp_path / "first")
    first = _final(tmp_path / "first")
    moments = store_optimizer_state(store, first)
    middle = store_trained(store, model, first.params, label="test")
    run_training(store, _spec(store, middle, ROWS[2:], 1, moments), tmp_path / "second")
    second = _final(tmp_path / "second")

    a, b = whole.tensors(), second.tensors()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert whole.beta1_pow != np.float32(0.9)  # two steps' powers: the second job did not restart them

    # Without the moments, the second job is a different run: the state is part of the spec.
    run_training(store, _spec(store, middle, ROWS[2:], 1), tmp_path / "fresh")
    fresh = _final(tmp_path / "fresh").tensors()
    assert any(fresh[k].tobytes() != b[k].tobytes() for k in b if k.startswith("param."))


def test_a_job_names_its_optimizer_state_among_its_inputs(base):
    store, model = base
    moments = store_optimizer_state(store, prepare(store, _spec(store, model, ROWS, 1)).state)
    spec = _spec(store, model, ROWS, 1, moments).model_dump(mode="json")
    assert inputs({"spec": spec}) == [model, spec["dataset"]["cid"], moments]
    with pytest.raises(SpecError, match="optimizer_state"):
        parse_spec({**spec, "optimizer_state": "moments.safetensors"})


def _corrupt(tensors: dict, how: str) -> dict:
    t = dict(tensors)
    name = next(k for k in t if k.startswith("opt.v."))
    if how == "missing":
        del t[name]
    elif how == "extra":
        t["opt.m.not_a_param"] = np.zeros(3, np.float32)
    elif how == "dtype":
        t[name] = t[name].astype(np.float64)
    elif how == "shape":
        t[name] = np.zeros(t[name].size + 1, np.float32)
    elif how == "nan":
        t[name] = t[name].copy()
        t[name].flat[0] = np.nan
    elif how == "negative":
        t[name] = t[name].copy()
        t[name].flat[0] = -1.0
    elif how == "power":
        t["opt.beta2_pow"] = np.array(1.5, np.float32)
    return t


@pytest.mark.parametrize("how, needle", [
    ("missing", "missing opt.v."), ("extra", "unexpected opt.m.not_a_param"), ("dtype", "float64"),
    ("shape", "this model needs float32"), ("nan", "NaN or an infinity"), ("negative", "negative"),
    ("power", "(0, 1]"),
])
def test_an_optimizer_state_that_does_not_fit_is_refused_in_words(base, how, needle):
    store, model = base
    good = prepare(store, _spec(store, model, ROWS, 1)).state.optimizer_tensors()
    bad = store.put_bytes(save(_corrupt(good, how)))
    with pytest.raises(JobError, match="optimizer_state") as e:
        prepare(store, _spec(store, model, ROWS, 1, bad))
    assert needle in str(e.value)
    with pytest.raises(TrainError):  # the same check guards the state itself
        TrainState(dict(prepare(store, _spec(store, model, ROWS, 1)).state.params), 0).load_optimizer(
            _corrupt(good, how))


def test_a_blob_that_is_not_a_safetensors_file_is_refused(base):
    store, model = base
    junk = store.put_bytes(b"not tensors at all")
    with pytest.raises(JobError, match="not a safetensors file of AdamW moments"):
        prepare(store, _spec(store, model, ROWS, 1, junk))
