"""The game's page in a real browser: Debian's chromium, driven by playwright, against the server on a
free loopback port. The mouse places and removes blocks on the faces the page says it drew, keys pick
a colour and walk, the assistant builds beside the player, and the ended episode is shared."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest

from bitswarm.assist.episode import parse
from bitswarm.assist.game import REACH
from bitswarm.assist.goals import build_order
from bitswarm.assist.sdk import Assistant
from bitswarm.assist.server import serve
from bitswarm.assist.simulate import simulate
from bitswarm.assist.training import train_assistant
from bitswarm.home import Home
from bitswarm.store import BlobStore

from ..browser import SCREENSHOTS, needs_browser

SEED, MAX_STEPS = 5, 40  # the play below takes ~30 steps; the rest are walked to reach the end
SCREENSHOT = SCREENSHOTS / "assist-game.png"

pytestmark = needs_browser


def wait_until(condition, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what or condition} did not happen within {timeout} s"
        threading.Event().wait(0.02)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(home, store, model): an assistant trained as `bitswarm assist train` does, on simulated players'
    episodes (never the test's goal seed)."""
    home = Home(tmp_path_factory.mktemp("browser-home"))
    store = BlobStore(home.store)
    shared = simulate(40, home=home, store=store, seed=1000, share=True)["shared"]
    return home, store, train_assistant(store, home, shared, steps=150)["model"]


@pytest.fixture
def game(trained):
    """(url, assistant, store): the game served in a thread until the test ends; ready when it answers."""
    home, store, model = trained
    assistant = Assistant(model, home=home, store=store, confidence=0.6)
    urls: list[str] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        try:
            serve(0, assistant=assistant, seed=SEED, on_ready=urls.append, stop=stop, max_steps=MAX_STEPS)
        except BaseException as e:  # noqa: BLE001 - shown by the wait below
            failed.append(e)

    thread = threading.Thread(target=run, name="assist-game-server", daemon=True)
    thread.start()
    try:
        wait_until(lambda: urls or failed, what="the game server listening")
        assert not failed, f"the game server did not start: {failed[0]!r}"
        with urllib.request.urlopen(urls[0] + "api/state", timeout=5) as r:
            assert json.load(r)["seed"] == SEED
        yield urls[0], assistant, store
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the game server did not stop"


def state(page) -> dict:
    return page.evaluate("window.bitswarm.state()")


def at(page, x, y, z, face) -> tuple[float, float]:
    px, py = page.evaluate(f"window.bitswarm.cellToScreen({x}, {y}, {z}, {json.dumps(face)})")
    return px, py


def until(page, js: str) -> None:
    """Wait until the page's last state satisfies `js` (an expression of `s`)."""
    # A function, not an expression: playwright evaluates expressions with eval, which the page's CSP forbids.
    page.wait_for_function(f"() => {{ const s = window.bitswarm.state(); return s && ({js}); }}", timeout=10_000)


def step_done(page, before: int) -> None:
    """Wait for the human's action to land and the assistant's turn after it to be taken."""
    until(page, f"s.step > {before} && s.turn === 'human'")


def walk_into_reach(page, x: int, z: int) -> None:
    while max(abs(x - (h := state(page)["human"])[0]), abs(z - h[1])) > REACH:
        before = state(page)["step"]
        page.keyboard.press(("d" if x > h[0] else "a") if abs(x - h[0]) > REACH else ("s" if z > h[1] else "w"))
        step_done(page, before)


