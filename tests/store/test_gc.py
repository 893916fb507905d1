"""Removing blobs: what pins one, gc's plan and its figures, and removal that a concurrent put or a
kill -9 cannot turn into a lost or half-removed blob."""

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from bitswarm.store import BlobNotFound, BlobPinned, BlobStore
from bitswarm.store import gc
from bitswarm.store.canonical import CHUNK
from bitswarm.store.cid import parse_cid


def _dir(root, **files):
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def _run(store, tmp_path):
    """A run as transcript.build stores it: an unlabelled checkpoint and spec, named by a labelled transcript."""
    ckpt = store.put_dir(_dir(tmp_path / "ckpt", **{"meta.json": "{}", "state.bin": "weights"}))
    spec = store.put_bytes(b'{"steps": 2}')
    transcript = store.put_bytes(json.dumps({"spec_cid": spec, "checkpoints": {"0": ckpt}}).encode(),
                                 label="transcript first")
    return transcript, ckpt, spec


def test_digests_are_found_in_every_spelling_and_across_chunks(tmp_path):
    a, b, c, d = ("%064x" % n for n in (0xA1, 0xB2, 0xC3, 0xD4))
    known = {a, b, c, d}
    assert gc.digests_in(f'{{"m": "sha256:{a}", "x": "0x{b.upper()}"}}'.encode(), known) == {a, b}
    assert gc.digests_in(("ff" + c + "ee").encode(), known) == {c}  # inside a longer run of hex
    assert gc.digests_in(a[:63].encode(), known) == set()
    f = tmp_path / "big.jsonl"
    f.write_bytes(b" " * (CHUNK - 30) + d.encode() + b"\n")  # straddles the first chunk's end
    with open(f, "rb") as fh:
        assert gc.digests_in_stream(fh, known) == {d}


def test_plan_keeps_pinned_blobs_and_what_they_name(store, tmp_path):
    transcript, ckpt, spec = _run(store, tmp_path)
    imported = store.put_bytes(b"converted model")
    (store.root / "imports.json").write_text(json.dumps({"gguf|x": imported}))
    from_source = store.put_bytes(b"named by a record outside the store")
    # A directory blob holding a file that names a blob does not pin it: its files are its bytes.
    inner = store.put_bytes(b"only named inside a directory blob")
    holder = store.put_dir(_dir(tmp_path / "holder", **{"ref.json": json.dumps({"cid": inner})}), label="holder")
    loose = store.put_bytes(b"nothing names me")

    source = lambda known: {parse_cid(from_source): [gc.Pin("jobs/", "a job record")]}  # noqa: E731
    p = gc.plan(store, source)
    assert {c.cid for c in p.remove} == {inner, loose}
    assert p.freed_bytes == store.size(inner) + store.size(loose)
    kinds = {k.cid: k.pin.kind for k in p.kept}
    assert kinds == {transcript: "labels", ckpt: "blobs", spec: "blobs", imported: "imports.json",
                     from_source: "jobs/", holder: "labels"}
    assert all(store.has(c) for c in (inner, loose))  # a plan changes nothing


def test_collect_removes_what_the_plan_says_with_its_checkout(store, tmp_path):
    pinned = store.put_bytes(b"pinned", label="pinned")
    model = store.put_dir(_dir(tmp_path / "m", **{"config.json": "{}"}))
    store.checkout(model)
    p = gc.plan(store)
    assert [c.cid for c in p.remove] == [model]
    assert p.remove[0].checkout_bytes == 2  # "{}"
    done = gc.collect(store, p)
    assert [c.cid for c in done.removed] == [model]
    assert done.freed_bytes == p.freed_bytes == p.remove[0].size + 2
    assert not store.has(model) and not (store.checkouts / parse_cid(model)).exists()
    assert [b.cid for b in store.list()] == [pinned]
    assert list(store.tmp.iterdir()) == []


def test_remove_takes_the_label_with_the_blob(store):
    cid = store.put_bytes(b"x", label="x")
    assert store.remove(cid) == 1
    assert store.label(cid) is None and list(store.labels.iterdir()) == []
    with pytest.raises(BlobNotFound):
        store.remove(cid)


