"""The blob store: round trips, corruption never returned, atomic writes, crash leftovers swept."""

import hashlib
import os
import subprocess
import sys

import pytest

from bitswarm.store import BlobNotFound, BlobStore, CorruptBlob, InvalidCID, StoreError, UnsupportedEntry
from bitswarm.store.blobstore import dir_digest


def _tree(root):
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "a.bin").write_bytes(os.urandom(3000))
    (root / "nested" / "b.txt").write_text("hello")
    (root / "nested" / "deeper" / "empty").write_bytes(b"")
    return root


def _corrupt(store, cid, offset=-1):
    path = store.blob_path(cid)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_file_cid_is_plain_sha256(store, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"some bytes")
    cid = store.put(f)
    assert cid == "sha256:" + hashlib.sha256(b"some bytes").hexdigest()
    out = tmp_path / "back"
    assert store.get(cid, out) == "file"
    assert out.read_bytes() == b"some bytes"


def test_dir_round_trip_and_same_content_same_cid(store, tmp_path):
    src = _tree(tmp_path / "src")
    cid = store.put(src, label="my tree")
    assert store.kind(cid) == "dir"
    out = tmp_path / "out"
    assert store.get(cid, out) == "dir"
    assert dir_digest(out) == dir_digest(src)
    assert (out / "nested" / "deeper" / "empty").read_bytes() == b""
    assert store.put(out) == cid
    [info] = store.list()
    assert (info.cid, info.kind, info.label) == (cid, "dir", "my tree")
    assert store.find_label("my tree") == [cid]


def test_get_raw_writes_canonical_bytes(store, tmp_path):
    cid = store.put(_tree(tmp_path / "src"))
    store.get(cid, tmp_path / "raw", raw=True)
    assert "sha256:" + hashlib.sha256((tmp_path / "raw").read_bytes()).hexdigest() == cid


def test_missing_blob_and_bad_cid(store, tmp_path):
    missing = "sha256:" + "0" * 64
    with pytest.raises(BlobNotFound, match="no blob"):
        store.get(missing, tmp_path / "x")
    with pytest.raises(BlobNotFound):
        store.read_bytes(missing)
    for bad in ["sha256:xyz", "0" * 64, "sha256:" + "A" * 64, ""]:
        with pytest.raises(InvalidCID, match="64 lower-case hex"):
            store.get(bad, tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("offset", [-1, 40, 5])
def test_corrupt_dir_blob_is_never_returned(store, tmp_path, offset):
    cid = store.put(_tree(tmp_path / "src"))
    _corrupt(store, cid, offset)
    out = tmp_path / "out"
    with pytest.raises(CorruptBlob, match="corrupt"):
        store.get(cid, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"] or not any(
        p.name.startswith(".out") for p in tmp_path.iterdir()
    )
    assert store.verify(cid)["corrupt"] == [cid]
    with pytest.raises(CorruptBlob):
        store.checkout(cid)


def test_corrupt_file_blob_is_never_returned(store, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10000)
    cid = store.put(f)
    _corrupt(store, cid, 1234)
    with pytest.raises(CorruptBlob):
        store.read_bytes(cid)
    with pytest.raises(CorruptBlob):
        store.get(cid, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # putting the original again repairs the blob
    assert store.put(f) == cid
    assert store.verify() == {"checked": 1, "corrupt": []}


def test_get_refuses_to_overwrite(store, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    cid = store.put(f)
    with pytest.raises(StoreError, match="already exists"):
        store.get(cid, f)


def test_interrupted_put_leaves_no_blob(store, tmp_path):
    src = tmp_path / "big"
    src.write_bytes(os.urandom(3 << 20))

    def crash(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put(src, progress=crash)
    assert store.list() == []
    assert list(store.tmp.iterdir()) == []


def test_killed_writer_leftovers_are_swept_on_open(tmp_path):
    root = tmp_path / "store"
    BlobStore(root)
    # A writer killed with SIGKILL mid-put leaves its temp file behind and nothing in blobs/.
    code = (
        "import os, sys; from bitswarm.store import BlobStore\n"
        "s = BlobStore(sys.argv[1])\n"
        "def boom(n): os.kill(os.getpid(), 9)\n"
        "open(sys.argv[2], 'wb').write(os.urandom(4 << 20))\n"
        "s.put(sys.argv[2], progress=boom)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "src")])
    assert proc.returncode == -9
    assert len(list((root / "tmp").iterdir())) == 1
    store = BlobStore(root)
    assert list(store.tmp.iterdir()) == []
    assert store.list() == []


def test_checkout_is_rechecked_and_repaired(store, tmp_path):
    src = _tree(tmp_path / "src")
    cid = store.put(src)
    path = store.checkout(cid)
    assert dir_digest(path) == dir_digest(src)
    (path / "nested" / "b.txt").write_text("tampered")
    again = store.checkout(cid)
    assert (again / "nested" / "b.txt").read_text() == "hello"


def test_checkout_of_a_file_blob_is_an_error(store, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        store.checkout(store.put(f))


def test_put_rejects_symlink_and_missing(store, tmp_path):
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsupportedEntry, match="symbolic link"):
        store.put(tmp_path / "link")
    with pytest.raises(StoreError, match="no such file"):
        store.put(tmp_path / "nope")


def test_file_that_looks_like_a_dir_archive_comes_back_as_a_file(store, tmp_path):
    from bitswarm.store.canonical import MAGIC

    f = tmp_path / "tricky"
    f.write_bytes(MAGIC + b"not an archive")
    cid = store.put(f)
    assert store.get(cid, tmp_path / "out") == "file"
    assert (tmp_path / "out").read_bytes() == f.read_bytes()


def test_labels_are_validated(store, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    cid = store.put(f)
    with pytest.raises(StoreError, match="label"):
        store.set_label(cid, "two\nlines")
    with pytest.raises(BlobNotFound):
        store.set_label("sha256:" + "1" * 64, "x")
