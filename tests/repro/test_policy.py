"""The policy network: same bits on every backend, micro-batch split and thread count; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitswarm.repro.backend import get_backend, set_threads
from bitswarm.repro.policy import (
    IGNORE, Head, PolicyBatch, PolicyConfig, PolicyError, PolicyNet, init_params,
)
from bitswarm.repro.train import Hyper, TrainState, train_step

CFG = PolicyConfig(features=300, active=20, hidden=24, heads=(Head("action", 1, 50), Head("goal", 10, 7, 0.5)))
N = 12


def _data(seed: int = 1):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(-1, CFG.features, (N, CFG.active))
    action = rng.integers(0, 50, (N, 1))
    goal = rng.integers(0, 7, (N, 10))
    goal[3] = IGNORE
    goal[5, :4] = IGNORE
    action[7] = IGNORE
    return inputs, {"action": action, "goal": goal}


def _train(backend: str, micro: int, steps: int = 3, threads: int | None = None) -> tuple[str, float]:
    set_threads(threads)
    params = init_params(CFG, 0)
    net = PolicyNet(CFG, params, get_backend(backend))
    state = TrainState(params, 0)
    inputs, targets = _data()
    for _ in range(steps):
        batches = [PolicyBatch(inputs[i : i + micro], {k: v[i : i + micro] for k, v in targets.items()})
                   for i in range(0, N, micro)]
        info = train_step(net, state, batches, Hyper(lr=1e-2))
    return state.hash(), info["loss"]


def test_numba_and_reference_give_the_same_state_hash():
    assert _train("numba", N) == _train("reference", N)


@pytest.mark.parametrize("micro", [1, 3, 4, 6])
def test_micro_batch_split_never_changes_a_bit(micro):
    assert _train("numba", micro) == _train("numba", N)


def test_thread_count_never_changes_a_bit():
    try:
        assert _train("numba", 4, threads=1) == _train("numba", 4, threads=2)
    finally:
        set_threads(2)


def test_training_lowers_the_loss():
    params = init_params(CFG, 0)
    net, state = PolicyNet(CFG, params, get_backend("numba")), TrainState(params, 0)
    inputs, targets = _data()
    losses = [train_step(net, state, [PolicyBatch(inputs, targets)], Hyper(lr=3e-2))["loss"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_probabilities_are_rows_of_a_softmax():
    net = PolicyNet(CFG, init_params(CFG, 0), get_backend("numba"))
    p = net.probabilities(_data()[0])
    assert p["goal"].shape == (N, 10, 7) and p["action"].shape == (N, 1, 50)
    assert np.allclose(p["goal"].sum(-1), 1, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-5, 400), min_size=CFG.active, max_size=CFG.active))
def test_feature_ids_outside_the_input_are_refused(ids):
    net = PolicyNet(CFG, init_params(CFG, 0), get_backend("reference"))
    x = np.array([ids])
    if min(ids) < -1 or max(ids) >= CFG.features:
        with pytest.raises(PolicyError, match="feature ids"):
            net.forward(x)
    else:
        logits, _ = net.forward(x)
        assert logits["action"].shape == (1, 50)


def test_bad_targets_and_configs_are_refused():
    net = PolicyNet(CFG, init_params(CFG, 0), get_backend("reference"))
    inputs, targets = _data()
    with pytest.raises(PolicyError, match="targets for head 'goal'"):
        net.loss_count(PolicyBatch(inputs, {"action": targets["action"], "goal": targets["goal"][:, :3]}))
    bad = dict(targets, action=np.full((N, 1), 50))
    with pytest.raises(PolicyError, match="0..49"):
        net.micro_batch_loss(PolicyBatch(inputs, bad), np.float32(1), None, net.zero_grads())
    with pytest.raises(PolicyError, match="kind"):
        PolicyConfig.from_dict({"kind": "llama"})
    with pytest.raises(PolicyError, match="classes >= 2"):
        PolicyConfig.from_dict(CFG.to_dict() | {"heads": [{"name": "a", "rows": 1, "classes": 1}]})
    with pytest.raises(PolicyError, match="w_in"):
        PolicyNet(CFG, {**init_params(CFG, 0), "w_in": np.zeros((2, 2), np.float32)}, get_backend("reference"))
    assert PolicyConfig.from_dict(CFG.to_dict()) == CFG
