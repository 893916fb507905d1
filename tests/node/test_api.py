"""The node's HTTP API over a real NodeState: reads show what the node wrote, writes queue requests
only with the token, the request table's contract with the node loop, the token file, the live
server, schemathesis over every operation, and `bitswarm node status`."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient
from typer.testing import CliRunner

from bitswarm import __version__
from bitswarm.cli.main import app as cli_app
from bitswarm.home import Home
from bitswarm.node.api import ApiError, ApiServer, create_app, ensure_token
from bitswarm.node.state import NodeState

TOKEN = "test-token-" + "x" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = "sha256:" + "ab" * 32
JOB = {"spec_cid": SPEC, "kind": "train", "bounty": 10**18, "stake": 5 * 10**17, "window": 3600,
       "verify_fee": 10**17}
STATUS = {"state": "running", "address": "0x" + "a1" * 20, "peer_id": "12D3KooWTestPeer", "roles": ["solver", "verifier"],
          "chain_id": 31337, "block": 15, "api_url": "http://127.0.0.1:8700", "maddrs": ["/ip4/127.0.0.1/tcp/4001"],
          "version": __version__, "jobs_running": 1}
PEERS = [{"peer_id": "12D3KooWOther", "maddrs": ["/ip4/127.0.0.1/tcp/4002"], "roles": ["verifier"]}]
BLOB = "sha256:" + "ef" * 32
BALANCES = {"address": STATUS["address"], "token": 1000 * 10**18, "stake": 100 * 10**18, "locked": 5 * 10**17,
            "unbonding": 0, "eth": 10**19}


def _event(block, log_index, name, **args):
    return {"block": block, "log_index": log_index, "contract": "JobMarket", "event": name, "args": args}


def populate(state: NodeState) -> None:
    """What a node that solved job 7 (now disputed) and verified job 8 would have written."""
    state.upsert_job(7, kind="train", spec_cid=SPEC, poster="0xposter", bounty=10**18, solver_stake=5 * 10**17,
                     verify_fee=10**17, challenge_window=3600, num_leaves=8, ops_per_leaf=120, status="disputed",
                     solver=STATUS["address"], result_root=b"\x01" * 32, challenger="0xchallenger", role="solver",
                     local="answering the dispute", posted=1_700_000_000.0)
    state.upsert_job(8, kind="infer", spec_cid="sha256:" + "cd" * 32, status="committed", role="verifier", local="replaying")
    state.decide(7, "claim", stake=5 * 10**17)
    state.mark(7, "claim", "done", tx_hash="0x" + "11" * 32)
    state.decide(7, "commit", result_root=b"\x01" * 32)
    state.mark(7, "commit", "sent", tx_hash="0x" + "22" * 32)
    state.decide(8, "attest")
    state.add_events([_event(10, 0, "JobPosted", job_id=7, bounty=10**18),
                      _event(11, 0, "JobChallenged", job_id=7, challenger="0xchallenger"),
                      _event(12, 0, "StepAnswered", job_id=7, hash=b"\x02" * 32),
                      _event(12, 1, "ResultCommitted", job_id=8)], through_block=12)
    state.add_dispute_round(7, 0, "step", idx=4, lo=0, hi=8, solver_answer="aa" * 32, challenger_answer="bb" * 32,
                            block=11)
    state.add_dispute_round(7, 1, "step", idx=2, lo=0, hi=4, solver_answer="cc" * 32, challenger_answer="cc" * 32,
                            block=12)
    state.set_meta("started", str(time.time() - 60))
    state.put_snapshot("status", {**STATUS, "uptime_s": 58.0})
    state.put_snapshot("peers", PEERS)
    state.put_snapshot("balances", BALANCES)
    state.add_blob(BLOB, "checkpoint", job_id=7)
    state.add_blob("sha256:" + "0f" * 32, "spec")


@pytest.fixture
def state(tmp_path):
    s = NodeState(tmp_path / "node.db")
    populate(s)
    yield s
    s.close()


@pytest.fixture
def client(state):
    with TestClient(create_app(state, TOKEN)) as c:
        yield c


@pytest.fixture
def server(state):
    with ApiServer(create_app(state, TOKEN)) as srv:
        yield srv


@contextmanager
def node_loop(db_path, ok: bool, result: dict):
    """The node's side of the requests table: finish every pending request (its own connection,
    as the daemon's loop in another thread or process would); `ok` None alternates by request id."""
    node, stop = NodeState(db_path), threading.Event()

    def loop():
        while not stop.wait(0.01):
            for r in node.pending_requests():
                node.finish_request(r["id"], bool(r["id"] % 2) if ok is None else ok, result)
        node.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition} did not hold within {timeout} s"
        threading.Event().wait(0.01)


