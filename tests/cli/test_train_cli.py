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


def test_a_finished_run_becomes_a_model_to_generate_from(tmp_path, bitswarm_home):
    from bitswarm.cli import train_cmd
    from bitswarm.cli.main import app as main_app

    assert any(c.callback is train_cmd.from_run for g in main_app.registered_groups
               for c in g.typer_instance.registered_commands), "`bitswarm model from-run` is not registered"
    model, _ = _json("model", "init", "tiny", "--json")
    spec, _ = _json("spec", "example", "train", "--model", model["cid"], "--steps", "2", "--json")
    (tmp_path / "s.json").write_text(json.dumps({**spec, "seq_len": 16, "global_batch": 2, "checkpoint_every": 1}))
    _json("train", "--spec", str(tmp_path / "s.json"), "--out", str(tmp_path / "run"), "--json")
    _json("model", "from-run", str(tmp_path / "nothing"), "--json", code=1)
    made, _ = _json("model", "from-run", str(tmp_path / "run"), "--label", "mine", "--json")
    assert made["base_model"] == model["cid"] and made["steps"] == 2 and made["model"] != model["cid"]
    gen, _ = _json("generate", "--model", "mine", "--prompt", "hi", "--max-new-tokens", "2", "--json")
    assert gen["model"] == made["model"]
    again, _ = _json("model", "from-run", str(tmp_path / "run"), "--json")
    assert again["model"] == made["model"]  # the same weights, the same CID
    (tmp_path / "run" / "result.json").unlink()
    err, _ = _json("model", "from-run", str(tmp_path / "run"), "--json", code=1)
    assert "has not finished" in err["error"]


def test_the_example_spec_fine_tunes_a_pretrained_model_gently(tmp_path, bitswarm_home):
    random_model, _ = _json("model", "init", "tiny", "--json")
    big = tmp_path / "weights.bin"
    big.write_bytes(b"\0" * (51 * 10**6))  # stands for an imported model: only its size is read
    big_cid, _ = _json("store", "put", str(big), "--json")
    small, _ = _json("spec", "example", "train", "--model", random_model["cid"], "--json")
    gentle, _ = _json("spec", "example", "train", "--model", big_cid["cid"], "--json")
    assert small["lr"]["peak"] == 3e-3 and gentle["lr"]["peak"] == 1e-4
