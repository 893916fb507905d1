"""Entry point of the `bitswarm` command: top-level options and the subcommand tree."""

from __future__ import annotations

from pathlib import Path

import typer

from bitswarm import __version__
from bitswarm.cli import assist_cmd, config_cmd, demo_cmd, identity_cmd, job_cmd, ledger_cmd, model_cmd, node_cmd, store_cmd, swarm_cmd, verify_cmd
from bitswarm.cli.generate_cmd import generate
from bitswarm.cli.output import JsonUsageErrors
from bitswarm.cli.train_cmd import from_run, spec_app, train
from bitswarm.cli.state import State
from bitswarm.home import resolve_home

app = typer.Typer(
    cls=JsonUsageErrors,  # usage errors follow --json like every other error
    name="bitswarm",
    help="bitswarm: a network for machine learning that nobody has to trust.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(store_cmd.app, name="store")
model_cmd.app.command("from-run")(from_run)
app.add_typer(model_cmd.app, name="model")
app.add_typer(identity_cmd.app, name="identity")
app.add_typer(config_cmd.app, name="config")
app.command("generate")(generate)
app.add_typer(spec_app, name="spec")
app.command("train")(train)
app.add_typer(verify_cmd.app, name="verify")
app.command("trace")(verify_cmd.trace)
app.command("dispute")(verify_cmd.dispute)
app.command("infer")(verify_cmd.infer)
app.command("eval")(verify_cmd.evaluate)
app.command("devnet")(ledger_cmd.devnet)
app.add_typer(ledger_cmd.ledger_app, name="ledger")
ledger_cmd.node_app.command("run")(node_cmd.run)
app.add_typer(ledger_cmd.node_app, name="node")
app.add_typer(job_cmd.app, name="job")
app.add_typer(swarm_cmd.app, name="swarm")
app.add_typer(assist_cmd.app, name="assist")
app.command("demo")(demo_cmd.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bitswarm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    home: Path = typer.Option(
        None, "--home", help="Data directory (default: $BITSWARM_HOME, else ~/.bitswarm).", show_default=False
    ),
    config: Path = typer.Option(
        None, "--config", help="Config file (default: config.toml in the data directory).", show_default=False
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    ctx.obj = State(home=resolve_home(home), config_path=config.expanduser().absolute() if config else None)


def run() -> None:
    app()