def request_count(state) -> int:
    return state.query("SELECT COUNT(*) AS n FROM requests")[0]["n"]


# -- reads ------------------------------------------------------------------------------------------

def test_status_peers_balances_show_the_snapshots(client, state):
    status = client.get("/status").json()
    assert {k: status[k] for k in STATUS} == STATUS  # including what the API does not know of
    assert status["last_block"] == state.last_block == 12
    assert 59 <= status["uptime_s"] < 120  # from the start time, fresher than the snapshot's
    assert client.get("/peers").json() == PEERS
    assert client.get("/balances").json() == BALANCES


def test_a_node_that_never_wrote_a_snapshot_still_answers(tmp_path):
    with TestClient(create_app(NodeState(tmp_path / "empty.db"), TOKEN)) as c:
        status = c.get("/status")
        assert status.status_code == 200
        assert status.json()["state"] == "starting" and status.json()["last_block"] == -1
        assert status.json()["version"] == __version__
        assert c.get("/peers").json() == [] and c.get("/jobs").json() == [] and c.get("/events").json() == []
        assert c.get("/balances").json() == dict.fromkeys(["address", "token", "stake", "locked", "unbonding",
                                                             "eth"])


def test_jobs_list_and_filter(client, state):
    jobs = client.get("/jobs").json()
    assert [j["job_id"] for j in jobs] == [8, 7]
    assert jobs[1] == state.job(7) and jobs[1]["result_root"] == "01" * 32
    assert [j["job_id"] for j in client.get("/jobs", params={"role": "verifier"}).json()] == [8]
    assert client.get("/jobs", params={"role": "referee"}).json() == []
    assert [j["job_id"] for j in client.get("/jobs", params={"limit": 1}).json()] == [8]


def test_job_detail_has_its_decisions_and_events(client, state):
    detail = client.get("/jobs/7").json()
    assert detail["job"] == state.job(7)
    assert [(d["action"], d["state"], d["tx_hash"]) for d in detail["decisions"]] == [
        ("claim", "done", "0x" + "11" * 32), ("commit", "sent", "0x" + "22" * 32)]
    assert detail["decisions"][1]["args"] == {"result_root": "01" * 32}
    assert [e["name"] for e in detail["events"]] == ["JobPosted", "JobChallenged", "StepAnswered"]
    assert detail["events"][2]["args"] == {"job_id": 7, "hash": "02" * 32}


def test_dispute_shows_the_bisection_path_and_its_events(client, state):
    dispute = client.get("/jobs/7/dispute").json()
    assert dispute["path"] == state.dispute_path(7)
    assert [(r["round"], r["lo"], r["hi"], r["idx"]) for r in dispute["path"]] == [(0, 0, 8, 4), (1, 0, 4, 2)]
    assert [e["name"] for e in dispute["events"]] == ["JobChallenged", "StepAnswered"]
    undisputed = client.get("/jobs/8/dispute").json()
    assert undisputed == {"job_id": 8, "path": [], "events": []}


