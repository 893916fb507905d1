"""`bitswarm spec example train` and `bitswarm train`: valid specs, result keys, clear errors."""

import json

import yaml
from typer.testing import CliRunner

from bitswarm.cli.main import app
from bitswarm.jobs.spec import parse_spec

runner = CliRunner()


def _json(*args, code=0):
    r = runner.invoke(app, list(args))
    assert r.exit_code == code, (r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1]), r


def test_example_spec_is_valid_and_trains(tmp_path):
    model, _ = _json("model", "init", "tiny", "--json")
    spec, _ = _json("spec", "example", "train", "--model", model["cid"], "--steps", "2", "--out", str(tmp_path / "s.yaml"), "--json")
    assert parse_spec(spec).model == model["cid"]
    assert yaml.safe_load((tmp_path / "s.yaml").read_text()) == spec
    (tmp_path / "s.json").write_text(json.dumps({**spec, "seq_len": 16, "global_batch": 2}))
    result, _ = _json("train", "--spec", str(tmp_path / "s.json"), "--out", str(tmp_path / "run"), "--micro-batch", "1", "--json")
    assert set(result) >= {"final_state_hash", "steps", "step_hashes_root"} and result["steps"] == 2
    assert result["backend"] == "repro" and result["kernels"] == "numba"  # the flag as typed, and what ran it
    assert json.loads((tmp_path / "run" / "result.json").read_text())["final_state_hash"] == result["final_state_hash"]


def test_bad_spec_and_backend_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: nope\nsteps: 0\n")
    err, r = _json("train", "--spec", str(bad), "--out", str(tmp_path / "o"), "--json", code=1)
    assert "model" in err["error"] and "steps" in err["error"] and "dataset" in err["error"]
    err, _ = _json("train", "--spec", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o"), "--json", code=1)
    assert "does not exist" in err["error"]
    err, _ = _json("train", "--spec", str(bad), "--out", str(tmp_path / "o"), "--backend", "gpu", "--json", code=1)
    assert "choose one of repro, reference, native" in err["error"]
    err, _ = _json("spec", "example", "train", "--model", "not-a-cid", "--json", code=1)
    assert "sha256" in err["error"]
