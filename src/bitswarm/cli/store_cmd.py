"""`bitswarm store`: put, get, list, verify and remove content-addressed blobs."""

from __future__ import annotations

from pathlib import Path

import typer

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
        # One blob per line, its CID first and whole: a table folds CIDs in a narrow terminal,
        # and a folded CID cannot be copied.
        for b in infos:
            out.print(f"{b.cid}  {b.kind:<4}  {_human_size(b.size):>9}  {b.label or ''}", highlight=False,
                      markup=False, soft_wrap=True)


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


def _kept_by(kept) -> dict[str, dict[str, int]]:
    groups: dict[str, dict[str, int]] = {}
    for k in kept:
        g = groups.setdefault(k.pin.kind, {"blobs": 0, "bytes": 0})
        g["blobs"] += 1
        g["bytes"] += k.size
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]["bytes"]))


def _why(kind: str, grace: float) -> str:
    return {"labels": "labelled", "blobs": "named by a kept blob",
            "recent": f"written in the last {grace:g} min (--grace 0 judges them now)"}.get(kind, f"named in {kind}")


def _blob_rows(cands) -> list[dict]:
    return [{"cid": c.cid, "size": c.size, "label": c.label} for c in cands]


@app.command()
def gc(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    grace: float = typer.Option(
        15, "--grace", min=0, metavar="MINUTES",
        help="Keep unpinned blobs written in the last MINUTES: a command still running may have put a "
             "blob and not yet written the record that pins it. 0 judges every blob now.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Remove every blob nothing pins, and say what that freed.

    A blob is pinned by its label, by being an imported model, by any record under the data
    directory that names it (runs, node jobs, swarm state, the node's database), or by a kept
    record blob (a transcript) that names it.
    """
    from bitswarm.cli.store_pins import pin_source
    from bitswarm.store import gc as store_gc

    with reporting(as_json):
        st = state(ctx)
        store = st.store()
        plan = store_gc.plan(store, pin_source(st.paths), grace_seconds=grace * 60)
        done = None if dry_run else store_gc.collect(store, plan)
        removed = plan.remove if done is None else done.removed
        freed = plan.freed_bytes if done is None else done.freed_bytes
        changed = [] if done is None else done.changed
        kept_by = _kept_by(plan.kept)
        if as_json:
            emit_json({
                "dry_run": dry_run, "removed": len(removed), "freed_bytes": freed,
                "kept": len(plan.kept), "kept_bytes": sum(k.size for k in plan.kept), "kept_by": kept_by,
                "blobs": _blob_rows(removed), "changed": changed,
            })
            return
        if dry_run:
            for c in removed:  # one line each, CID first, so it copies whole at any width
                out.print(f"{c.cid}  {_human_size(c.size):>9}  {c.label or ''}", highlight=False, markup=False)
        verb = "would remove" if dry_run else "removed"
        out.print(f"{verb} {len(removed)} blob(s), {'would free' if dry_run else 'freed'} {_human_size(freed)}")
        if plan.kept:
            why = ", ".join(f"{g['blobs']} {_why(kind, grace)} ({_human_size(g['bytes'])})"
                            for kind, g in kept_by.items())
            err.print(f"kept {len(plan.kept)} pinned or recent blob(s): {why}", highlight=False, markup=False)
        for cid in changed:
            err.print(f"left {cid}: it was put again, or removed by another process, while gc ran")


@app.command("rm")
def rm(
    ctx: typer.Context,
    cids: list[str] = typer.Argument(..., help="CIDs of the blobs to remove (sha256:<64 hex>)."),
    force: bool = typer.Option(False, "--force", help="Remove them even if a record still names them."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Remove blobs and their labels; refuses one that something pins (and says what) unless --force."""
    from bitswarm.cli.store_pins import pin_source
    from bitswarm.store import gc as store_gc

    with reporting(as_json):
        st = state(ctx)
        done = store_gc.remove_blobs(st.store(), cids, pin_source(st.paths), force=force)
        if as_json:
            emit_json({"removed": len(done.removed), "freed_bytes": done.freed_bytes,
                       "blobs": _blob_rows(done.removed), "changed": done.changed})
            return
        for c in done.removed:
            err.print(f"removed {c.cid} ({_human_size(c.size)}{', ' + c.label if c.label else ''})",
                      highlight=False, markup=False)
        for cid in done.changed:
            err.print(f"left {cid}: it was put again, or removed by another process, meanwhile")
        out.print(f"removed {len(done.removed)} blob(s), freed {_human_size(done.freed_bytes)}")
