"""How long `bitswarm demo` takes, and how fast its dashboard loads in a real browser.

Not a test. Run:  .venv/bin/python benchmarks/demo.py [--loads 5]

Starts `bitswarm demo --headless --serve --json` in a fresh folder (the whole network: devnet,
five nodes, the swarm, the assistants), reads the summary it prints (its `seconds` is the demo's
own wall time), then opens the dashboard in Debian's chromium (playwright) `--loads` times in fresh
pages and measures, for each, the time from navigation to every panel drawn from live data: the
dispute's verdict, one swarm line per peer, the assistant panel's figures and the event feed. The
issue's targets: the demo under 5 minutes on 2 cores (10 at most), the page under one second.
Stops the demo with SIGINT, as Ctrl-C would, and checks it exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
READY = ['[data-testid="dispute-verdict"]', '[data-testid="swarm-line"]', '[data-testid="event-item"]',
         '[data-testid="network-row"]', '[data-testid="job-row"]']


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=5, help="page loads to time (fresh page each)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from bitswarm.demo.network import BIN, PASS

    work = Path(tempfile.mkdtemp(prefix="bitswarm-demo-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITSWARM_")} | {"BITSWARM_PASSPHRASE": PASS}
    t0 = time.perf_counter()
    proc = subprocess.Popen([*BIN, "--home", str(work / "home"), "demo", "--headless", "--serve", "--json", "--dir",
                             str(work / "net")], stdout=subprocess.PIPE, stderr=open(work / "demo.err", "w"),
                            text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()
        wall = time.perf_counter() - t0
        if not line:
            print((work / "demo.err").read_text()[-3000:], file=sys.stderr)
            return 1
        summary = json.loads(line)
        loads = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            for _ in range(args.loads):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                start = time.perf_counter()
                page.goto(summary["dashboard_url"])
                for sel in READY:
                    page.wait_for_selector(sel, timeout=10_000)
                loads.append(time.perf_counter() - start)
                page.close()
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(120)
    out = {"demo_seconds": summary["seconds"], "demo_wall_seconds_incl_start": round(wall, 1),
           "page_load_seconds": {"median": round(statistics.median(loads), 3), "max": round(max(loads), 3),
                                 "all": [round(x, 3) for x in loads]},
           "job_settled": summary["job_settled"], "cheater_slashed": summary["cheater_slashed"],
           "dispute_rounds": summary["dispute_rounds"], "exit_code_after_sigint": code}
    print(json.dumps(out, indent=1))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
