"""The network end to end: a devnet and `bitswarm node run` processes on loopback.

A poster submits jobs with the CLI; a solver claims, trains and commits; a verifier audits by
re-executing sampled steps; a referee rules. A solver that cheats is challenged, loses the
dispute on chain and is slashed. Every actor is its own process, as on separate machines.
"""

from __future__ import annotations

import json
import signal

import pytest

from bitswarm.jobs.spec import example_spec
from bitswarm.ledger.client import CREDIT, JOB_STATUS
from bitswarm.models.importer import init_model
from bitswarm.repro import train as repro_train
from bitswarm.store import BlobStore

from bitswarm.demo.network import NetworkError, cli_json, make_node, start_chain, wait_for

pytestmark = pytest.mark.network
BOUNTY, WINDOW = 50, 12


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("net")
    chain = start_chain(root / "chain")
    nodes = {}
    try:
        poster = nodes["poster"] = make_node(root, "poster", chain, "")
        model = init_model(BlobStore(poster.home / "store"), "tiny", 0)
        spec = example_spec(model, steps=6).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
        (root / "spec.yaml").write_text(spec.to_yaml())
        (root / "infer.yaml").write_text(f"model: {model}\nprompt: Add two and three.\nmax_new_tokens: 6\n")
        (root / "eval.yaml").write_text(f"model: {model}\ntasks: tiny\nitems: 3\nmax_new_tokens: 4\nseed: 1\n")
        long = spec.model_copy(update={"steps": 40, "seq_len": 32, "global_batch": 4, "checkpoint_every": 5})
        (root / "long.yaml").write_text(long.to_yaml())
        poster.start()
        boot = ["--bootstrap", poster.bootstrap_addr()]
        for name, roles in [("solver", "solver"), ("verifier", "verifier"), ("referee", "referee")]:
            # The verifier re-executes every step here, so it cannot miss the one a cheat faults
            # (at the default rate it catches a one-step fault with that rate's probability).
            nodes[name] = make_node(root, name, chain, roles, args=boot, sample_rate=1.0 if name == "verifier" else 0.25)
            nodes[name].start()
        yield {"root": root, "chain": chain, "nodes": nodes, "boot": boot}
    finally:
        for n in nodes.values():
            try:
                n.stop()
            except NetworkError:
                pass
        chain.stop()


def _status(net, job_id: int) -> str:
    return JOB_STATUS[net["nodes"]["poster"].ledger().job(job_id)["status"]]


def _submit(net, spec: str = "spec.yaml", *extra: str) -> int:
    poster = net["nodes"]["poster"]
    res = cli_json(poster.home, "job", "submit", str(net["root"] / spec), "--bounty", str(BOUNTY),
                   "--window", str(WINDOW), *extra)
    return res["job_id"]


def test_an_honest_train_job_is_solved_verified_settled_and_paid(net, tmp_path):
    nodes = net["nodes"]
    solver, verifier, poster = nodes["solver"], nodes["verifier"], nodes["poster"]
    before = solver.ledger().token_balance()
    job_id = _submit(net)
    wait_for("the job to settle", lambda: _status(net, job_id) in ("done", "failed"), timeout=300)
    assert _status(net, job_id) == "done", solver.log()[-3000:]
    assert solver.ledger().token_balance() - before == BOUNTY * CREDIT
    audited = verifier.api(f"/jobs/{job_id}")
    assert "reproduce" in json.dumps(audited), audited  # the verifier re-executed and found it right
    st = cli_json(poster.home, "job", "status", str(job_id))
    assert st["status"] == "done" and st["solver"].lower() == solver.address.lower()
    res = cli_json(poster.home, "job", "result", str(job_id), "--out", str(tmp_path / "result"))
    final = repro_train.TrainState.load(tmp_path / "result" / "final")
    assert final.hash() == res["final_state_hash"] and final.step == 6


@pytest.mark.slow  # tests/demo plays this end to end in the default suite; `make test-slow` runs it here too
def test_an_infer_job_is_solved_verified_and_its_record_returned(net, tmp_path):
    nodes = net["nodes"]
    job_id = _submit(net, "infer.yaml", "--kind", "infer")
    wait_for("the job to settle", lambda: _status(net, job_id) in ("done", "failed"), timeout=300)
    assert _status(net, job_id) == "done"
    assert "reproduce" in json.dumps(nodes["verifier"].api(f"/jobs/{job_id}"))
    res = cli_json(nodes["poster"].home, "job", "result", str(job_id), "--out", str(tmp_path / "r"))
    record = json.loads((tmp_path / "r" / "inference.json").read_text())
    assert res["kind"] == "infer" and len(record["tokens"]) == 6 and record["root"]


@pytest.mark.slow  # tests/demo plays this end to end in the default suite; `make test-slow` runs it here too
def test_an_eval_job_scores_a_model_on_tasks_and_is_verified(net, tmp_path):
    nodes = net["nodes"]
    job_id = _submit(net, "eval.yaml", "--kind", "eval")
    wait_for("the job to settle", lambda: _status(net, job_id) in ("done", "failed"), timeout=300)
    assert _status(net, job_id) == "done"
    assert "reproduce" in json.dumps(nodes["verifier"].api(f"/jobs/{job_id}"))
    res = cli_json(nodes["poster"].home, "job", "result", str(job_id), "--out", str(tmp_path / "r"))
    record = json.loads((tmp_path / "r" / "task_eval.json").read_text())
    assert res["kind"] == "eval" and len(record["scores"]["items"]) == 3 and 0 <= record["scores"]["mean"] <= 1


