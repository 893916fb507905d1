"""The node's dashboard over a real NodeState and real JSON-lines logs in a tmp home: each JSON route
shows what the node and its home hold (a dispute replayed round by round from its chain events, the
swarm's reward curves, the assistant's statistics), the live stream pushes a newly stored event, and
the page and its assets are served as what they are, with no URL to another host."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from importlib.resources import files
from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from bitswarm.home import Home
from bitswarm.node.api import ApiServer, create_app
from bitswarm.node.state import NodeState
from bitswarm.store import BlobStore
from bitswarm.store.jsonl import append_line

TOKEN = "test-token-" + "x" * 32
C = 10**18
ME, POSTER, SOLVER, CHEATER, VERIFIER, REF1, REF2 = ("0x" + c * 40 for c in "a1234bc")
PEER = {a: f"12D3KooW{a[2:10]}" for a in (ME, POSTER, SOLVER, CHEATER, VERIFIER, REF1, REF2)}
SPEC, RESULT = "sha256:" + "5e" * 32, "6f" * 32  # the job keeps the store's form, the event a bare bytes32
STEP, TRACE, OP = 1, 2, 3  # JobMarket's phases


def wait_until(condition, timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what or condition} did not happen within {timeout} s"
        threading.Event().wait(0.02)


class Chain:
    """Events as the daemon stores them, one block each."""

    def __init__(self, state: NodeState):
        self.state, self.block = state, 10

    def __call__(self, name: str, **args) -> dict:
        self.block += 1
        (row,) = self.state.add_events([{"block": self.block, "log_index": 0, "contract": "JobMarket", "event": name,
                                         "args": args}], through_block=self.block)
        return row


def bisect(chain: Chain, phase: int, answers: list[tuple[int, bool]]) -> None:
    """One DisputeQuery per round, then both parties' answers: equal when they agree."""
    name, key = ("StepAnswered", "leaf") if phase == STEP else ("OpAnswered", "digest")
    for index, agree in answers:
        chain("DisputeQuery", job_id=3, phase=phase, index=index, deadline=0)
        chain(name, job_id=3, party=CHEATER, index=index, **{key: b"\x01" * 32})
        chain(name, job_id=3, party=VERIFIER, index=index, **{key: (b"\x01" if agree else b"\x02") * 32})


def populate(state: NodeState) -> None:
    """Job 1 finalized; job 3's cheating solver challenged, bisected to step 10 op 161, voted out, slashed."""
    chain = Chain(state)
    chain("JobPosted", job_id=1, poster=POSTER, kind=0, bounty=20 * C)
    chain("JobClaimed", job_id=1, solver=SOLVER)
    chain("ResultCommitted", job_id=1, result_root=b"\xaa" * 32, result_cid=b"\xab" * 32)
    chain("JobFinalized", job_id=1, solver=SOLVER, bounty=20 * C, solver_paid=20 * C)
    chain("JobPosted", job_id=3, poster=POSTER, kind=0, bounty=20 * C)
    chain("JobClaimed", job_id=3, solver=CHEATER)
    chain("ResultCommitted", job_id=3, result_root=b"\xcc" * 32, result_cid=bytes.fromhex(RESULT))
    chain("JobChallenged", job_id=3, challenger=VERIFIER, challenger_root=b"\xdd" * 32)
    bisect(chain, STEP, [(7, True), (11, False), (9, True), (10, False)])  # [0,15] [8,15] [8,11] [10,11] -> 10
    chain("StepFound", job_id=3, step_index=10)
    chain("TraceCommitted", job_id=3, party=CHEATER, trace_root=b"\x71" * 32, n_ops=240)
    chain("TraceCommitted", job_id=3, party=VERIFIER, trace_root=b"\x72" * 32, n_ops=240)
    bisect(chain, OP, [(120, True), (180, False), (150, True), (165, False), (157, True), (161, False), (159, True),
                       (160, True)])  # [0,240] ... [160,161] -> 161
    chain("OpFound", job_id=3, step=10, op=161)
    chain("RefereeVoted", job_id=3, referee=REF1, solver_wins=False, weight=40 * C)
    chain("RefereeVoted", job_id=3, referee=REF2, solver_wins=True, weight=25 * C)
    chain("DisputeSettled", job_id=3, winner=VERIFIER, loser=CHEATER, reason="referee vote")
    chain("VoteReleased", job_id=3, referee=REF2, weight=25 * C, slashed=True)
    state.upsert_job(1, kind="train", poster=POSTER, bounty=20 * C, solver_stake=5 * C, num_leaves=16, status="done",
                     solver=SOLVER)
    state.upsert_job(3, kind="train", spec_cid=SPEC, poster=POSTER, bounty=20 * C, solver_stake=5 * C, num_leaves=16,
                     ops_per_leaf=240, status="failed", solver=CHEATER, challenger=VERIFIER, winner=VERIFIER,
                     result_cid="sha256:" + RESULT, role="referee")
    state.put_snapshot("status", {"state": "running", "address": ME, "peer_id": PEER[ME], "roles": ["referee"]})
    state.put_snapshot("peers", [{"peer_id": PEER[SOLVER], "maddrs": []}, {"peer_id": PEER[VERIFIER], "maddrs": []}])
    state.put_snapshot("network", {"updated": 1.0, "nodes": [
        {"address": a, "peer_id": PEER[a], "roles": roles, "staked": 50 * C, "locked": C, "unbonding": 0,
         "token": 1000 * C, "registered": True}
        for a, roles in ((ME, ["referee"]), (SOLVER, ["solver"]), (VERIFIER, ["verifier"]), (CHEATER, ["solver"]))]})


