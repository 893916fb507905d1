"""The README's Examples block, run line by line as a person would, in a fresh data directory.

A person copies each line; where a line holds `sha256:...` (or a CID of our own model that their
store holds under another name) they paste the CID an earlier line printed. This test does the
same: it substitutes the CID the newest `model init`, `model import`, `swarm warm-start` or `assist train` printed,
runs `bitswarm devnet &` in the background until it serves, and fails on the first line that
exits non-zero, naming it. So a README that drifts from the CLI fails.

The whole block as written trains SmolLM2 (9.5 minutes here): that run is marked slow. The
default suite runs the same block with SmolLM2 swapped for a tiny model, every other word as
written (about 70 s), so CI fails when the README and the CLI drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CID = re.compile(r"sha256:(?:[0-9a-f]{64}|\.\.\.)")
PASSPHRASE = "a long passphrase"


def example_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("Examples:", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_examples(tmp_path: Path, *, tiny: bool) -> list[tuple[str, float]]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    port = _free_port()
    env = {**os.environ, "BITSWARM_HOME": str(home), "BITSWARM_RPC": f"http://127.0.0.1:{port}", "COLUMNS": "200"}
    newest_model: str | None = None
    smollm2: str | None = None
    timings, devnet = [], None
    try:
        for line in example_lines():
            words = shlex.split(line.split("  #")[0].split(" # ")[0])
            background = words[-1] == "&"
            words = [w for w in words if w != "&"]
            extra_env = {}
            while words and re.match(r"^[A-Z_]+=", words[0]):
                k, v = words.pop(0).split("=", 1)
                extra_env[k] = v
            if words[0] == "printf":  # shell, as written
                subprocess.run(line, shell=True, cwd=work, check=True)
                continue
            assert words[0] == "bitswarm", line
            imports_smollm2 = words[1:4] == ["model", "import", "smollm2-135m-instruct"]
            if tiny and imports_smollm2:  # the stand-in, under its own label
                words = ["bitswarm", "model", "init", "tiny", "--seed", "1", *words[4:]]
            if tiny:
                words = [w if w != "smollm2-135m-instruct" else "tiny-seed1" for w in words]

            def cid_for(word: str) -> str:
                if word == "sha256:...":  # "paste the CID printed above"
                    assert newest_model, f"README: `{line}` needs a CID no earlier line printed"
                    return newest_model
                if tiny:  # every CID written out in the README is SmolLM2's
                    assert smollm2, f"README: `{line}` names a CID before SmolLM2 is imported"
                    return smollm2
                return word

            words = [cid_for(w) if CID.fullmatch(w) else w for w in words]
            if words[1] == "devnet":
                words += ["--port", str(port)]
            cmd = [sys.executable, "-m", "bitswarm", *words[1:]]
            if background:
                devnet = subprocess.Popen(cmd + ["--json"], cwd=work, env={**env, **extra_env}, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True, start_new_session=True)
                assert json.loads(devnet.stdout.readline())["url"], "README: the devnet did not start"
                continue
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=work, env={**env, "BITSWARM_PASSPHRASE": PASSPHRASE, **extra_env},
                                  capture_output=True, text=True, timeout=1800)
            timings.append((line, time.perf_counter() - t0))
            assert proc.returncode == 0, f"README line `{line}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            if "--json" in words:
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                if words[1:3] in (["model", "init"], ["model", "import"], ["swarm", "warm-start"]):
                    newest_model = result["cid"]
                    if imports_smollm2:
                        smollm2 = newest_model
                if words[1:3] == ["assist", "train"]:
                    newest_model = result["model"]
        return timings
    finally:
        if devnet is not None:
            os.killpg(devnet.pid, signal.SIGTERM)
            devnet.wait(timeout=60)


@pytest.mark.network
def test_the_readme_examples_run_with_a_tiny_model(tmp_path):
    timings = run_examples(tmp_path, tiny=True)
    assert len(timings) >= 20
    for line, seconds in timings:
        print(f"{seconds:8.1f} s  {line}")


@pytest.mark.slow
@pytest.mark.network
def test_the_readme_examples_run_as_written(tmp_path):
    timings = run_examples(tmp_path, tiny=False)
    for line, seconds in timings:
        print(f"{seconds:8.1f} s  {line}")
    losses = [json.loads(r)["loss"] for r in (tmp_path / "work" / "runs" / "first" / "steps.jsonl").read_text().splitlines()]
    print("SmolLM2 example loss by step:", [round(x, 3) for x in losses])
    assert max(losses) < losses[0] + 0.5, "the example's learning rate knocks the pretrained model's loss up"
