"""Episodes: recorded by the SDK, round-tripped through the store, and refused when they lie or break a rule."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitswarm.assist.episode import MAX_BYTES, EpisodeError, parse
from bitswarm.assist.game import Action, BuildEnv
from bitswarm.assist.humans import SimulatedHuman, play_episode
from bitswarm.assist.sdk import Assistant, AssistError, share_episode
from bitswarm.home import Home
from bitswarm.store import BlobStore


@pytest.fixture()
def recorded(tmp_path):
    home = Home(tmp_path / "home")
    store = BlobStore(home.store)
    rec = Assistant(None, home=home, store=store)
    row = play_episode(BuildEnv(), SimulatedHuman(seed=3, noise=0.2), rec, seed=3)
    return home, store, rec, row


def test_a_recorded_episode_round_trips_through_the_store(recorded):
    home, store, rec, row = recorded
    assert list(store.list()) == []  # nothing leaves the machine (not even the local store) before sharing
    receipt = rec.share()
    assert receipt.size == store.size(receipt.cid) and receipt.tx_hash is None
    ep = parse(store.read_bytes(receipt.cid))
    assert ep.outcome == {"completed": True, "score": row["goal_blocks"], "steps": row["steps"]}
    assert sum(s["player"] == "human" for s in ep.steps) == row["human_actions"]
    env = ep.final_env()
    assert env.complete and env.steps == row["steps"]
    assert [s["t"] for s in ep.steps] == sorted(s["t"] for s in ep.steps)
    assert ep.to_bytes() == store.read_bytes(receipt.cid)  # canonical: sharing twice gives the same CID
    assert rec.share().cid == receipt.cid


def _doc(recorded) -> dict:
    _, _, rec, _ = recorded
    return json.loads(rec.last_file.read_bytes())


def _refused(doc, match: str):
    with pytest.raises(EpisodeError, match=match):
        parse(json.dumps(doc))


def test_an_action_the_rules_forbid_is_refused_naming_the_step_and_rule(recorded):
    doc = _doc(recorded)
    doc["steps"][4]["action"] = Action.place(7, 0, 7, 1).to_json()  # the human starts at (0, 0): out of reach
    _refused(doc, r"step 4: place at \(7, 0, 7\) by human standing at .*out of reach")
    doc = _doc(recorded)
    doc["steps"][2]["action"] = {"kind": "place", "x": 1, "y": 0, "z": 1, "block": 9}
    _refused(doc, r"step 2: .*block 9 is not a block type")
    doc = _doc(recorded)
    doc["steps"][1]["action"] = Action.place(0, 5, 0, 1).to_json()
    _refused(doc, r"step 1: .*nothing to rest on")


def test_lies_and_malformed_fields_are_refused(recorded):
    doc = _doc(recorded)
    doc["outcome"]["score"] += 1
    _refused(doc, "outcome score .* but the replay gives")
    doc = _doc(recorded)
    doc["outcome"]["completed"] = False
    _refused(doc, "outcome completed")
    doc = _doc(recorded)
    doc["steps"][3]["t"] = -1
    _refused(doc, "step 3: t must be")
    doc = _doc(recorded)
    doc["steps"][0]["player"] = "referee"
    _refused(doc, "unknown player 'referee'")
    doc = _doc(recorded)
    doc["steps"].append(doc["steps"][-1])
    _refused(doc, "the episode has ended")
    doc = _doc(recorded)
    doc["initial"]["human"] = [9, 0]
    _refused(doc, "initial state: not a game state: human")
    _refused({**_doc(recorded), "version": 2}, "version 2 is not supported")
    _refused({**_doc(recorded), "extra": 1}, "unknown fields extra")
    with pytest.raises(EpisodeError, match=f"at most {MAX_BYTES}"):
        parse(b" " * (MAX_BYTES + 1))
    with pytest.raises(EpisodeError, match="not JSON"):
        parse(b"{")


def test_sharing_a_tampered_file_is_refused_and_stores_nothing(recorded, tmp_path):
    home, store, rec, _ = recorded
    doc = _doc(recorded)
    doc["outcome"]["steps"] = 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(AssistError, match="not shared: .*outcome steps"):
        share_episode(store, bad)
    assert list(store.list()) == []


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 200), st.sampled_from(["x", "y", "z", "block", "kind"]),
       st.one_of(st.integers(-3, 12), st.text(max_size=3), st.none()))
def test_any_single_corrupted_action_is_caught_or_still_legal(step, key, value):
    env = BuildEnv()
    rec = Assistant(None, home=Home(_tmp()), store=None)
    play_episode(env, SimulatedHuman(seed=step), rec, seed=step)
    doc = json.loads(rec.last_file.read_bytes())
    i = step % len(doc["steps"])
    doc["steps"][i]["action"][key] = value
    try:
        ep = parse(json.dumps(doc))
    except EpisodeError as e:
        assert str(e).startswith("episode step") or "outcome" in str(e), e
    else:  # the change happened to be legal and to lead to the same outcome: the replay says so
        assert ep.final_env().steps == doc["outcome"]["steps"]


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="bitswarm-episode-"))
