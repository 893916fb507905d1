"""A node's state: one SQLite database in the data directory (Home.node_db).

The node writes every decision here *before* the chain transaction it leads to, and marks it
sent and done after, so `kill -9` at any moment and a restart resume without losing work or
doing anything twice: a decision found "decided" or "sent" on restart is reconciled against the
chain (did the claim, the commit, the vote land?) before anything is sent again. Followed chain
events are stored with the block they came from, and the block cursor moves in the same
transaction, so an event is never applied twice or skipped.

Tables:
  meta       key -> value: the event cursor (last_block), who this node is, when it started
  events     every followed chain event (contract, name, block, log index, job id, args as JSON)
  jobs       one row per job the node has seen: the chain's view, and this node's role and
             progress with it (`local`: what it last did, in words a person can read)
  decisions  (job, action) -> args, state decided|sent|done|failed, tx hash, error; unique per
             (job, action), which is what makes a second claim or a second vote impossible
  disputes   the bisection path of each disputed job, one row per answered round
  requests   work the HTTP API asks the node to do (submit a job, announce a blob), done by the
             node's own loop so the API never holds a key
  snapshot   key -> JSON the API reads: balances, stake, peers, the node's status
  blobs      CIDs this node serves to peers, with what they are

Writes are short transactions in WAL mode; every thread opens its own connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from bitswarm.errors import BitswarmError

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, contract TEXT NOT NULL, name TEXT NOT NULL,
    job_id INTEGER, args TEXT NOT NULL, seen REAL NOT NULL,
    UNIQUE (block, log_index, contract)
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id);
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY,
    kind TEXT, spec_cid TEXT, poster TEXT, bounty TEXT, solver_stake TEXT, verify_fee TEXT,
    challenge_window INTEGER, num_leaves INTEGER, ops_per_leaf INTEGER,
    status TEXT NOT NULL DEFAULT 'open', solver TEXT, result_cid TEXT, result_root TEXT,
    challenger TEXT, winner TEXT,
    role TEXT, local TEXT, error TEXT,
    posted REAL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL, action TEXT NOT NULL, args TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('decided', 'sent', 'done', 'failed')),
    tx_hash TEXT, error TEXT, created REAL NOT NULL, updated REAL NOT NULL,
    UNIQUE (job_id, action)
);
CREATE TABLE IF NOT EXISTS disputes (
    job_id INTEGER NOT NULL, round INTEGER NOT NULL, phase TEXT NOT NULL, idx INTEGER,
    lo INTEGER, hi INTEGER, solver_answer TEXT, challenger_answer TEXT, block INTEGER,
    PRIMARY KEY (job_id, round)
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    result TEXT, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (cid TEXT PRIMARY KEY, what TEXT NOT NULL, job_id INTEGER, added REAL NOT NULL);
"""

JOB_FIELDS = ("kind", "spec_cid", "poster", "bounty", "solver_stake", "verify_fee", "challenge_window",
              "num_leaves", "ops_per_leaf", "status", "solver", "result_cid", "result_root", "challenger",
              "winner", "role", "local", "error", "posted")


AMOUNTS = ("bounty", "solver_stake", "verify_fee")


