"""`bitswarm assist simulate / share / train`: the JSON each prints, and errors a person can act on."""

import json

from typer.testing import CliRunner

from bitswarm.cli.main import app

runner = CliRunner()


def _json(*args, code=0):
    r = runner.invoke(app, list(args))
    assert r.exit_code == code, (r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_simulate_share_train_then_simulate_with_the_assistant(bitswarm_home):
    alone = _json("assist", "simulate", "--episodes", "3", "--share", "--json")
    assert alone["goal_completion_rate"] == 1.0 and len(alone["shared"]) == 3
    assert alone["human_actions_alone"] > 10
    made = _json("assist", "train", "--steps", "3", "--batch", "32", "--json")  # every episode shared here
    assert made["model"].startswith("sha256:") and made["episodes"] == alone["shared"]
    assert set(made) >= {"dataset", "final_state_hash", "step_hashes_root", "examples", "run"}
    res = _json("assist", "simulate", "--episodes", "2", "--model", made["model"], "--json")
    assert set(res) >= {"human_actions_alone", "human_actions_with_assistant", "assistant_share_of_goal_blocks",
                        "assistant_wrong_blocks", "goal_completion_rate"}
    receipts = _json("assist", "share", "--json")["receipts"]  # every recorded episode (5 + 2 played above)
    assert len(receipts) == 7 and {r["cid"] for r in receipts} >= set(alone["shared"])


def test_errors_name_what_is_wrong(bitswarm_home, tmp_path):
    err = _json("assist", "train", "--episodes", "sha256:" + "0" * 64, "--json", code=1)
    assert "is not in the store" in err["error"]
    err = _json("assist", "simulate", "--model", "sha256:" + "1" * 64, "--episodes", "1", "--json", code=1)
    assert "not in the store" in err["error"]
    err = _json("assist", "share", "--json", code=1)
    assert "no episodes recorded" in err["error"]
    err = _json("assist", "train", "--json", code=1)
    assert "none shared from this home yet" in err["error"]
    (tmp_path / "e.json").write_text("{}")
    err = _json("assist", "share", str(tmp_path / "e.json"), "--json", code=1)
    assert "not an episode" in err["error"]


def test_play_serves_on_loopback_until_interrupted(bitswarm_home):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    exe = Path(sys.executable).parent / "bitswarm"
    proc = subprocess.Popen([str(exe), "assist", "play", "--port", "0", "--seed", "3", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "BITSWARM_HOME": str(bitswarm_home)})
    try:
        ready = json.loads(proc.stdout.readline())  # printed once it listens
        assert ready["url"].startswith("http://127.0.0.1:") and ready["model"] is None
        with urllib.request.urlopen(ready["url"] + "api/state", timeout=10) as r:
            assert json.load(r)["seed"] == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) in (0, 130), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