def write_logs(home: Home) -> None:
    for i, peer in enumerate(("peer-a", "peer-b")):
        log = home.swarm("run", "3f9a1c") / f"peer-{i}" / "round_reports.jsonl"
        for r in (2, 0, 1):  # out of order: the curve is sorted by round
            append_line(log, {"peer": peer, "round": r, "reward": 0.1 * r + i, "local_groups": 4, "external_groups": 2,
                              "external_available": 6, "rollouts_shared": 16, "updated": True, "seconds": 1.5,
                              "time": 100.0 + r})
    with open(home.swarm("run", "3f9a1c") / "peer-0" / "round_reports.jsonl", "a") as f:
        f.write('{"peer": "peer-a", "round": 3, "rew')  # torn by a crash: skipped
    append_line(home.swarm("join", "77aa00") / "peer-0" / "round_reports.jsonl", {"peer": "joiner", "round": 0,
                                                                                   "reward": 0.5})
    for i in range(3):
        append_line(home.assist_shared, {"cid": f"sha256:{i:064x}", "size": 100 + i, "tx_hash": None, "file": "e.json"})
    append_line(home.assist_models, {"model": "sha256:" + "9d" * 32, "episodes": ["a", "b", "c"], "examples": 90,
                                     "steps": 150, "final_state_hash": "11" * 32, "run": "/x"})
    append_line(home.assist_simulations, {"episodes": 20, "model": "sha256:" + "9d" * 32, "human_actions_alone": 38.5,
                                          "human_actions_with_assistant": 24.6, "assistant_share_of_goal_blocks": 0.41,
                                          "assistant_wrong_blocks": 1.2, "goal_completion_rate": 0.95, "time": 5.0})


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def state(home):
    s = NodeState(home.node_db)
    populate(s)
    write_logs(home)
    yield s
    s.close()


@pytest.fixture
def client(state, home):
    with TestClient(create_app(state, TOKEN, home)) as c:
        yield c


# -- the JSON the page draws -------------------------------------------------------------------------

