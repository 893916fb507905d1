"""`bitswarm model`: import checkpoints into the store and make tiny test models."""

from __future__ import annotations

import typer
from rich.table import Table

from bitswarm.cli.output import JSON_HELP, emit_json, out, reporting, stages
from bitswarm.cli.state import state
from bitswarm.models import importer

app = typer.Typer(help="Import models into the store and make tiny test models.", no_args_is_help=True)


@app.command("import")
def import_(
    ctx: typer.Context,
    source: str = typer.Argument(
        ..., help=f"A known model name ({', '.join(importer.KNOWN)}) or a local Hugging Face-format Llama directory."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Import a model into the store; prints its CID."""
    with reporting(as_json):
        store = state(ctx).store()
        with stages(enabled=not as_json) as stage:
            cid = importer.import_model(store, source, stage)
        if as_json:
            emit_json({"cid": cid, "source": source, "size": store.size(cid)})
        else:
            out.print(cid)


@app.command()
def init(
    ctx: typer.Context,
    size: str = typer.Argument(..., help="Model size: tiny (2 layers, hidden 64) or small (4 layers, hidden 128)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the weights; the same seed gives the same CID."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Make a small random Llama-family model with a byte-level tokenizer; prints its CID."""
    with reporting(as_json):
        store = state(ctx).store()
        with stages(enabled=not as_json) as stage:
            cid = importer.init_model(store, size, seed, stage)
        if as_json:
            # "size" is bytes here as in `model import` and `store put`; the size argument is the preset.
            emit_json({"cid": cid, "preset": size, "seed": seed, "size": store.size(cid)})
        else:
            out.print(cid)


@app.command("known")
def known(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """List the model names `model import` understands."""
    rows = [{"name": m.name, "description": m.description} for m in importer.KNOWN.values()]
    if as_json:
        emit_json({"models": rows})
        return
    table = Table("name", "description")
    for r in rows:
        table.add_row(r["name"], r["description"])
    out.print(table)