def test_grace_keeps_blobs_written_recently(store):
    cid = store.put_bytes(b"just put, its record not written yet")
    p = gc.plan(store, grace_seconds=600)
    assert p.remove == [] and [k.pin.kind for k in p.kept] == ["recent"]
    later = gc.plan(store, grace_seconds=600, now=time.time() + 601)
    assert [c.cid for c in later.remove] == [cid]


def test_remove_keeps_a_blob_put_again_since_the_plan(store):
    cid = store.put_bytes(b"x", label="x")
    planned = store.blob_stats()[parse_cid(cid)].st_ino
    store.put_bytes(b"x", label="x")  # a new inode: someone wants it
    assert store.remove(cid, expect_inode=planned) is None
    assert store.has(cid) and store.label(cid) == "x"


def test_remove_puts_back_a_blob_put_again_while_it_ran(tmp_path):
    class Racing(BlobStore):
        """Lets a writer put the blob again between the label's move and the blob's."""

        def _to_trash(self, path):
            moved = super()._to_trash(path)
            if path.parent == self.labels:
                self.put_bytes(b"wanted", label="fresh label")
            return moved

    store = Racing(tmp_path / "store")
    cid = store.put_bytes(b"wanted", label="old label")
    assert store.remove(cid) is None
    assert store.has(cid) and store.read_bytes(cid) == b"wanted"
    assert store.label(cid) == "fresh label"  # the writer's, not put back over by ours
    assert list(store.tmp.iterdir()) == []


def test_remove_blobs_refuses_pinned_and_says_what_pins(store, tmp_path):
    transcript, ckpt, spec = _run(store, tmp_path)
    with pytest.raises(BlobPinned, match=f"{ckpt} is pinned: blob {transcript} \\('transcript first'\\)"):
        gc.remove_blobs(store, [ckpt])
    assert store.has(ckpt)
    # Its own label does not hold a blob named on purpose, nor do the others removed with it.
    done = gc.remove_blobs(store, [transcript, ckpt, spec])
    assert sorted(c.cid for c in done.removed) == sorted([transcript, ckpt, spec])
    assert done.freed_bytes == sum(c.size for c in done.removed)
    assert list(store.labels.iterdir()) == [] and store.blob_stats() == {}


def test_remove_blobs_force_and_unknown(store, tmp_path):
    transcript, ckpt, _ = _run(store, tmp_path)
    missing = "sha256:" + "1" * 64
    with pytest.raises(BlobNotFound, match="nothing was removed"):
        gc.remove_blobs(store, [transcript, missing])
    assert store.has(transcript)
    done = gc.remove_blobs(store, [ckpt], force=True)
    assert [c.cid for c in done.removed] == [ckpt] and not store.has(ckpt)


def test_gc_killed_midway_leaves_a_usable_store(tmp_path):
    root = tmp_path / "store"
    store = BlobStore(root)
    pinned = store.put_bytes(b"pinned", label="keep")
    doomed = [store.put_bytes(f"loose {i}".encode()) for i in range(4)]
    code = (
        "import os, sys\n"
        "from bitswarm.store import BlobStore, gc\n"
        "s = BlobStore(sys.argv[1]); moved = []\n"
        "def discard(trash):\n"
        "    moved.extend([trash] if trash else [])\n"
        "    if len(moved) == 2: os.kill(os.getpid(), 9)\n"  # the second blob renamed into tmp/, not deleted
        "    BlobStore._discard(s, trash)\n"
        "s._discard = discard\n"
        "gc.collect(s, gc.plan(s))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(root)])
    assert proc.returncode == -9
    assert len(list((root / "tmp").iterdir())) == 1
    store = BlobStore(root)  # sweeps what the killed gc left in tmp/
    assert list(store.tmp.iterdir()) == []
    left = {b.cid for b in store.list()}
    assert pinned in left and len(left & set(doomed)) == 2
    assert store.verify()["corrupt"] == []
    gc.collect(store, gc.plan(store))
    assert [b.cid for b in store.list()] == [pinned] and store.label(pinned) == "keep"


def test_a_live_foreign_temp_dir_survives_a_store_open(tmp_path):
    store = BlobStore(tmp_path / "store")
    # What model import and warm-start build in, with no pid in the name to ask about.
    live = tempfile.mkdtemp(dir=store.tmp)
    stale = tempfile.mkdtemp(dir=store.tmp)
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    BlobStore(store.root)
    assert os.path.isdir(live) and not os.path.exists(stale)