def test_play_in_chromium(game, page, tmp_path):
    url, assistant, store = game
    page.goto(url)
    until(page, f"s.seed === {SEED}")

    page.keyboard.press("3")  # colour 3 (yellow)
    assert page.evaluate("window.bitswarm.selected()") == 3
    assert page.locator("#palette button.selected").inner_text() == "3"

    page.mouse.click(*at(page, 1, 0, 1, "floor"))  # the floor: a block on it
    until(page, "s.blocks[1][0][1] === 3")
    step_done(page, 0)
    page.mouse.click(*at(page, 1, 0, 1, "top"))  # that block's top: one above it
    until(page, "s.blocks[1][1][1] === 3")
    page.keyboard.press("5")
    page.mouse.click(*at(page, 1, 0, 1, "+x"))  # its +x side: one beside it, in colour 5
    until(page, "s.blocks[2][0][1] === 5")

    page.mouse.click(*at(page, 1, 1, 1, "top"), button="right")  # right-click removes
    until(page, "s.blocks[1][1][1] === 0")
    page.keyboard.down("Shift")
    page.mouse.click(*at(page, 2, 0, 1, "top"))  # so does shift-click
    page.keyboard.up("Shift")
    until(page, "s.blocks[2][0][1] === 0")

    for key, spot in (("d", [1, 0]), ("s", [1, 1]), ("a", [0, 1]), ("w", [0, 0])):
        before = state(page)["step"]
        page.keyboard.press(key)
        until(page, f"s.human[0] === {spot[0]} && s.human[1] === {spot[1]}")
        step_done(page, before)

    # Build the goal's floor layer as a player would (walk into reach, pick the colour, click the floor)
    # until the trained assistant, which has watched every action, places a block of its own.
    goal = state(page)["goal"]
    for x, y, z in (c for c in build_order(np.array(goal)) if c[1] == 0):
        if any(e["who"] == "assistant" and e["kind"] == "place" for e in state(page)["events"]):
            break
        if state(page)["blocks"][x][0][z]:
            continue  # the assistant placed it
        walk_into_reach(page, x, z)
        page.keyboard.press(str(goal[x][0][z]))
        before = state(page)["step"]
        page.mouse.click(*at(page, x, 0, z, "floor"))
        until(page, f"s.blocks[{x}][0][{z}] === {goal[x][0][z]}")
        step_done(page, before)
    assert any(e["who"] == "assistant" and e["kind"] == "place" for e in state(page)["events"]), \
        "the assistant placed no block while the player built the goal's floor layer"
    placed = next(e for e in state(page)["events"] if e["who"] == "assistant" and e["kind"] == "place")
    a = placed["action"]
    assert state(page)["goal"][a["x"]][a["y"]][a["z"]] == a["block"]  # a block the goal wants
    assert placed["text"] in page.locator("#log").inner_text()

    blocks = state(page)["blocks"]  # a floor corner at the front edge: no block can stand before it
    x, z = next((x, z) for x, z in ((0, 7), (7, 0)) if not blocks[x][0][z])
    before = state(page)["version"]
    page.mouse.click(*at(page, x, 0, z, "floor"), button="right")  # nothing to remove on the floor: said, not sent
    assert "Nothing to remove" in page.locator("#message").inner_text()
    assert state(page)["version"] == before

    page.keyboard.press("g")
    assert page.locator("#ghost").inner_text() == "Ghost off (G)"
    page.keyboard.press("g")

    while not (s := state(page))["ended"]:  # walk to and fro until the steps run out
        page.keyboard.press("d" if s["human"][0] % 2 == 0 else "a")
        step_done(page, s["step"])  # the assistant's step too: it may be the last
    until(page, "s.ended && s.recorded")
    page.mouse.move(5, 5)
    page.locator("#share").click()
    page.wait_for_function("() => document.querySelector('#receipt').textContent.includes('sha256:')",
                           timeout=10_000)
    receipt = page.evaluate("fetch('/api/state').then(r => r.json())")["receipt"]
    text = page.locator("#receipt").inner_text()
    assert receipt["cid"] in text and f"{receipt['size']} bytes" in text
    assert parse(store.read_bytes(receipt["cid"])).outcome["steps"] == MAX_STEPS
    assert str(assistant.last_file) == state(page)["recorded"]  # the SDK kept it on this machine too

    shot = tmp_path / "assist-game.png"
    page.screenshot(path=str(shot))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)

    page.keyboard.press("n")
    until(page, "s.episode === 2 && s.step === 0")
    assert page.locator("#share-card").is_hidden()
    assert page.problems == []