def test_blobs_events_and_requests(client, state):
    assert [(b["cid"], b["what"], b["job_id"]) for b in client.get("/blobs").json()] == [
        (BLOB, "checkpoint", 7), ("sha256:" + "0f" * 32, "spec", None)]
    feed = client.get("/events").json()
    assert feed == state.events() and len(feed) == 4
    page = client.get("/events", params={"after": feed[0]["id"], "limit": 2}).json()
    assert [e["id"] for e in page] == [feed[1]["id"], feed[2]["id"]]
    assert [e["name"] for e in client.get("/events", params={"job_id": 8}).json()] == ["ResultCommitted"]
    rid = state.add_request("announce", {"cid": BLOB})
    state.finish_request(rid, True, {"peers": 3})
    assert client.get(f"/requests/{rid}").json() == state.request(rid)
    assert client.get(f"/requests/{rid}").json()["result"] == {"peers": 3}


@pytest.mark.parametrize("path,words", [("/jobs/99", "no job 99"), ("/jobs/99/dispute", "no job 99"),
                                        ("/requests/99", "no request 99"), ("/nowhere", "Not Found")])
def test_unknown_ids_are_404_with_a_message(client, path, words):
    r = client.get(path)
    assert r.status_code == 404 and words in r.json()["error"]


@pytest.mark.parametrize("path,params,field", [
    ("/jobs", {"limit": 0}, "query.limit"), ("/jobs", {"limit": 501}, "query.limit"),
    ("/jobs", {"role": "banker"}, "query.role"), ("/jobs/seven", {}, "path.job_id"),
    ("/jobs/99999999999999999999", {}, "path.job_id"), ("/events", {"after": -1}, "query.after"),
])
def test_bad_parameters_are_422_naming_the_field(client, path, params, field):
    r = client.get(path, params=params)
    assert r.status_code == 422
    assert r.json()["error"].startswith(field) and r.json()["detail"][0]["loc"] == field.split(".")


# -- writes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer é".encode()}],
                         ids=["none", "wrong", "not-bearer", "longer", "non-ascii"])
