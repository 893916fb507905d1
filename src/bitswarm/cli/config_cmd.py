"""`bitswarm config`: show and change the node's settings."""

from __future__ import annotations

import typer
from rich.table import Table

from bitswarm.cli.output import JSON_HELP, emit_json, err, out, reporting
from bitswarm.cli.state import state

app = typer.Typer(help="Show and change settings (config.toml in the data directory, or BITSWARM_* variables).", no_args_is_help=True)


@app.command()
def show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Show the settings in force, after the file and the environment are applied."""
    with reporting(as_json):
        st = state(ctx)
        settings = st.settings()
        values = settings.model_dump()
        if as_json:
            emit_json({"home": str(st.home), "config_file": str(st.config_file), "settings": values})
            return
        table = Table("setting", "value", "description", title=f"{st.config_file}")
        from bitswarm.node import config as cfg

        for f in cfg.describe_fields():
            table.add_row(f["name"], repr(values[f["name"]]), f["description"])
        out.print(table)
        err.print(f"[dim]data directory {st.home}[/]")


@app.command("set")
def set_(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Setting name (see `bitswarm config show`)."),
    value: str = typer.Argument(..., help="New value; checked before anything is written."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Change one setting in the config file."""
    with reporting(as_json):
        st = state(ctx)
        from bitswarm.node import config as cfg

        checked = cfg.set_value(st.config_file, key, value)
        if as_json:
            emit_json({"config_file": str(st.config_file), key: getattr(checked, key)})
        else:
            err.print(f"{key} = {getattr(checked, key)!r} written to {st.config_file}")