def test_network_lists_registered_nodes_and_marks_peers_online(client):
    net = client.get("/network").json()
    by = {n["address"]: n for n in net["nodes"]}
    assert list(by) == [ME, SOLVER, VERIFIER, CHEATER]
    assert [by[a]["online"] for a in by] == [True, True, True, False]  # this node, two peers, one not a peer
    assert by[ME]["self"] and not by[SOLVER]["self"]
    assert by[SOLVER]["roles"] == ["solver"] and by[SOLVER]["staked"] == 50 * C and by[SOLVER]["token"] == 1000 * C
    assert len(net["peers"]) == 2 and net["updated"] == 1.0


def test_a_node_without_a_network_snapshot_shows_none(tmp_path):
    with TestClient(create_app(NodeState(tmp_path / "node.db"), TOKEN)) as c:
        assert c.get("/network").json() == {"nodes": [], "peers": [], "updated": None}
        assert c.get("/timeline").json() == []
        assert c.get("/swarm").json() == []
        assert c.get("/assist").json() == {"shared": 0, "shared_bytes": 0, "models": [], "simulations": []}


def test_timeline_has_each_jobs_stages_in_chain_order(client):
    jobs = client.get("/timeline").json()
    assert [j["job_id"] for j in jobs] == [3, 1]
    settled, paid = jobs
    assert [s["stage"] for s in paid["stages"]] == ["posted", "claimed", "committed", "finalized"]
    assert [s["stage"] for s in settled["stages"]] == ["posted", "claimed", "committed", "challenged", "step found",
                                                       "op found", "voted", "voted", "settled"]
    assert settled["dispute_rounds"] == 12 and paid["dispute_rounds"] == 0
    assert settled["bounty"] == 20 * C and settled["status"] == "failed" and settled["solver"] == CHEATER
    blocks = [s["block"] for s in settled["stages"]]
    assert blocks == sorted(blocks)
    assert client.get("/timeline", params={"limit": 1}).json()[0]["job_id"] == 3


def test_bisection_replays_the_rounds_down_to_the_one_op(client):
    d = client.get("/jobs/3/bisection").json()
    steps = [(r["lo"], r["hi"], r["index"], r["agreed"]) for r in d["rounds"] if r["phase"] == "step"]
    assert steps == [(0, 15, 7, True), (8, 15, 11, False), (8, 11, 9, True), (10, 11, 10, False)]
    ops = [(r["lo"], r["hi"]) for r in d["rounds"] if r["phase"] == "op"]
    assert ops == [(0, 240), (121, 240), (121, 180), (151, 180), (151, 165), (158, 165), (158, 161), (160, 161)]
    assert [r["round"] for r in d["rounds"]] == list(range(1, 13))
    assert (d["step"], d["op"]) == (10, 161)
    assert [t["party"] for t in d["traces"]] == [CHEATER, VERIFIER]
    assert [(v["referee"], v["solver_wins"], v["weight"]) for v in d["votes"]] == [(REF1, False, 40 * C),
                                                                                  (REF2, True, 25 * C)]
    assert d["releases"] == [{"referee": REF2, "weight": 25 * C, "slashed": True}]
    verdict = d["verdict"]
    assert (verdict["winner"], verdict["loser"], verdict["reason"]) == (VERIFIER, CHEATER, "referee vote")
    assert verdict["slashed"] == 5 * C  # the job's solver stake: what JobMarket._settle takes from the loser
    assert d["blobs"] == [{"what": "spec", "cid": SPEC}, {"what": "result", "cid": "sha256:" + RESULT}]
    assert (d["solver"], d["challenger"]) == (CHEATER, VERIFIER)


def test_bisection_of_a_job_without_a_dispute_and_of_an_unknown_job(client):
    d = client.get("/jobs/1/bisection").json()
    assert d["rounds"] == [] and d["verdict"] is None and d["votes"] == []
    r = client.get("/jobs/99/bisection")
    assert r.status_code == 404 and "no job 99" in r.json()["error"]


