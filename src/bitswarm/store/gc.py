"""Garbage collection: remove the blobs nothing pins, and refuse to remove one that something does.

The pin rule: a blob is pinned when its 64-hex digest appears anywhere in the bytes of a pin
record, written as a CID (`sha256:<hex>`), bare, or as a contract's bytes32 (`0x<hex>`).
Looking for digests instead of parsing each record's format keeps the rule true for every
record that exists now or is added later: a false match can only keep a blob, never remove one.
A pinned *file* blob is itself a record (a transcript names its checkpoints and spec, a job doc
its model and data), so what it names is pinned too; a directory blob pins nothing, since its
files are inside its own bytes.

The store imports nothing of bitswarm, so it knows only its own pins: labels and the records
kept in its root (imports.json). Whoever knows the data directory passes the rest as a
PinSource (cli/store_pins.py). Blobs written in the last `grace_seconds` are kept too: a
command that has just put a blob may not have written the record that names it yet.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bitswarm.store.blobstore import BlobStore
from bitswarm.store.canonical import CHUNK, MAGIC
from bitswarm.store.cid import cid_from_digest, parse_cid
from bitswarm.store.errors import BlobNotFound, BlobPinned, PinScanError

RECORD_SUFFIXES = frozenset({".json", ".jsonl", ".yaml", ".yml", ".toml"})
_HEX_RUN = re.compile(rb"[0-9a-fA-F]{64,}")
_HEX_TAIL = re.compile(rb"[0-9a-fA-F]{1,63}\Z")


@dataclass(frozen=True)
class Pin:
    kind: str  # the group a report counts it in: "labels", "jobs/", "node.db", "blobs", "recent", …
    where: str  # what holds the blob, in words a person can act on
    own: bool = False  # the store's own note about this blob (label, import cache): `rm` of it overrides


Roots = dict[str, list[Pin]]  # hex digest -> what pins it
PinSource = Callable[[set[str]], Roots]  # given the digests in the store, the pins it knows of


def digests_in(data: bytes, known: set[str]) -> set[str]:
    """The digests in `known` that appear in `data`, at any offset of any run of hex digits."""
    found = set()
    for m in _HEX_RUN.finditer(data):
        run = m.group().decode("ascii").lower()
        for i in range(len(run) - 63):
            if run[i : i + 64] in known:
                found.add(run[i : i + 64])
    return found


def digests_in_stream(f: BinaryIO, known: set[str]) -> set[str]:
    """digests_in over a file read in chunks, never holding it whole."""
    found: set[str] = set()
    carry = b""
    while chunk := f.read(CHUNK):
        data = carry + chunk
        found |= digests_in(data, known)
        # A digest may straddle this chunk and the next: carry the trailing hex digits on.
        tail = _HEX_TAIL.search(data[-63:])
        carry = tail.group() if tail else b""
    return found


def digests_in_record(path: Path, known: set[str]) -> set[str]:
    """digests_in a record file; one that vanished names nothing, one that cannot be read stops gc."""
    try:
        with open(path, "rb") as f:
            return digests_in_stream(f, known)
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise PinScanError(
            f"cannot read {path} ({e.strerror}), which may pin blobs; nothing was removed. "
            "Make it readable, or move it out of the data directory if it is not bitswarm's"
        ) from None


def add_pins(roots: Roots, digests: Iterable[str], pin: Pin) -> None:
    for d in digests:
        pins = roots.setdefault(d, [])
        if pin not in pins:
            pins.append(pin)


def store_roots(store: BlobStore, known: set[str]) -> Roots:
    """The store's own pins: every label, and what the records in its root name."""
    roots: Roots = {}
    for p in sorted(store.labels.iterdir()):
        if p.name in known:
            try:
                text = p.read_text("utf-8")
            except FileNotFoundError:  # removed since the listing
                continue
            except OSError as e:
                raise PinScanError(f"cannot read the label {p} ({e.strerror}); nothing was removed") from None
            add_pins(roots, [p.name], Pin("labels", f"its label '{text}'", own=True))
    for p in sorted(store.root.iterdir()):
        if p.is_file() and p.suffix in RECORD_SUFFIXES:
            add_pins(roots, digests_in_record(p, known), Pin(p.name, f"{p} names it", own=True))
    return roots


