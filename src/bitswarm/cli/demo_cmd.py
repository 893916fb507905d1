"""`bitswarm demo`: the whole network on this machine, watched live (demo.run)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import webbrowser
from pathlib import Path

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bitswarm.cli.output import UserError, emit_json, err, out, reporting
from bitswarm.cli.state import state

STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "failed": "bold red"}
MARK = {"waiting": "·", "running": "…", "done": "✓", "failed": "✗"}


def _view(demo) -> Group:
    table = Table(title="bitswarm: the network on this machine", title_justify="left", expand=False,
                  show_header=False, box=None, padding=(0, 1))
    for t in demo.tracks.values():
        table.add_row(Text(MARK[t.state], style=STYLE[t.state]), Text(t.label, style="bold"),
                      Text(t.detail, style=STYLE[t.state]))
    feed = Text("\n".join(demo.feed[-8:]), style="dim")
    url = demo.dashboard_url
    return Group(table, Text(""), feed, Text(f"\ndashboard: {url}" if url else ""))


def _summary_table(s: dict) -> Table:
    t = Table(title="what happened", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for j in s["jobs"]:
        outcome = {"done": "settled, solver paid", "failed": "the solver lost its dispute"}.get(j["status"], j["status"])
        t.add_row(f"job #{j['job']} ({j['name']})", outcome)
    paid = {k: v for k, v in s["payouts"].items() if v}
    t.add_row("payouts (credits)", ", ".join(f"{k} {v:+g}" for k, v in paid.items()) or "none")
    t.add_row("slashed stake", f"{s['slashed_credits']:g} credits from the cheat ({s['cheat_address'][:10]}…)"
              if s["cheater_slashed"] else "none: the cheat was not caught")
    t.add_row("dispute rounds", str(s["dispute_rounds"]))
    sw = s["swarm_reward"]
    t.add_row("swarm", f"{s['swarm_rounds']} rounds, mean reward {sw['first_round']:.2f} → {sw['last_round']:.2f}")
    a = s["assist"]
    if a["human_actions_alone"] is not None:
        gain = 1 - a["human_actions_with_assistant"] / a["human_actions_alone"]
        t.add_row("assistant", f"{s['assist_episodes']} episodes shared; human actions per goal "
                  f"{a['human_actions_alone']:.1f} → {a['human_actions_with_assistant']:.1f} ({gain:.0%} fewer)")
    t.add_row("time", f"{s['seconds']:.0f} s")
    return t


def demo(
    ctx: typer.Context,
    headless: bool = typer.Option(False, "--headless", help="Open no browser and do not wait: stop everything "
                                  "once the summary is printed (unless --serve)."),
    serve: bool = typer.Option(None, "--serve/--no-serve", help="Keep the network and dashboard running after the "
                               "summary until Ctrl-C (default: yes, unless --headless).", show_default=False),
    directory: Path = typer.Option(None, "--dir", help="Where the demo's chain and nodes live (default: <home>/demo; "
                                   "a previous demo there is replaced).", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (job_settled, cheater_slashed, "
                                 "dispute_rounds, swarm_rounds, assist_episodes, seconds, dashboard_url, ...) "
                                 "instead of the live view."),
):
    """Run the whole network on this machine: a devnet, nodes that solve, verify and referee (one
    of them cheats and is slashed), a swarm, and assistants that learn from shared episodes."""
    from bitswarm.demo.network import NetworkError
    from bitswarm.demo.run import Demo, DemoError

    keep = (not headless) if serve is None else serve
    with reporting(as_json):
        st = state(ctx)
        root = directory or st.home / "demo"
        live = None if as_json else Live(console=err, refresh_per_second=4, transient=False)
        lock = threading.Lock()

        def update(d) -> None:
            if live is not None:
                with lock:
                    live.update(_view(d))

        run = Demo(Path(root), on_update=update)
        stopping = threading.Event()

        def interrupt(signum, _frame):  # a background process inherits SIGINT ignored: catch it explicitly
            stopping.set()
            raise KeyboardInterrupt

        previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        summary = None  # stays None when Ctrl-C comes before the end
        try:
            if live is not None:
                live.start()
            try:
                summary = run.run()
            finally:
                if live is not None:
                    live.update(_view(run))
                    live.stop()
            if as_json:
                emit_json(summary)
            else:
                out.print(_summary_table(summary))
                out.print(f"dashboard: [bold]{summary['dashboard_url']}[/]")
            if keep:
                if not headless and summary["dashboard_url"] and _has_display():
                    webbrowser.open(summary["dashboard_url"])
                if not as_json:
                    out.print("[dim]the network keeps running; Ctrl-C stops every process the demo started[/]")
                while not stopping.is_set():
                    time.sleep(0.5)
        except KeyboardInterrupt:
            if not as_json:
                err.print("stopping the network…")
        except (DemoError, NetworkError) as e:
            raise UserError(str(e)) from None
        finally:
            run.close()
            for s, h in previous.items():
                signal.signal(s, h)
        if summary is not None and summary["failures"]:  # a part failed: exit non-zero
            raise typer.Exit(1)


def _has_display() -> bool:
    # Without a display webbrowser falls back to a text browser in this very terminal.
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform == "darwin"