def test_swarm_curves_per_peer_per_swarm_folder(client):
    swarms = client.get("/swarm").json()
    assert [s["swarm"] for s in swarms] == ["join-77aa00", "run-3f9a1c"]
    run = swarms[1]
    assert [p["peer"] for p in run["peers"]] == ["peer-a", "peer-b"]
    a = run["peers"][0]["points"]
    assert [p["round"] for p in a] == [0, 1, 2]  # sorted, the torn fourth line skipped
    assert a[2]["reward"] == pytest.approx(0.2) and a[2]["rollouts_shared"] == 16 and a[2]["time"] == 102.0
    assert swarms[0]["peers"] == [{"peer": "joiner", "points": [{"round": 0, "reward": 0.5}]}]


def test_assist_statistics_from_the_homes_logs(client):
    a = client.get("/assist").json()
    assert a["shared"] == 3 and a["shared_bytes"] == 303
    assert a["models"] == [{"model": "sha256:" + "9d" * 32, "examples": 90, "steps": 150,
                            "final_state_hash": "11" * 32, "episodes": 3}]
    (sim,) = a["simulations"]
    assert sim["human_actions_with_assistant"] == 24.6 and sim["goal_completion_rate"] == 0.95


def test_blob_route_says_what_the_node_knows_of_a_blob(client, state, home):
    cid = BlobStore(home.store).put_bytes(b"a job spec")
    state.add_blob(cid, "job input", job_id=3)
    held = client.get(f"/blobs/{cid.removeprefix('sha256:')}").json()
    assert held == {"cid": cid, "in_store": True, "size": 10, "served": True, "what": "job input", "job_id": 3}
    absent = client.get(f"/blobs/{SPEC}").json()
    assert absent["in_store"] is False and absent["served"] is False and absent["size"] is None
    assert client.get("/blobs/not-a-cid").status_code == 422


# -- the page -----------------------------------------------------------------------------------------

