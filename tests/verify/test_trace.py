"""Per-op traces: tracing leaves the bits alone, and the trace pins where a step went wrong."""

import json

from typer.testing import CliRunner

from bitswarm.cli.main import app
from bitswarm.jobs.train_job import load_run_spec, prepare, run_training
from bitswarm.verify.trace import trace_step
from tests.verify.test_replay import honest_run  # noqa: F401  (module-scoped fixture)

runner = CliRunner()


def test_tracing_does_not_change_the_bits(honest_run):  # noqa: F811
    store, run = honest_run
    t = trace_step(run, prepare(store, load_run_spec(run)), 3)
    assert t["matches_log"] and t["ops"] > 100
    ops = [r["op"] for r in t["records"]]
    assert ops[0] == "embedding_fwd" and "cross_entropy_bwd" in ops and ops[-1] == "row_sum"
    assert ops.count("adamw_step_") == len(prepare(store, load_run_spec(run)).state.params)
    again = trace_step(run, prepare(store, load_run_spec(run)), 3)
    assert again["root"] == t["root"]


def test_traces_of_different_work_diverge_at_the_first_affected_op(honest_run, tmp_path):  # noqa: F811
    store, run = honest_run
    spec = load_run_spec(run)
    other = spec.model_copy(update={"lr": spec.lr.model_copy(update={"peak": spec.lr.peak * 2})})
    cheat = tmp_path / "cheat"
    run_training(store, other, cheat)
    honest = trace_step(run, prepare(store, spec), 1)
    lied = trace_step(cheat, prepare(store, other), 1)
    first = next(i for i, (a, b) in enumerate(zip(honest["records"], lied["records"])) if a != b)
    # same data and initial state: forward, backward and clipping agree; the optimizer differs
    assert honest["records"][first]["op"] == "adamw_step_"
    assert honest["records"][first]["in"][:4] == lied["records"][first]["in"][:4]


def test_trace_cli(honest_run, tmp_path, bitswarm_home):  # noqa: F811
    store, run = honest_run
    bitswarm_home.mkdir(parents=True, exist_ok=True)
    (bitswarm_home / "store").symlink_to(store.root)
    r = runner.invoke(app, ["trace", str(run), "--step", "2", "--out", str(tmp_path / "ops.jsonl"), "--json"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["matches_log"] and len((tmp_path / "ops.jsonl").read_text().splitlines()) == res["ops"]
    r = runner.invoke(app, ["trace", str(run), "--step", "99", "--json"])
    assert r.exit_code == 1 and "not in" in json.loads(r.stdout)["error"]
