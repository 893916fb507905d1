"""Append-only JSON-lines logs (shared episodes, trained assistants, swarm rounds, simulations).

Each record is one line written with a single `write` and fsynced, so a crash can tear at most
the last line, and reading skips a torn line instead of failing: the log stays usable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def append_line(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines log, skipping a line torn by a crash."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
