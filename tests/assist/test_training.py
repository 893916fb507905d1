"""Episodes train an assistant as an ordinary repro job; the SDK drives the game with the result."""

from __future__ import annotations


import numpy as np
import pytest
from safetensors.numpy import load

from bitswarm.assist.game import BuildEnv, check_action
from bitswarm.assist.humans import SimulatedHuman, play_episode
from bitswarm.assist.sdk import Assistant, newest_model
from bitswarm.assist.simulate import simulate
from bitswarm.assist.training import TrainAssistError, build_dataset, train_assistant
from bitswarm.home import Home
from bitswarm.models.policy import PolicyModelError, load_policy
from bitswarm.store import BlobStore

STEPS = 6


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("assist-home"))
    store = BlobStore(home.store)
    res = simulate(6, home=home, store=store, share=True, seed=100, noise=0.1)
    return home, store, res["shared"]


@pytest.fixture(scope="module")
def trained(shared):
    home, store, episodes = shared
    return train_assistant(store, home, episodes, steps=STEPS, global_batch=16, lr=1e-2)


def test_state_hash_is_the_same_across_threads_and_micro_batches(shared, trained, tmp_path):
    home, store, episodes = shared
    other = train_assistant(store, home, episodes, steps=STEPS, global_batch=16, lr=1e-2, threads=1, micro_batch=4,
                            out=tmp_path / "run")
    assert other["final_state_hash"] == trained["final_state_hash"]
    assert other["step_hashes_root"] == trained["step_hashes_root"]
    assert other["model"] == trained["model"]  # the same weights and provenance: the same CID


def test_the_model_names_its_episodes_dataset_and_run(shared, trained):
    home, store, episodes = shared
    _, _, prov = load_policy(store, trained["model"])
    assert prov["dataset"] == trained["dataset"] and prov["final_state_hash"] == trained["final_state_hash"]
    assert prov["dataset_metadata"]["episodes"] == episodes
    assert prov["spec"]["model_kind"] == "policy" and prov["spec"]["dataset"]["cid"] == trained["dataset"]
    data = load(store.read_bytes(trained["dataset"]))
    assert len(data["inputs"]) == trained["examples"] > 0
    assert newest_model(home) == trained["model"]


def test_the_sdk_drives_the_game_with_only_legal_actions(shared, trained):
    home, store, _ = shared
    helper = Assistant(trained["model"], home=home, store=store, confidence=0.5)
    env = BuildEnv()
    env.reset(seed=7)
    helper.begin_episode(env.state())
    acted = 0
    human = SimulatedHuman(seed=7)
    human.reset(7)
    while not env.done:
        a = human.act(env.human_view())
        obs, *_ = env.step(a)
        helper.observe(obs, a)
        if env.done:
            break
        mine = helper.act(obs)
        if mine is not None:
            assert check_action(obs["blocks"], tuple(obs["assistant"]), mine, "assistant") is None
            env.step(mine, "assistant")
            acted += 1
    path = helper.end_episode({"completed": env.complete, "score": env.score, "steps": env.steps})
    assert acted > 0 and path.exists()
    assert helper.share().cid in {b.cid for b in store.list()}


def test_update_loads_the_newest_model(shared, trained):
    home, store, _ = shared
    a = Assistant(None, home=home, store=store)
    assert a.update() == trained["model"] and a.policy is not None


def test_bad_inputs_to_training_are_refused(shared):
    home, store, episodes = shared
    with pytest.raises(TrainAssistError, match="no episodes"):
        build_dataset(store, [])
    with pytest.raises(TrainAssistError, match="not in the store"):
        build_dataset(store, ["sha256:" + "0" * 64])
    junk = store.put_bytes(b'{"format": "bitswarm-episode", "version": 1}')
    with pytest.raises(TrainAssistError, match=f"episode {junk}: steps must be a list"):
        build_dataset(store, [episodes[0], junk])
    with pytest.raises(PolicyModelError, match="single file"):
        Assistant(episodes[0], home=home, store=store)


def test_simulate_reports_what_the_issue_asks(shared, trained):
    home, store, _ = shared
    res = simulate(2, model=trained["model"], home=home, store=store, seed=3)
    for key in ("human_actions_alone", "human_actions_with_assistant", "assistant_share_of_goal_blocks",
                "assistant_wrong_blocks", "goal_completion_rate"):
        assert isinstance(res[key], float), key
    assert 0 <= res["assistant_share_of_goal_blocks"] <= 1 and 0 <= res["goal_completion_rate"] <= 1
    alone = [play_episode(BuildEnv(), SimulatedHuman(0.9, 0.05, seed=s), None, seed=s) for s in (3, 4)]
    assert res["human_actions_alone"] == np.mean([r["human_actions"] for r in alone])
