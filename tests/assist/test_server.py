"""The game's HTTP API (bitswarm.assist.server) through starlette's TestClient: the human's actions,
every kind of bad input refused with nothing changed, the assistant's turn, the episode's end and sharing."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request

import pytest
from starlette.testclient import TestClient

from bitswarm.assist.episode import parse
from bitswarm.assist.game import SIZE, Action
from bitswarm.assist.goals import Goal
from bitswarm.assist.sdk import Assistant
from bitswarm.assist.server import MAX_BODY, ServeError, make_app, serve
from tests.assist.scripted import Puppet

SEED = 3
ORIGIN = "http://127.0.0.1"  # the Host header must name this machine


def client_for(assistant=None, max_steps: int = 400, seed: int = SEED) -> TestClient:
    return TestClient(make_app(None if assistant is None else lambda: assistant, seed, max_steps=max_steps),
                      base_url=ORIGIN)


@pytest.fixture
def puppet() -> Puppet:
    return Puppet()


@pytest.fixture
def client(puppet) -> TestClient:
    with client_for(puppet) as c:
        yield c


def act(client, kind: str, x: int = 0, y: int = 0, z: int = 0, block: int = 0):
    return client.post("/api/act", json={"action": {"kind": kind, "x": x, "y": y, "z": z, "block": block}})


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


# -- the human's view and actions -------------------------------------------------------------------

def test_state_is_the_human_view_of_a_fresh_episode(client, puppet):
    s = ok(client.get("/api/state"))
    goal = Goal.generate(SEED)
    assert (s["goal_name"], s["seed"], s["episode"], s["step"], s["score"]) == (goal.name, SEED, 1, 0, 0)
    assert [len(s["blocks"]), len(s["blocks"][0]), len(s["blocks"][0][0])] == list(SIZE) == s["size"]
    assert s["goal"] == goal.blocks.tolist() and s["goal_blocks"] == goal.count
    assert (s["human"], s["assistant"], s["turn"], s["ended"], s["has_assistant"]) == ([0, 0], [7, 7], "human",
                                                                                        False, True)
    assert s["events"][0]["kind"] == "new" and len(s["colors"]) == 6
    assert puppet.names() == ["begin_episode"] and puppet.calls[0][1]["goal_name"] == goal.name


def test_place_remove_and_move_change_the_world_and_tell_the_assistant(client, puppet):
    s = ok(act(client, "place", 1, 0, 2, block=4))
    assert s["blocks"][1][0][2] == 4 and s["step"] == 1 and s["turn"] == "assistant"
    assert s["events"][0]["text"] == "you placed green at (1,0,2)"
    s = ok(act(client, "place", 1, 1, 2, block=1))  # rests on the block below
    assert s["blocks"][1][1][2] == 1
    s = ok(act(client, "remove", 1, 1, 2))
    assert s["blocks"][1][1][2] == 0 and s["step"] == 3
    s = ok(act(client, "move", x=1))
    s = ok(act(client, "move", z=1))
    assert s["human"] == [1, 1] and s["step"] == 5
    observed = [c[1] for c in puppet.calls if c[0] == "observe"]
    assert observed == [Action.place(1, 0, 2, 4), Action.place(1, 1, 2, 1), Action.remove(1, 1, 2),
                        Action.move(1, 0), Action.move(0, 1)]
    assert ok(client.get("/api/state")) == s


def test_the_page_and_its_files_are_served_without_outside_sources(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/", "/app.js", "/style.css"):
        r = client.get(path)
        assert r.status_code == 200 and not re.search(r"https?://", r.text), path  # no CDN, nothing fetched from afar


# -- nothing the page sends is trusted -------------------------------------------------------------

PLACE = {"kind": "place", "x": 1, "y": 0, "z": 1, "block": 2}
BAD_BODIES = {
    "not JSON": (b"{kind: place", "not JSON"),
    "NaN": (b'{"action": {"kind": "place", "x": NaN}}', "NaN is not a JSON number"),
    "a list": (b"[1, 2]", "must be a JSON object"),
    "no action": (b"{}", 'the body is {"action"'),
    "extra field": (json.dumps({"action": PLACE, "as": "assistant"}).encode(), "unknown field(s) as"),
    "action not an object": (b'{"action": 5}', "an action is a JSON object"),
    "action extra key": (json.dumps({"action": {**PLACE, "player": "assistant"}}).encode(), "an action is"),
    "unknown kind": (json.dumps({"action": {"kind": "jump"}}).encode(), "unknown action kind 'jump'"),
    "x out of range": (json.dumps({"action": {**PLACE, "x": 8}}).encode(), "outside the 8x6x8 world"),
    "y negative": (json.dumps({"action": {**PLACE, "y": -1}}).encode(), "outside the 8x6x8 world"),
    "huge x": (json.dumps({"action": {**PLACE, "x": 10**30}}).encode(), "outside the 8x6x8 world"),
    "float x": (json.dumps({"action": {**PLACE, "x": 1.0}}).encode(), "x, y, z, block are integers"),
    "bool x": (json.dumps({"action": {**PLACE, "x": True}}).encode(), "x, y, z, block are integers"),
    "string block": (json.dumps({"action": {**PLACE, "block": "2"}}).encode(), "are integers"),
    "block 7": (json.dumps({"action": {**PLACE, "block": 7}}).encode(), "block 7 is not a block type"),
    "place air": (json.dumps({"action": {**PLACE, "block": 0}}).encode(), "block 0 is not a block type"),
    "move two": (json.dumps({"action": {"kind": "move", "x": 2}}).encode(), "a move is one cell"),
    "move diagonal": (json.dumps({"action": {"kind": "move", "x": 1, "z": 1}}).encode(), "a move is one cell"),
    "move off the floor": (json.dumps({"action": {"kind": "move", "x": -1}}).encode(), "would leave the floor"),
    "out of reach": (json.dumps({"action": {**PLACE, "x": 4, "z": 4}}).encode(), "out of reach"),
    "floating": (json.dumps({"action": {**PLACE, "y": 2}}).encode(), "nothing to rest on"),
    "remove air": (json.dumps({"action": {"kind": "remove", "x": 1, "z": 1}}).encode(), "the cell is air"),
    "occupied": (json.dumps({"action": {**PLACE, "x": 0, "z": 0}}).encode(), "already holds block 5"),
}


@pytest.mark.parametrize("body, message", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_actions_are_refused_with_the_rule_and_change_nothing(client, puppet, body, message):
    ok(act(client, "place", 0, 0, 0, block=5))  # something to be occupied
    before, calls = ok(client.get("/api/state")), len(puppet.calls)
    r = client.post("/api/act", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert ok(client.get("/api/state")) == before and len(puppet.calls) == calls


def test_oversized_bodies_are_refused_with_413_declared_or_streamed(client):
    before = ok(client.get("/api/state"))
    padded = json.dumps({"action": PLACE, "pad": "x" * MAX_BODY}).encode()
    r = client.post("/api/act", content=padded, headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"at most {MAX_BODY}" in r.json()["error"]
    chunks = (padded[i:i + 1000] for i in range(0, len(padded), 1000))  # no Content-Length: counted as it comes
    r = client.post("/api/act", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert ok(client.get("/api/state")) == before


def test_posts_need_json_and_a_local_host_header(client):
    before = ok(client.get("/api/state"))
    r = client.post("/api/act", content=json.dumps({"action": PLACE}), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]  # what a cross-site form can send
    r = client.post("/api/act", json={"action": PLACE}, headers={"host": "evil.example:80"})  # DNS rebinding
    assert r.status_code == 400
    assert ok(client.get("/api/state")) == before


def test_new_episode_takes_a_seed_or_the_next_and_refuses_bad_seeds(client, puppet):
    ok(act(client, "place", 1, 0, 1, block=2))
    s = ok(client.post("/api/new", json={"seed": 11}))
    assert (s["seed"], s["episode"], s["step"], s["goal_name"]) == (11, 2, 0, Goal.generate(11).name)
    assert not any(any(row) for plane in s["blocks"] for row in plane)
    assert ok(client.post("/api/new", json={"seed": None}))["seed"] == 12
    assert ok(client.post("/api/new", json={}))["seed"] == 13
    assert puppet.names().count("begin_episode") == 4
    before = ok(client.get("/api/state"))
    for bad in (-1, 1.5, True, "7", 2**64, [1]):
        r = client.post("/api/new", json={"seed": bad})
        assert r.status_code == 400 and "seed must be null or an integer" in r.json()["error"], bad
    assert client.post("/api/new", json={"seed": 1, "goal": "house"}).status_code == 400
    assert ok(client.get("/api/state")) == before and puppet.names().count("begin_episode") == 4


# -- the assistant's turn --------------------------------------------------------------------------

def test_tick_applies_a_legal_assistant_action_once_per_human_action(client, puppet):
    puppet.proposals = [Action.place(6, 0, 6, 3), Action.place(5, 0, 6, 3)]
    s = ok(client.post("/api/tick", json={}))
    assert s["step"] == 0 and "act" not in puppet.names()  # no human action yet: not its turn
    ok(act(client, "move", x=1))
    s = ok(client.post("/api/tick", json={}))
    assert s["blocks"][6][0][6] == 3 and s["step"] == 2 and s["turn"] == "human"
    assert s["assistant_last"]["text"] == "assistant placed yellow at (6,0,6)" == s["events"][0]["text"]
    assert s["assistant_last"]["action"] == Action.place(6, 0, 6, 3).to_json()
    s = ok(client.post("/api/tick", json={}))  # its turn is spent
    assert s["step"] == 2 and s["blocks"][5][0][6] == 0 and puppet.names().count("act") == 1


DROPPED = {
    "out of reach": (Action.place(0, 0, 0, 1), "out of reach"),
    "floating": (Action.place(7, 3, 7, 1), "nothing to rest on"),
    "malformed": (Action("place", 9, 0, 0, 1), "outside the 8x6x8 world"),
    "not an Action": ({"kind": "noop"}, "is not an Action"),
}


@pytest.mark.parametrize("proposal, message", DROPPED.values(), ids=DROPPED.keys())
def test_tick_drops_an_illegal_assistant_action_and_says_why(client, puppet, proposal, message):
    puppet.proposals = [proposal]
    before = ok(act(client, "move", x=1))
    s = ok(client.post("/api/tick", json={}))
    assert s["events"][0]["kind"] == "dropped" and message in s["events"][0]["text"], s["events"][0]
    assert (s["blocks"], s["step"], s["assistant"], s["assistant_last"]) == (before["blocks"], 1, [7, 7], None)


def test_an_assistant_that_raises_is_reported_and_the_game_goes_on(client, puppet):
    puppet.proposals = [RuntimeError("the model fell over")]
    ok(act(client, "move", x=1))
    s = ok(client.post("/api/tick", json={}))
    assert s["events"][0]["kind"] == "error" and "the model fell over" in s["events"][0]["text"]
    assert ok(act(client, "move", x=1))["human"] == [2, 0]


def test_without_an_assistant_the_human_plays_alone():
    with client_for(None) as c:
        ok(act(c, "place", 0, 0, 0, block=1))
        s = ok(c.post("/api/tick", json={}))
        assert (s["step"], s["turn"], s["has_assistant"]) == (1, "human", False)


# -- the end of an episode, and sharing it ---------------------------------------------------------

def test_the_end_is_told_once_and_only_then_can_the_episode_be_shared(puppet):
    with client_for(puppet, max_steps=3) as c:
        ok(act(c, "place", 1, 0, 1, block=2))
        r = c.post("/api/share", json={})
        assert r.status_code == 409 and "has not ended yet" in r.json()["error"]
        assert "share" not in puppet.names()
        ok(act(c, "move", x=1))
        s = ok(act(c, "move", z=1))
        assert s["ended"] and s["outcome"]["steps"] == 3 and s["outcome"]["completed"] is False
        assert s["recorded"] == "/tmp/episode.json" and s["events"][0]["kind"] == "end"
        ends = [call[1] for call in puppet.calls if call[0] == "end_episode"]
        assert ends == [s["outcome"]] and ends[0]["score"] == s["score"]
        r = act(c, "move", x=1)
        assert r.status_code == 400 and "the episode has ended" in r.json()["error"]
        assert ok(c.post("/api/tick", json={}))["step"] == 3 and "act" not in puppet.names()
        receipt = ok(c.post("/api/share", json={}))
        assert receipt == {"cid": "sha256:" + "ab" * 32, "size": 1234, "tx_hash": None}
        assert ok(c.post("/api/share", json={})) == receipt and puppet.names().count("share") == 1
        assert ok(c.get("/api/state"))["receipt"] == receipt


def test_sharing_needs_an_assistant_that_recorded_the_episode():
    with client_for(None, max_steps=1) as c:
        ok(act(c, "move", x=1))
        r = c.post("/api/share", json={})
        assert r.status_code == 409 and "without an assistant" in r.json()["error"]


def test_the_sdk_assistant_records_a_served_episode_and_shares_it(store):
    assistant = Assistant(store=store)  # no model: it records and never acts
    with client_for(assistant, max_steps=4) as c:
        ok(act(c, "place", 0, 0, 0, block=1))
        ok(c.post("/api/tick", json={}))
        ok(act(c, "move", x=1))
        ok(act(c, "remove", 0, 0, 0))
        s = ok(act(c, "place", 0, 0, 1, block=2))
        assert s["ended"] and s["recorded"] and not any(e["kind"] == "error" for e in s["events"]), s["events"]
        receipt = ok(c.post("/api/share", json={}))
    stored = store.read_bytes(receipt["cid"])
    assert len(stored) == receipt["size"] and parse(stored).outcome == s["outcome"]  # parse replays it


# -- serving -----------------------------------------------------------------------------------------

def test_serve_takes_an_assistant_or_a_factory_and_stops_when_told(puppet):
    for given in (puppet, lambda: puppet):
        urls, stop = [], threading.Event()
        thread = threading.Thread(target=serve, kwargs=dict(assistant=given, seed=SEED, on_ready=urls.append,
                                                            stop=stop), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not urls:
            assert thread.is_alive() and time.monotonic() < deadline, "the game server did not start"
            threading.Event().wait(0.01)
        with urllib.request.urlopen(urls[0] + "api/state", timeout=5) as r:
            assert json.load(r)["has_assistant"] is True
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_serve_says_when_the_port_is_taken():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"127.0.0.1:{port} is taken; choose another port"):
            serve(port)
