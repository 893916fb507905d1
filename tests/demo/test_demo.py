"""`bitswarm demo --headless --serve --json`: the whole network as a process tree, then its dashboard
in a real browser (Debian's chromium driven by playwright), then Ctrl-C.

One demo serves the module (about two and a half minutes on two cores): the chain, five nodes, the
swarm and the assistants are the real processes a person's `make demo` starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bitswarm.demo.network import BIN, cli_json, env
from bitswarm.demo.run import MARKER

from ..browser import SCREENSHOTS, needs_browser

pytestmark = pytest.mark.network


def _processes_under(root: Path) -> list[str]:
    """Live processes the demo started: any whose command line names its folder (nodes, the chain,
    the swarm, assist runs) and any in a node's process group (its libp2p daemon)."""
    groups = set()
    for info in root.glob("*/node.json"):
        try:
            groups.add(int(json.loads(info.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            pass
    found = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmd.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (cmd.parent / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" or int(cmd.parent.name) == os.getpid():
            continue
        if str(root) in text or int(fields[2]) in groups:
            found.append(f"{cmd.parent.name}: {text[:160]}")
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "net"
    home = root.parent / "home"
    proc = subprocess.Popen([*BIN, "--home", str(home), "demo", "--headless", "--serve", "--json", "--dir", str(root)],
                            stdout=subprocess.PIPE, stderr=open(root.parent / "demo.err", "w"), text=True, env=env(),
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        if not line:
            proc.wait(30)
            pytest.fail(f"demo exited {proc.returncode}:\n{(root.parent / 'demo.err').read_text()[-4000:]}")
        yield {"summary": json.loads(line), "proc": proc, "root": root, "home": home}
    finally:
        if proc.poll() is None:  # a test failed before the Ctrl-C test: stop it the same way
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its nodes get SIGTERM from the kernel (PDEATHSIG)


def test_the_demo_settles_jobs_slashes_the_cheat_runs_the_swarm_and_trains_an_assistant(demo):
    s = demo["summary"]
    assert s["job_settled"] is True and s["cheater_slashed"] is True, s
    assert s["dispute_rounds"] >= 2 and s["swarm_rounds"] >= 1 and s["assist_episodes"] >= 1, s
    assert isinstance(s["seconds"], float) and s["failures"] == {}
    by_name = {j["name"]: j for j in s["jobs"]}
    assert {n: by_name[n]["status"] for n in ("train", "infer", "eval", "cheat")} == {
        "train": "done", "infer": "done", "eval": "done", "cheat": "failed"}
    assert s["payouts"]["solver"] == 150 and s["slashed_credits"] > 0
    assert by_name["cheat"]["solver"].lower() == s["cheat_address"].lower()
    a = s["assist"]
    assert a["model"].startswith("sha256:") and a["human_actions_with_assistant"] > 0
    assert s["dashboard_url"].startswith("http://127.0.0.1:")
    assert (demo["root"] / MARKER).exists()


def _open(page, demo, name: str):
    page.goto(demo["summary"]["dashboard_url"])
    page.wait_for_selector('[data-testid="connection"][data-state="live"]', timeout=15_000)
    return SCREENSHOTS / f"dashboard-{name}.png"


def _shoot(page, path: Path, selector: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if selector:
        page.locator(selector).first.scroll_into_view_if_needed()
    page.screenshot(path=str(path))


@needs_browser
def test_the_dispute_view_shows_the_finished_dispute_and_the_slashed_cheater(demo, page):
    shot = _open(page, demo, "dispute")
    cheat = demo["summary"]["cheat_address"]
    verdict = page.locator('[data-testid="dispute-verdict"]')
    verdict.wait_for(timeout=15_000)
    assert "slashed" in verdict.inner_text() and cheat.lower() in verdict.inner_text().lower()
    assert (verdict.get_attribute("data-loser") or "").lower() == cheat.lower()
    rounds = page.locator('[data-testid="dispute-round"]')
    assert rounds.count() == demo["summary"]["dispute_rounds"]
    widths = [int(rounds.nth(i).get_attribute("data-hi")) - int(rounds.nth(i).get_attribute("data-lo"))
              for i in range(rounds.count()) if rounds.nth(i).get_attribute("data-phase") == "step"]
    assert widths == sorted(widths, reverse=True) and widths[-1] <= 1  # narrowing down to one step
    assert page.locator('[data-testid="dispute-found"]').count() >= 1
    rows = page.locator('[data-testid="job-row"]')
    assert rows.count() == 4
    _shoot(page, shot, '[data-testid="dispute-panel"]')
    assert page.problems == []


@needs_browser
def test_the_swarm_plot_and_the_assistant_panel_have_data(demo, page):
    shot = _open(page, demo, "swarm")
    lines = page.locator('[data-testid="swarm-line"]')
    lines.first.wait_for(timeout=15_000)
    assert lines.count() == 4  # one line per peer
    points = [int(lines.nth(i).get_attribute("data-points")) for i in range(lines.count())]
    assert points == [demo["summary"]["swarm_rounds"]] * 4
    assist = page.locator('[data-testid="assist-panel"]').inner_text()
    assert str(demo["summary"]["assist_episodes"]) in assist
    assert page.locator('[data-testid="network-row"]').count() == 4  # solver, verifier, referee, cheat (the poster is not registered)
    _shoot(page, shot, '[data-testid="swarm-chart"]')
    assert page.problems == []


@needs_browser
def test_the_page_updates_when_a_new_chain_event_arrives(demo, page):
    shot = _open(page, demo, "live")
    items = page.locator('[data-testid="event-item"]')
    items.first.wait_for(timeout=15_000)
    newest = max(int(items.nth(i).get_attribute("data-id")) for i in range(items.count()))
    poster = demo["root"] / "poster"
    job = cli_json(poster, "job", "submit", str(demo["root"] / "infer.yaml"), "--bounty", "5", "--window", "12",
                   "--kind", "infer")["job_id"]
    page.wait_for_function(  # the new job's JobPosted, pushed to the open page: no reload
        f"""() => [...document.querySelectorAll('[data-testid="event-item"]')]
                .some(e => Number(e.dataset.id) > {newest} && e.dataset.name === "JobPosted")""", timeout=30_000)
    page.wait_for_selector(f'[data-testid="job-row"][data-job="{job}"]', timeout=30_000)
    assert max(int(items.nth(i).get_attribute("data-id")) for i in range(items.count())) > newest
    _shoot(page, shot)
    assert page.problems == []


def test_ctrl_c_stops_every_process_the_demo_started(demo):
    """Last in the module: the browser tests above need the network up."""
    proc, root = demo["proc"], demo["root"]
    assert _processes_under(root), "the network should be serving until Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal does: the whole foreground group
    assert proc.wait(90) == 0
    deadline = time.monotonic() + 15
    while _processes_under(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_under(root) == []


def test_a_folder_that_is_not_a_demo_is_refused_and_kept(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    res = subprocess.run([*BIN, "--home", str(tmp_path / "home"), "demo", "--headless", "--json", "--dir", str(keep)],
                         capture_output=True, text=True, env=env(), timeout=120)
    assert res.returncode == 1
    assert "not a demo's" in json.loads(res.stdout)["error"]
    assert (keep / "notes.txt").read_text() == "mine"
