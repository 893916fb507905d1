"""What pins blobs from outside the store: the records under the data directory and the node's database.

The store decides with its digest rule (store/gc.py); this module only knows where the records
are. Every record file (JSON, JSONL, YAML, TOML) anywhere under the data directory pins the
blobs it names: the node's job directories (jobs/: runs, transcripts, results), swarm state
(swarm/: manifests, peer state, each round's training run), a training run kept there, and
whatever record a later command adds, with no list here to keep up to date. Not read: the
store (store/gc.py reads its own records), keys/ (secrets, never a record of blobs) and devnet/
(the chain's journal; what this machine's node needs of the chain is in node.db, read below).

Runs outside the data directory (`bitswarm train --out ./runs/x`, `swarm run --workdir`) cannot
be seen from here; what they put in the store carries a label, and labels pin.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from bitswarm.home import Home
from bitswarm.store.errors import PinScanError
from bitswarm.store.gc import RECORD_SUFFIXES, Pin, PinSource, Roots, add_pins, digests_in, digests_in_record


def pin_source(home: Home) -> PinSource:
    def find(known: set[str]) -> Roots:
        roots: Roots = {}
        _records(home, known, roots)
        _node_db(home.node_db, known, roots)
        return roots

    return find


def _records(home: Home, known: set[str], roots: Roots) -> None:
    skipped = {home.store, home.keys, home.devnet}

    def unreadable(e: OSError) -> None:
        if not isinstance(e, FileNotFoundError):  # a folder removed while walking names nothing
            raise PinScanError(f"cannot read the folder {e.filename} ({e.strerror}), which may hold records "
                               "that pin blobs; nothing was removed")

    for dirpath, dirnames, filenames in os.walk(home.root, onerror=unreadable):
        here = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if here / n not in skipped)
        for name in sorted(filenames):
            path = here / name
            if path.suffix.lower() not in RECORD_SUFFIXES or not path.is_file():  # never open a fifo
                continue
            rel = path.relative_to(home.root)
            kind = f"{rel.parts[0]}/" if len(rel.parts) > 1 else rel.name
            add_pins(roots, digests_in_record(path, known), Pin(kind, f"{path} names it"))


def _node_db(path: Path, known: set[str], roots: Roots) -> None:
    """Every value in every table: the blobs the node serves, its jobs' specs and results, its
    decisions and requests. Read-only, so a running node is never disturbed."""
    if not path.exists():
        return
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                pin = Pin("node.db", f"the node's database {path} (table {table}) names it")
                for row in con.execute('SELECT * FROM "{}"'.format(table.replace('"', '""'))):
                    for value in row:
                        if isinstance(value, str):
                            add_pins(roots, digests_in(value.encode("utf-8", "replace"), known), pin)
                        elif isinstance(value, bytes):  # a raw bytes32 as well as text inside bytes
                            add_pins(roots, digests_in(value + b" " + value.hex().encode(), known), pin)
        finally:
            con.close()
    except sqlite3.Error as e:
        raise PinScanError(f"cannot read the node's database {path} ({e}), which pins the blobs the node "
                           "serves; nothing was removed") from None