STATIC = files("bitswarm.node.dashboard") / "static"
EXTERNAL = re.compile(r"https?://", re.I)


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_page_is_html_and_names_its_assets(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for asset, kind in (("/dashboard/dashboard.css", "text/css"), ("/dashboard/dashboard.js", "text/javascript")):
        assert asset in r.text
        got = client.get(asset)
        assert got.status_code == 200 and got.headers["content-type"].startswith(kind)
    for testid in ("network-table", "dispute-panel", "assist-panel", "event-feed", "connection"):
        assert f'data-testid="{testid}"' in r.text


def test_page_and_assets_fetch_nothing_from_another_host(client):
    names = sorted(p.name for p in STATIC.iterdir())
    assert names == ["dashboard.css", "dashboard.js", "index.html"]
    for name in names:
        text = (STATIC / name).read_text("utf-8")
        assert not EXTERNAL.search(text), f"{name} names a URL: {EXTERNAL.search(text).group()}"
        assert "@import" not in text and "//cdn" not in text
    js = client.get("/dashboard/dashboard.js").text
    for testid in ("job-row", "dispute-verdict", "swarm-chart", "swarm-line", "event-item"):
        assert f'data-testid="{testid}"' in js
    missing = client.get("/dashboard/nope.js")
    assert missing.status_code == 404 and "dashboard.js" in missing.json()["error"]


def test_dashboard_routes_are_documented_and_the_stream_and_page_are_not(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/network", "/timeline", "/jobs/{job_id}/bisection", "/swarm", "/assist", "/blobs/{cid}"):
        assert "get" in paths[path], path
    assert not {"/", "/dashboard", "/stream", "/dashboard/{name}"} & set(paths)


# -- the live stream ----------------------------------------------------------------------------------

class Stream:
    """An open GET /stream, read one server-sent event at a time."""

    def __init__(self, url: str, headers: dict | None = None):
        self.resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5)
        assert self.resp.headers["content-type"].startswith("text/event-stream")

    def next(self, name: str | None = None) -> dict:
        while True:
            fields: dict = {}
            while (line := self.resp.readline().decode()) not in ("\n", ""):
                key, _, value = line.rstrip("\n").partition(": ")
                fields[key] = value
            if "event" in fields and (name is None or fields["event"] == name):
                return {"event": fields["event"], "id": fields.get("id"), "data": json.loads(fields["data"])}

    def close(self) -> None:
        self.resp.close()


@pytest.fixture
def server(state, home):
    with ApiServer(create_app(state, TOKEN, home)) as srv:
        yield srv


def test_stream_pushes_a_newly_stored_event(server, state):
    stream = Stream(server.url + "/stream")
    try:
        last = state.events(limit=10_000)[-1]["id"]
        assert stream.next("hello")["data"]["after"] == last  # starts at the newest: the page read the rest
        state.add_events([{"block": 500, "log_index": 0, "contract": "JobMarket", "event": "JobClaimed",
                           "args": {"job_id": 4, "solver": SOLVER}}], through_block=500)
        got = stream.next("chain")
        assert got["data"]["name"] == "JobClaimed" and got["data"]["job_id"] == 4
        assert int(got["id"]) == got["data"]["id"] > last
        state.put_snapshot("balances", {"token": 1})
        assert stream.next("snapshot")["data"]["keys"] == ["balances"]
        append_line(Home(state.path.parent).assist_shared, {"cid": "sha256:" + "00" * 32, "size": 1})
        assert stream.next("logs")["event"] == "logs"
    finally:
        stream.close()


def test_stream_resumes_after_the_last_event_id(server, state):
    events = state.events(limit=10_000)
    stream = Stream(server.url + "/stream?after=0", headers={"Last-Event-ID": str(events[-3]["id"])})
    try:
        assert stream.next("hello")["data"]["after"] == events[-3]["id"]  # the header wins: it is fresher
        assert [stream.next("chain")["data"]["id"] for _ in range(2)] == [e["id"] for e in events[-2:]]
    finally:
        stream.close()
    stream = Stream(server.url + "/stream?after=0")
    try:
        assert stream.next("chain")["data"]["id"] == events[0]["id"]
    finally:
        stream.close()


def test_an_open_stream_does_not_hold_up_shutdown(state, home):
    srv = ApiServer(create_app(state, TOKEN, home)).start()
    stream = Stream(srv.url + "/stream")
    stream.next("hello")
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 3, "the server waited on the stream instead of ending it"
    stream.close()


# -- the daemon's network snapshot ----------------------------------------------------------------------

class Registry:
    """The calls the network snapshot makes of a Ledger, over a list of NodeRegistered events."""

    def __init__(self):
        self.head, self.log, self.asked = 5, [], []

    def block_number(self) -> int:
        return self.head

    def events(self, name, event, from_block=0, to_block="latest"):
        assert (name, event) == ("NodeRegistry", "NodeRegistered")
        self.asked.append((from_block, to_block))
        return [{"event": event, "block": b, "args": {"node": a}} for b, a in self.log if from_block <= b <= to_block]

    def node(self, address):
        return {"peer_id": PEER[address], "roles": 1 | 4, "staked": 50 * C, "locked": 0, "unbonding": 0,
                "unbond_release": 0, "registered": True}

    def token_balance(self, address):
        return 7 * C


def test_daemon_snapshots_every_registered_node_reading_only_new_blocks(home):
    from bitswarm.node.daemon import Node

    registry = Registry()
    registry.log = [(2, SOLVER), (4, VERIFIER), (4, SOLVER)]  # a node registering twice is listed once
    node = Node(home, SimpleNamespace(roles=()), registry)
    try:
        node._network(time.time())
        registry.log.append((6, REF1))
        registry.head = 7
        node._network(time.time())
        assert registry.asked == [(0, 5), (6, 7)]
        net = node.state.snapshot("network")
        assert [n["address"] for n in net["nodes"]] == [SOLVER, VERIFIER, REF1]
        assert net["nodes"][0] | {"roles": None} == {"address": SOLVER, "peer_id": PEER[SOLVER], "registered": True,
                                                     "roles": None, "staked": 50 * C, "locked": 0, "unbonding": 0,
                                                     "token": 7 * C}
        assert net["nodes"][0]["roles"] == ["solver", "referee"]
    finally:
        node.state.close()