@pytest.mark.parametrize("path,body", [("/jobs", JOB), (f"/blobs/{BLOB}/announce", None), (f"/blobs/{BLOB}/fetch", {})])
def test_mutations_without_the_token_are_401_and_change_nothing(server, state, headers, path, body):
    r = httpx2.post(server.url + path, json=body, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "API token" in r.json()["error"]
    assert request_count(state) == 0


def test_post_job_queues_the_validated_body(client, state):
    r = client.post("/jobs", json={**JOB, "bounty": str(JOB["bounty"])}, headers=AUTH)  # JS sends big units as text
    assert r.status_code == 202 and r.json() == {"request_id": r.json()["request_id"], "state": "pending",
                                                 "result": None}
    row = state.request(r.json()["request_id"])
    assert (row["kind"], row["body"], row["state"]) == ("submit_job", JOB, "pending")
    assert [p["id"] for p in state.pending_requests()] == [row["id"]]
    bare = client.post("/jobs", json={**JOB, "spec_cid": "ab" * 32}, headers=AUTH)  # the digest alone is a CID too
    assert state.request(bare.json()["request_id"])["body"]["spec_cid"] == SPEC


@pytest.mark.parametrize("change,field", [
    ({"spec_cid": "sha256:" + "AB" * 32}, "spec_cid"), ({"spec_cid": "ab" * 31}, "spec_cid"),
    ({"spec_cid": "md5:" + "ab" * 32}, "spec_cid"), ({"kind": "mine"}, "kind"),
    ({"bounty": 0}, "bounty"), ({"stake": -1}, "stake"), ({"window": 0}, "window"),
    ({"window": 2_592_001}, "window"), ({"verify_fee": 10**18}, "verify_fee"), ({"tip": 1}, "tip"),
    ({"bounty": 2**256}, "bounty"),
])
def test_post_job_refuses_bad_bodies_with_422(client, state, change, field):
    r = client.post("/jobs", json={**JOB, **change}, headers=AUTH)
    assert r.status_code == 422 and field in r.json()["error"], r.json()
    assert request_count(state) == 0


def test_post_job_waits_for_the_node_and_answers_201(server, state):
    with node_loop(state.path, ok=True, result={"job_id": 9, "tx_hash": "0x" + "33" * 32}):
        r = httpx2.post(server.url + "/jobs", params={"wait": 10}, json=JOB, headers=AUTH, timeout=15)
    assert r.status_code == 201, r.text
    assert r.json() == {"request_id": r.json()["request_id"], "state": "done",
                        "result": {"job_id": 9, "tx_hash": "0x" + "33" * 32}}
    assert state.request(r.json()["request_id"])["state"] == "done"


def test_post_job_that_the_node_fails_is_409_with_its_message(server, state):
    with node_loop(state.path, ok=False, result={"error": "bounty exceeds this node's 3 credits"}):
        r = httpx2.post(server.url + "/jobs", params={"wait": 10}, json=JOB, headers=AUTH, timeout=15)
    assert r.status_code == 409 and "bounty exceeds this node's 3 credits" in r.json()["error"]


def test_post_job_still_pending_after_the_wait_is_202(server, state):
    r = httpx2.post(server.url + "/jobs", params={"wait": 0.2}, json=JOB, headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] == "pending"
    assert httpx2.get(f"{server.url}/requests/{r.json()['request_id']}").json()["state"] == "pending"
    assert httpx2.post(server.url + "/jobs", params={"wait": 121}, json=JOB, headers=AUTH).status_code == 422


@pytest.mark.parametrize("kind", ["announce", "fetch"])
def test_blob_requests_are_queued_with_the_full_cid(client, state, kind):
    r = client.post(f"/blobs/{BLOB}/{kind}", headers=AUTH)
    assert r.status_code == 202
    row = state.request(r.json()["request_id"])
    assert (row["kind"], row["body"]) == (kind, {"cid": BLOB})
    bare = client.post(f"/blobs/{'ef' * 32}/{kind}", headers=AUTH)
    assert state.request(bare.json()["request_id"])["body"] == {"cid": BLOB}
    for bad in ("EF" * 32, "sha256:" + "ef" * 31, "not-a-cid"):
        r = client.post(f"/blobs/{bad}/{kind}", headers=AUTH)
        assert r.status_code == 422 and "path.cid" in r.json()["error"]
    assert request_count(state) == 2


# -- the token --------------------------------------------------------------------------------------

def test_token_file_is_made_0600_and_kept(tmp_path):
    path = tmp_path / "home" / "api.token"
    old = os.umask(0)  # even a permissive umask must not widen it: the mode is set at creation
    try:
        token = ensure_token(path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(token) >= 40 and ensure_token(path) == token
    assert [p.name for p in path.parent.iterdir()] == ["api.token"]  # no temporary file left behind


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o602])
def test_token_file_open_to_others_is_refused(tmp_path, mode):
    path = tmp_path / "api.token"
    path.write_text("leaked\n")
    path.chmod(mode)
    with pytest.raises(ApiError, match=f"open to other users \\(mode {mode:04o}\\)"):
        ensure_token(path)


def test_empty_token_file_is_refused(tmp_path):
    path = tmp_path / "api.token"
    path.touch(mode=0o600)
    with pytest.raises(ApiError, match="empty"):
        ensure_token(path)


# -- the server -------------------------------------------------------------------------------------

def test_server_on_port_0_reports_its_port_and_stops_cleanly(state):
    srv = ApiServer(create_app(state, TOKEN), port=0).start()
    assert srv.port > 0 and srv.url == f"http://127.0.0.1:{srv.port}"
    assert httpx2.get(srv.url + "/status").json()["state"] == "running"
    thread = srv._thread
    srv.stop()
    assert not thread.is_alive()
    assert not any(t.name == f"bitswarm-api-{srv.port}" for t in threading.enumerate())
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(srv.url + "/status")


