"""`bitswarm store`: put, get, list and verify content-addressed blobs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from bitswarm.cli.output import JSON_HELP, UserError, byte_progress, emit_json, err, out, reporting
from bitswarm.cli.state import state
from bitswarm.store import BlobStore

app = typer.Typer(help="Content-addressed blob store (CID = sha256 of canonical bytes).", no_args_is_help=True)


def _human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


@app.command()
def put(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="File or directory to store."),
    label: str = typer.Option(None, "--label", help="Human label shown by `store ls`."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Store a file or directory; prints its CID."""
    with reporting(as_json):
        store = state(ctx).store()
        if not path.exists():
            raise UserError(f"no such file or directory: {path}")
        total = BlobStore.size_of(path)
        with byte_progress(f"storing {path.name}", total, enabled=not as_json) as advance:
            cid = store.put(path, label=label, progress=advance)
        if as_json:
            emit_json({"cid": cid, "size": store.size(cid), "kind": store.kind(cid)})
        else:
            out.print(cid)


@app.command()
def get(
    ctx: typer.Context,
    cid: str = typer.Argument(..., help="CID of the blob (sha256:<64 hex>)."),
    out_path: Path = typer.Option(..., "--out", help="Where to write it; must not exist yet."),
    raw: bool = typer.Option(False, "--raw", help="Write a directory blob as its canonical bytes."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Write a blob to a path (directories are unpacked), after checking its hash."""
    with reporting(as_json):
        store = state(ctx).store()
        total = store.size(cid)
        with byte_progress(f"fetching {cid[:19]}…", total, enabled=not as_json) as advance:
            kind = store.get(cid, out_path, progress=advance, raw=raw)
        if as_json:
            emit_json({"cid": cid, "path": str(out_path.absolute()), "kind": kind})
        else:
            err.print(f"wrote {kind} {out_path}")


@app.command("ls")
def ls(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """List the blobs in the store."""
    with reporting(as_json):
        infos = state(ctx).store().list()
        if as_json:
            emit_json({"blobs": [
                {"cid": b.cid, "size": b.size, "kind": b.kind, "label": b.label} for b in infos
            ]})
            return
        if not infos:
            err.print("the store is empty; add something with `bitswarm store put PATH`")
            return
        table = Table("kind", "size", "label")
        table.add_column("CID", overflow="fold")
        for b in infos:
            table.add_row(b.kind, _human_size(b.size), b.label or "", b.cid)
        out.print(table)


@app.command()
def verify(
    ctx: typer.Context,
    cid: str = typer.Argument(None, help="One CID to check; all blobs if omitted."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Re-hash blobs and report any whose bytes no longer match their CID (exit 1 if any)."""
    with reporting(as_json):
        store = state(ctx).store()
        total = store.total_bytes(cid)
        with byte_progress("verifying", total, enabled=not as_json) as advance:
            result = store.verify(cid, progress=advance)
        ok = not result["corrupt"]
        if as_json:
            emit_json({"ok": ok, **result})
        elif ok:
            out.print(f"[green]ok[/]: {result['checked']} blob(s) match their CIDs")
        else:
            for c in result["corrupt"]:
                err.print(f"[bold red]corrupt:[/] {c} ({store.blob_path(c)})")
            err.print("put the original again to repair a corrupt blob, or delete its file")
        if not ok:
            raise typer.Exit(1)
