"""`bitswarm assist`: play the building game with an assistant, simulate players, share episodes, train."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bitswarm.cli.output import JSON_HELP, UserError, emit_json, err, out, reporting
from bitswarm.cli.state import state

app = typer.Typer(help="Assistants that learn from their users: the building game, episodes, training.",
                  no_args_is_help=True)


def _progress(label: str, total: int, enabled: bool):
    if not enabled:
        return None, lambda n, **kw: None
    p = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                 TimeElapsedColumn(), console=err, transient=True)
    p.start()
    task = p.add_task(label, total=total, info="")
    return p, lambda n, **kw: p.update(task, completed=n, **kw)


@app.command("simulate")
def simulate_cmd(
    ctx: typer.Context,
    episodes: int = typer.Option(20, "--episodes", min=1, max=100_000, help="Goals to play (seeds --seed, --seed+1, ...)."),
    model: str = typer.Option(None, "--model", help="Assistant model CID; without it the humans play alone."),
    seed: int = typer.Option(0, "--seed", min=0, help="First goal seed."),
    skill: float = typer.Option(0.9, "--skill", min=0.0, max=1.0, help="How promptly simulated humans fix wrong blocks."),
    noise: float = typer.Option(0.05, "--noise", min=0.0, max=1.0, help="How often they slip (wrong colour or cell)."),
    share: bool = typer.Option(False, "--share", help="Store every recorded episode and print their CIDs (for `assist train`)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Simulated humans play alone and with the assistant on the same goals; what the assistant saves them."""
    from bitswarm.assist.simulate import simulate

    with reporting(as_json):
        st = state(ctx)
        progress, tick = _progress("episodes", episodes, not as_json)
        try:
            res = simulate(episodes, model=model, home=st.paths, store=st.store(), seed=seed, skill=skill,
                           noise=noise, share=share, on_episode=tick)
        finally:
            if progress is not None:
                progress.stop()
        if as_json:
            emit_json(res)
            return
        t = Table(show_header=False, box=None)
        for k, v in res.items():
            if k != "shared":
                t.add_row(k, str(v))
        out.print(t)
        if share:
            out.print(f"{len(res['shared'])} episodes shared; train with `bitswarm assist train --episodes CID ...` "
                      "(first: " + res["shared"][0] + ")", highlight=False)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    episodes: list[str] = typer.Option(None, "--episodes", help="Episode CIDs (repeat the flag, or give a file of CIDs with @FILE); default: every episode this home shared."),
    steps: int = typer.Option(300, "--steps", min=1, max=1_000_000, help="Optimizer steps."),
    batch: int = typer.Option(64, "--batch", min=1, max=65536, help="Examples (human actions) per step."),
    lr: float = typer.Option(3e-3, "--lr", min=1e-7, max=1.0, help="Peak learning rate."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial policy and the data order."),
    base: str = typer.Option(None, "--base", help="Continue from this policy CID instead of a fresh one."),
    threads: int = typer.Option(None, "--threads", min=1, help="Compute threads (never changes the result)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Train an assistant on shared episodes as a bit-exact repro job; prints {"model": CID, ...}."""
    from bitswarm.assist.sdk import shared_episodes
    from bitswarm.assist.training import train_assistant

    cids = []
    for e in episodes or []:
        if e.startswith("@"):
            try:
                cids += Path(e[1:]).read_text().split()
            except OSError as exc:
                raise UserError(f"--episodes {e}: cannot read the file: {exc}") from None
        else:
            cids.append(e)
    with reporting(as_json):
        st = state(ctx)
        if not episodes:
            cids = shared_episodes(st.paths)
            if not cids:
                raise UserError("no episodes given and none shared from this home yet: "
                                "`bitswarm assist simulate --share` or `bitswarm assist share` first")
        progress, tick = _progress("training", steps, not as_json)
        try:
            res = train_assistant(st.store(), st.paths, cids, steps=steps, global_batch=batch, lr=lr, seed=seed,
                                  base_model=base, threads=threads,
                                  on_step=lambda row: tick(row["step"], info=f"loss {row['loss']:.3f}"))
        finally:
            if progress is not None:
                progress.stop()
        if as_json:
            emit_json(res)
        else:
            out.print(res["model"], highlight=False)
            err.print(f"[dim]trained on {res['examples']} human actions from {len(cids)} episodes "
                      f"(dataset {res['dataset'][:19]}…), final state {res['final_state_hash'][:16]}…; "
                      f"try `bitswarm assist simulate --model {res['model']}`[/]")


@app.command("share")
def share_cmd(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(None, help="Episode files (default: every episode recorded here not yet shared)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Store recorded episodes in the content store; one receipt (CID, size) per episode."""
    from bitswarm.assist.sdk import share_episode

    with reporting(as_json):
        st = state(ctx)
        paths = files or sorted(st.paths.episodes.glob("*.json"))
        if not paths:
            raise UserError(f"no episodes recorded in {st.paths.episodes}; play or simulate first")
        receipts = [share_episode(st.store(), p, home=st.paths).to_json() for p in paths]
        if as_json:
            emit_json({"receipts": receipts})
        else:
            for r in receipts:
                out.print(f"{r['cid']}  {r['size']:>7} bytes  {r['file']}", highlight=False)


@app.command("play")
def play_cmd(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", help="Assistant model CID (default: the newest `assist train` made; none: play alone)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port)."),
    seed: int = typer.Option(None, "--seed", min=0, help="Goal seed of the first episode (default: random)."),
    as_json: bool = typer.Option(False, "--json", help="Print one line {\"url\", \"model\"} once serving."),
):
    """Serve the building game on 127.0.0.1 and print its URL; Ctrl-C stops it."""
    from bitswarm.assist.sdk import Assistant, newest_model
    from bitswarm.assist.server import serve

    with reporting(as_json):
        st = state(ctx)
        model = model or newest_model(st.paths)
        Assistant(model, home=st.paths, store=st.store())  # a bad model CID fails here, before serving

        def factory():
            return Assistant(model, home=st.paths, store=st.store())

        def ready(url: str) -> None:
            if as_json:
                emit_json({"url": url, "model": model})
            else:
                out.print(f"the building game is at {url}\nassistant: "
                          f"{model or 'none (train one with `bitswarm assist train`)'}; Ctrl-C stops", highlight=False)

        serve(port=port, assistant=factory, seed=seed, on_ready=ready)