class StateError(BitswarmError):
    """The node's database cannot be used (another schema, a damaged file)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class NodeState:
    """The node's database; safe to share between threads (one connection per thread)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)  # idempotent; executescript commits on its own
        with self.tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StateError(f"{self.path} has schema {row[0]}, this bitswarm reads {SCHEMA_VERSION}; "
                                 "move it aside to start the node afresh")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")  # a decision is on disk before its transaction is sent
            except sqlite3.DatabaseError as e:
                raise StateError(f"{self.path} is not a usable node database: {e}") from None
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[dict]:
        return [dict(r) for r in self._conn().execute(sql, args).fetchall()]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    @property
    def last_block(self) -> int:
        """The last block whose events were all applied (-1: none yet)."""
        return int(self.get_meta("last_block", "-1"))

    # -- events ----------------------------------------------------------------------------

    def add_events(self, events: list[dict], through_block: int) -> list[dict]:
        """Store followed events and move the cursor to `through_block` in one transaction;
        returns the events that were new (a restart may see some again)."""
        new, now = [], time.time()
        with self.tx() as db:
            for e in events:
                args = _jsonable(e["args"])
                cur = db.execute(
                    "INSERT OR IGNORE INTO events (block, log_index, contract, name, job_id, args, seen) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e["block"], e["log_index"], e["contract"], e["event"], args.get("job_id"), json.dumps(args), now))
                if cur.rowcount:
                    new.append({**e, "args": args, "id": cur.lastrowid})
            db.execute("INSERT OR REPLACE INTO meta VALUES ('last_block', ?)", (str(through_block),))
        return new

    def events(self, after_id: int = 0, job_id: int | None = None, limit: int = 200) -> list[dict]:
        sql, args = "SELECT * FROM events WHERE id > ?", [after_id]
        if job_id is not None:
            sql += " AND job_id = ?"
            args.append(job_id)
        rows = self.query(sql + " ORDER BY id LIMIT ?", (*args, limit))
        for r in rows:
            r["args"] = json.loads(r["args"])
        return rows

    # -- jobs ------------------------------------------------------------------------------

    def upsert_job(self, job_id: int, **fields: Any) -> None:
        unknown = set(fields) - set(JOB_FIELDS)
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        # Token amounts exceed SQLite's 64-bit integers (18 decimals): kept as decimal strings.
        fields = {k: str(v) if k in AMOUNTS and v is not None else _jsonable(v) for k, v in fields.items()}
        now = time.time()
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO jobs (job_id, updated) VALUES (?, ?)", (job_id, now))
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                db.execute(f"UPDATE jobs SET {sets}, updated = ? WHERE job_id = ?", (*fields.values(), now, job_id))

    @staticmethod
    def _amounts(row: dict) -> dict:
        return {k: int(v) if k in AMOUNTS and v is not None else v for k, v in row.items()}

    def job(self, job_id: int) -> dict | None:
        rows = self.query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return self._amounts(rows[0]) if rows else None

    def jobs(self, role: str | None = None, limit: int = 500) -> list[dict]:
        if role is None:
            rows = self.query("SELECT * FROM jobs ORDER BY job_id DESC LIMIT ?", (limit,))
        else:
            rows = self.query("SELECT * FROM jobs WHERE role = ? ORDER BY job_id DESC LIMIT ?", (role, limit))
        return [self._amounts(r) for r in rows]

    # -- decisions -------------------------------------------------------------------------

    def decide(self, job_id: int, action: str, **args: Any) -> dict:
        """Record that this node will do `action` on `job_id` (before it sends anything); returns
        the decision, the earlier one if it was already taken (its args win)."""
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO decisions (job_id, action, args, state, created, updated) "
                "VALUES (?, ?, ?, 'decided', ?, ?)", (job_id, action, json.dumps(_jsonable(args)), now, now))
        return self.decision(job_id, action)

    def decision(self, job_id: int, action: str) -> dict | None:
        rows = self.query("SELECT * FROM decisions WHERE job_id = ? AND action = ?", (job_id, action))
        if not rows:
            return None
        rows[0]["args"] = json.loads(rows[0]["args"])
        return rows[0]

    def mark(self, job_id: int, action: str, state: str, tx_hash: str | None = None, error: str | None = None) -> None:
        with self.tx() as db:
            db.execute("UPDATE decisions SET state = ?, tx_hash = COALESCE(?, tx_hash), error = ?, updated = ? "
                       "WHERE job_id = ? AND action = ?", (state, tx_hash, error, time.time(), job_id, action))

    def decisions(self, job_id: int | None = None, state: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM decisions WHERE 1", []
        if job_id is not None:
            sql, args = sql + " AND job_id = ?", args + [job_id]
        if state is not None:
            sql, args = sql + " AND state = ?", args + [state]
        rows = self.query(sql + " ORDER BY id", tuple(args))
        for r in rows:
            r["args"] = json.loads(r["args"])
        return rows

    # -- disputes --------------------------------------------------------------------------

    def add_dispute_round(self, job_id: int, round_: int, phase: str, **fields: Any) -> None:
        cols = ("idx", "lo", "hi", "solver_answer", "challenger_answer", "block")
        vals = [_jsonable(fields.get(c)) for c in cols]
        with self.tx() as db:
            db.execute(f"INSERT OR REPLACE INTO disputes (job_id, round, phase, {', '.join(cols)}) "
                       f"VALUES (?, ?, ?, {', '.join('?' * len(cols))})", (job_id, round_, phase, *vals))

    def dispute_path(self, job_id: int) -> list[dict]:
        return self.query("SELECT * FROM disputes WHERE job_id = ? ORDER BY round", (job_id,))

    # -- requests from the API -------------------------------------------------------------

    def add_request(self, kind: str, body: dict) -> int:
        now = time.time()
        with self.tx() as db:
            return db.execute("INSERT INTO requests (kind, body, state, created, updated) VALUES (?, ?, 'pending', ?, ?)",
                              (kind, json.dumps(body), now, now)).lastrowid

    def pending_requests(self) -> list[dict]:
        rows = self.query("SELECT * FROM requests WHERE state = 'pending' ORDER BY id")
        for r in rows:
            r["body"] = json.loads(r["body"])
        return rows

    def finish_request(self, request_id: int, ok: bool, result: dict) -> None:
        with self.tx() as db:
            db.execute("UPDATE requests SET state = ?, result = ?, updated = ? WHERE id = ?",
                       ("done" if ok else "failed", json.dumps(_jsonable(result)), time.time(), request_id))

    def request(self, request_id: int) -> dict | None:
        rows = self.query("SELECT * FROM requests WHERE id = ?", (request_id,))
        if not rows:
            return None
        r = rows[0]
        r["body"] = json.loads(r["body"])
        r["result"] = json.loads(r["result"]) if r["result"] else None
        return r

    # -- snapshot for the API ----------------------------------------------------------------

    def put_snapshot(self, key: str, value: Any) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO snapshot VALUES (?, ?, ?)", (key, json.dumps(_jsonable(value)), time.time()))

    def snapshot(self, key: str, default: Any = None) -> Any:
        row = self._conn().execute("SELECT value FROM snapshot WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- served blobs ------------------------------------------------------------------------

    def add_blob(self, cid: str, what: str, job_id: int | None = None) -> None:
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, ?)", (cid, what, job_id, time.time()))

    def blobs(self) -> list[dict]:
        return self.query("SELECT * FROM blobs ORDER BY added")