def _named_by(store: BlobStore, hexd: str, known: set[str]) -> set[str]:
    try:
        with open(store.blobs / hexd[:2] / hexd, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                return set()  # a directory: its files are its own bytes, not references
            f.seek(0)
            return digests_in_stream(f, known)
    except FileNotFoundError:
        return set()


def held(store: BlobStore, roots: Roots, known: set[str], inert: Iterable[str] = ()) -> dict[str, Pin]:
    """Every pinned digest in `known` with the first pin that holds it, following what pinned
    file blobs name. `inert` blobs (those `rm` is removing) are not read as records."""
    inert = set(inert)
    marks = {h: pins[0] for h, pins in roots.items() if h in known and pins}
    queue = sorted(h for h in marks if h not in inert)
    while queue:
        h = queue.pop()
        label = store.label(cid_from_digest(h))
        for d in sorted(_named_by(store, h, known) - marks.keys()):
            named = f" ('{label}')" if label else ""
            marks[d] = Pin("blobs", f"blob {cid_from_digest(h)}{named}, which is kept, names it")
            if d not in inert:
                queue.append(d)
    return marks


def _roots(store: BlobStore, pins: PinSource | None, known: set[str]) -> Roots:
    roots = store_roots(store, known)
    for d, ps in (pins(known) if pins is not None else {}).items():
        for p in ps:
            add_pins(roots, [d], p)
    return roots


# -- gc -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    cid: str
    size: int
    label: str | None
    inode: int  # as planned; a blob put again since has another and is kept
    checkout_bytes: int


@dataclass(frozen=True)
class Kept:
    cid: str
    size: int
    pin: Pin


@dataclass
class GcPlan:
    remove: list[Candidate] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    orphan_checkouts: list[tuple[str, int]] = field(default_factory=list)  # (cid, bytes) without a blob

    @property
    def freed_bytes(self) -> int:
        """What carrying out the plan frees: the blobs, their checkouts, orphaned checkouts."""
        return sum(c.size + c.checkout_bytes for c in self.remove) + sum(n for _, n in self.orphan_checkouts)


@dataclass
class Removal:
    removed: list[Candidate]
    freed_bytes: int
    changed: list[str]  # to be removed, but put again (or removed by another process) meanwhile


def plan(store: BlobStore, pins: PinSource | None = None, grace_seconds: float = 0,
         now: float | None = None) -> GcPlan:
    """Decide, without changing anything, which blobs go: those no pin holds, older than the grace."""
    stats = store.blob_stats()
    known = set(stats)
    marks = held(store, _roots(store, pins, known), known)
    now = time.time() if now is None else now
    # ctime as well as mtime: a rename into the store (adopt) keeps an old mtime but sets ctime.
    recent = Pin("recent", f"written in the last {grace_seconds / 60:g} min; a command may still be recording it")
    result = GcPlan()
    for h in sorted(stats):
        st, cid = stats[h], cid_from_digest(h)
        if h in marks:
            result.kept.append(Kept(cid, st.st_size, marks[h]))
        elif now - max(st.st_mtime, st.st_ctime) < grace_seconds:
            result.kept.append(Kept(cid, st.st_size, recent))
        else:
            result.remove.append(Candidate(cid, st.st_size, store.label(cid), st.st_ino, store.checkout_bytes(cid)))
    result.orphan_checkouts = [(c, store.checkout_bytes(c)) for c in store.orphan_checkouts()]
    return result


def collect(store: BlobStore, the_plan: GcPlan) -> Removal:
    """Carry out a plan. Each blob goes in one atomic step (BlobStore.remove), so a crash at any
    point leaves a store where every blob is whole or absent; running gc again finishes the job."""
    removed, freed, changed = [], 0, []
    for c in the_plan.remove:
        try:
            got = store.remove(c.cid, expect_inode=c.inode)
        except BlobNotFound:
            got = None
        if got is None:
            changed.append(c.cid)
        else:
            removed.append(c)
            freed += got
    for cid, _ in the_plan.orphan_checkouts:
        if not store.has(cid):
            freed += store.drop_checkout(cid)
    return Removal(removed, freed, changed)


# -- rm -------------------------------------------------------------------------------------


def pinned(store: BlobStore, cids: Iterable[str], pins: PinSource | None = None) -> dict[str, Pin]:
    """Which of `cids` a pin holds (CID -> the pin), as if all of them were removed together.

    A blob's own label and import entry do not count (naming the blob is the point), nor does
    one of the others naming it: `rm TRANSCRIPT CHECKPOINT` may remove both.
    """
    targets = [parse_cid(c) for c in cids]
    known = set(store.blob_stats())
    roots = _roots(store, pins, known)
    for h in targets:
        roots[h] = [p for p in roots.get(h, []) if not p.own]
    marks = held(store, roots, known, inert=targets)
    return {cid_from_digest(h): marks[h] for h in targets if h in marks}


def remove_blobs(store: BlobStore, cids: Iterable[str], pins: PinSource | None = None,
                 force: bool = False) -> Removal:
    """Remove these blobs with their labels; nothing is removed if one is missing or (without
    `force`) pinned."""
    hexes = list(dict.fromkeys(parse_cid(c) for c in cids))
    stats = store.blob_stats()
    missing = [cid_from_digest(h) for h in hexes if h not in stats]
    if missing:
        raise BlobNotFound(
            f"no blob {', '.join(missing)} in the store at {store.root}, so nothing was removed; "
            "`bitswarm store ls` lists what it holds"
        )
    if not force:
        holders = pinned(store, [cid_from_digest(h) for h in hexes], pins)
        if holders:
            raise BlobPinned(
                "; ".join(f"{cid} is pinned: {pin.where}" for cid, pin in holders.items())
                + ". Nothing was removed: remove what pins it first, or pass --force to remove it anyway"
            )
    removed, freed, changed = [], 0, []
    for h in hexes:
        cid = cid_from_digest(h)
        c = Candidate(cid, stats[h].st_size, store.label(cid), stats[h].st_ino, store.checkout_bytes(cid))
        try:
            got = store.remove(cid)
        except BlobNotFound:
            got = None
        if got is None:
            changed.append(cid)
        else:
            removed.append(c)
            freed += got
    return Removal(removed, freed, changed)