def test_stop_answers_a_waiting_post_instead_of_hanging(state):
    srv = ApiServer(create_app(state, TOKEN)).start()
    answers = []
    poster = threading.Thread(target=lambda: answers.append(
        httpx2.post(srv.url + "/jobs", params={"wait": 60}, json=JOB, headers=AUTH, timeout=30)))
    poster.start()
    wait_until(state.pending_requests)  # the POST is in: its request row exists
    began = time.monotonic()
    srv.stop()
    poster.join()
    assert time.monotonic() - began < 3  # not the 60 s wait, nor uvicorn's 5 s grace
    assert answers[0].status_code == 202 and answers[0].json()["state"] == "pending"


def test_a_taken_port_is_a_clear_error(state, server):
    with pytest.raises(ApiError, match=f"127.0.0.1:{server.port} is taken"):
        ApiServer(create_app(state, TOKEN), port=server.port).start()


def test_openapi_schema_names_models_and_security(client):
    doc = client.get("/openapi.json").json()
    assert doc["info"] == {"title": "bitswarm node", "version": __version__, "description": doc["info"]["description"]}
    post = doc["paths"]["/jobs"]["post"]
    assert post["operationId"] == "submit_job" and post["security"] == [{"HTTPBearer": []}]
    assert {"201", "202", "401", "409", "422"} <= set(post["responses"])
    assert doc["components"]["schemas"]["JobSubmission"]["properties"]["window"]["maximum"] == 2_592_000
    assert "security" not in doc["paths"]["/status"]["get"]


# -- schemathesis: no input makes a server error ----------------------------------------------------

# The OpenAPI document does not depend on the state, so it is read once at import (pytest needs the
# operations to make one test per operation); every case then runs against the test's own live server.
schema = schemathesis.openapi.from_dict(create_app(NodeState(Path(":memory:")), TOKEN).openapi())


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case, server, state):
    # A node loop answers every request (every other one a failure), so a generated `wait` ends at
    # once and the 201 and 409 answers are checked against the schema too.
    with node_loop(state.path, ok=None, result={"error": "refused by the test's node"}):
        case.call_and_validate(base_url=server.url, headers=AUTH, timeout=10,
                               checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                       response_schema_conformance])


# -- bitswarm node status ---------------------------------------------------------------------------

runner = CliRunner()


def write_node_json(home, url):
    info = Home(home).node_info_file
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps({"pid": os.getpid(), "api_url": url, "maddrs": STATUS["maddrs"],
                                "peer_id": STATUS["peer_id"], "address": STATUS["address"]}))


def test_node_status_reads_the_running_nodes_api(server, bitswarm_home):
    write_node_json(bitswarm_home, server.url)
    result = runner.invoke(cli_app, ["node", "status", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["api_url"] == server.url and got["balances"] == BALANCES
    assert got["status"]["address"] == STATUS["address"] and got["status"]["last_block"] == 12
    human = runner.invoke(cli_app, ["node", "status"])
    assert human.exit_code == 0, human.output
    for words in (STATUS["address"], STATUS["peer_id"], "solver,verifier", "1000 credits", "100 credits",
                  "0.5 credits", "running", "/ip4/127.0.0.1/tcp/4001"):
        assert words in human.stdout, (words, human.stdout)


def test_node_status_without_a_node_says_so(bitswarm_home, monkeypatch):
    with socket.socket() as sock:  # bound, not listening: a connection is refused, and nobody else takes the port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        monkeypatch.setenv("BITSWARM_API_PORT", str(port))
        result = runner.invoke(cli_app, ["node", "status"])
        assert result.exit_code == 1
        said = " ".join(result.stderr.split())  # rich wraps long lines
        assert f"no node is running at http://127.0.0.1:{port}; start one with `bitswarm node run`" in said
        assert "Traceback" not in result.output
        as_json = runner.invoke(cli_app, ["node", "status", "--json"])
        assert as_json.exit_code == 1 and "no node is running" in json.loads(as_json.stdout)["error"]
        write_node_json(bitswarm_home, f"http://127.0.0.1:{port}")  # a stale node.json reads the same
        assert "no node is running" in runner.invoke(cli_app, ["node", "status"]).stderr