def test_verification_pays_the_verifier_that_re_executed_not_the_one_that_copied(net):
    nodes = net["nodes"]
    lazy = nodes["lazy"] = make_node(net["root"], "lazy", net["chain"], "verifier",
                                     args=[*net["boot"], "--lazy-verifier"])
    lazy.start()
    honest_before, lazy_before = nodes["verifier"].ledger().token_balance(), lazy.ledger().token_balance()
    # A longer window than the others: the honest verifier must audit and attest inside it while
    # six processes share two cores; this test is about who gets paid, not about speed.
    job_id = _submit(net, "spec.yaml", "--verify-fee", "10", "--window", str(3 * WINDOW))
    wait_for("the job to settle", lambda: _status(net, job_id) in ("done", "failed"), timeout=300)
    assert _status(net, job_id) == "done"
    feed = wait_for("the poster's node to see it finalized", lambda: [
        e for e in nodes["poster"].api(f"/events?limit=500&job_id={job_id}") if e["name"] == "JobFinalized"] and
        nodes["poster"].api(f"/events?limit=500&job_id={job_id}"), timeout=30)
    paid = [e["args"] for e in feed if e["name"] == "VerifierPaid"]
    assert [p["verifier"].lower() for p in paid] == [nodes["verifier"].address.lower()]
    assert nodes["verifier"].ledger().token_balance() - honest_before == 10 * CREDIT
    assert lazy.ledger().token_balance() == lazy_before and lazy.ledger().node()["locked"] == 0
    attested = [e["args"]["attester"].lower() for e in feed if e["name"] == "Attested"]
    assert sorted(attested) == sorted(a.address.lower() for a in (nodes["verifier"], lazy))  # both tried
    assert lazy.stop(signal.SIGINT) == 0 and lazy.leftovers() == []  # Ctrl-C stops a node as cleanly


@pytest.mark.slow  # tests/demo plays this end to end in the default suite; `make test-slow` runs it here too
def test_a_cheating_solver_is_challenged_loses_and_is_slashed(net):
    nodes = net["nodes"]
    assert nodes["solver"].stop() == 0  # the honest solver leaves; SIGTERM stops it cleanly ...
    assert nodes["solver"].leftovers() == []  # ... with every child reaped, its libp2p daemon included
    cheat = nodes["cheat"] = make_node(net["root"], "cheat", net["chain"], "solver",
                                       args=[*net["boot"], "--adversary", "bitflip@step=3,op=40"])
    cheat.start()
    stake_before = cheat.ledger().node()["staked"]
    job_id = _submit(net)
    wait_for("the dispute to settle", lambda: _status(net, job_id) in ("done", "failed"), timeout=400)
    assert _status(net, job_id) == "failed", cheat.log()[-3000:]
    d = nodes["poster"].ledger().dispute(job_id)
    assert d["winner"].lower() == nodes["verifier"].address.lower()
    job = nodes["poster"].ledger().job(job_id)
    assert cheat.ledger().node()["staked"] == stake_before - job["solver_stake"]
    path = nodes["verifier"].api(f"/jobs/{job_id}/dispute")
    assert path, path


@pytest.mark.slow  # ~60 s of the default suite's 15-minute budget; `make test-slow` runs it
def test_kill_9_mid_training_and_mid_dispute_changes_nothing(net):
    """The cheat is killed while it trains, the verifier while it plays the dispute; both restart
    from their databases and run directories, and the cheat still loses what it staked."""
    nodes = net["nodes"]
    cheat, verifier = nodes["cheat"], nodes["verifier"]
    stake_before = cheat.ledger().node()["staked"]
    job_id = _submit(net, "long.yaml")
    wait_for("the cheat to be training", lambda: "solving: step" in (cheat.api(f"/jobs/{job_id}")["job"]["local"] or ""),
             timeout=120, every=0.1)
    cheat.kill9()
    cheat.start()
    wait_for("the challenge", lambda: _status(net, job_id) == "disputed", timeout=300)
    wait_for("a bisection round", lambda: verifier.api(f"/jobs/{job_id}/dispute")["path"], timeout=120, every=0.2)
    verifier.kill9()
    verifier.start()
    wait_for("the dispute to settle", lambda: _status(net, job_id) in ("done", "failed"), timeout=400)
    assert _status(net, job_id) == "failed"
    assert nodes["poster"].ledger().dispute(job_id)["winner"].lower() == verifier.address.lower()
    assert cheat.ledger().node()["staked"] == stake_before - nodes["poster"].ledger().job(job_id)["solver_stake"]
    claims = [e for e in nodes["poster"].api(f"/events?limit=500&job_id={job_id}") if e["name"] == "JobClaimed"]
    assert len(claims) == 1  # claimed once, before and after the crash
    decisions = cheat.api(f"/jobs/{job_id}")["decisions"]
    assert [d["action"] for d in decisions] == ["claim", "commit"] and all(d["state"] == "done" for d in decisions)
    assert [d["action"] for d in verifier.api(f"/jobs/{job_id}")["decisions"]].count("challenge") == 1
