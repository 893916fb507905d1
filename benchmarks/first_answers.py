"""A newcomer's first answers, timed from the outside (not part of the test suite).

    .venv/bin/python benchmarks/first_answers.py [--repeat 5] [--tokens 32] [--home DIR]

1. Light commands: wall time of `bitswarm --version`, `--help`, `config show` and
   `identity show`, each its own process as a person runs it; the median of --repeat runs
   (target < 0.5 s). Beside them, `python -c pass`: the floor any command pays.
2. An unknown model CID: wall time until `generate` says so.
3. `generate` of --tokens new tokens on SmolLM2-135M-Instruct, whole command wall time
   (process start, loading, decoding), `--backend repro` against `--backend native`,
   alternated in one run; the best of --repeat each (target: repro within 1.3x of native).
   The model is imported into --home first if it is not there (default: a temporary home).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = [sys.executable, "-m", "bitswarm"]
PW = "a long enough passphrase"


def _wall(cmd: list[str], env: dict, ok: bool = True) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if ok and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--home", help="data directory holding (or to hold) SmolLM2 (default: a temporary one)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="first-answers-")
    home = Path(args.home or tmp.name)
    env = {**os.environ, "BITSWARM_HOME": str(home), "BITSWARM_PASSPHRASE": PW}
    if not (home / "keys" / "account.json").exists():
        _wall(BIN + ["identity", "new", "--json"], env)

    light = {"python -c pass": [sys.executable, "-c", "pass"]}
    for cmd in (["--version"], ["--help"], ["config", "show"], ["identity", "show"]):
        light["bitswarm " + " ".join(cmd)] = BIN + cmd
    report: dict = {"light_commands_s": {}, "target_light_s": 0.5}
    for name, cmd in light.items():
        report["light_commands_s"][name] = round(statistics.median(_wall(cmd, env) for _ in range(args.repeat)), 3)

    report["unknown_model_s"] = round(_wall(BIN + ["generate", "--model", "sha256:" + "0" * 64, "--prompt", "x"], env,
                                            ok=False), 2)

    listed = json.loads(subprocess.run(BIN + ["store", "ls", "--json"], env=env, capture_output=True, text=True,
                                       check=True).stdout)["blobs"]
    if not any(b["label"] == "smollm2-135m-instruct" for b in listed):
        t0 = time.perf_counter()
        _wall(BIN + ["model", "import", "smollm2-135m-instruct", "--json"], env)
        report["import_s"] = round(time.perf_counter() - t0, 1)
    gen = BIN + ["generate", "--model", "smollm2-135m-instruct", "--prompt", "Name three colours and say why you like them.",
                 "--max-new-tokens", str(args.tokens), "--json"]
    walls: dict[str, list[float]] = {"repro": [], "native": []}
    tokens: dict[str, int] = {}
    for _ in range(args.repeat):
        for backend in walls:
            t0 = time.perf_counter()
            proc = subprocess.run(gen + ["--backend", backend], env=env, capture_output=True, text=True, check=True)
            walls[backend].append(time.perf_counter() - t0)
            tokens[backend] = json.loads(proc.stdout)["new_tokens"]
    best = {b: min(w) for b, w in walls.items()}
    report["generate"] = {
        "new_tokens": tokens,
        "wall_s_best": {b: round(s, 2) for b, s in best.items()},
        "wall_s_all": {b: [round(s, 2) for s in w] for b, w in walls.items()},
        "repro_over_native": round(best["repro"] / best["native"], 3),
        "target": "<= 1.3",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
