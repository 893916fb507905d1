"""The canonical directory encoding: one CID per content, hostile archives refused."""

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitswarm.store import UnsupportedEntry
from bitswarm.store.blobstore import dir_digest
from bitswarm.store.canonical import MAGIC, extract_dir, iter_dir_bytes, list_files


def _archive(entries, trailer=None):
    body = MAGIC
    for path, data in entries:
        raw = path.encode()
        body += b"F" + struct.pack("<I", len(raw)) + raw + struct.pack("<Q", len(data)) + data
    return body + b"E" + struct.pack("<Q", len(entries) if trailer is None else trailer)


def _extract(blob, out):
    stream = io.BytesIO(blob)
    assert stream.read(len(MAGIC)) == MAGIC
    return extract_dir(stream, out, lambda b: None)


def test_layout_is_documented_format(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_bytes(b"B")
    (d / "sub" / "a.txt").write_bytes(b"AA")
    blob = b"".join(iter_dir_bytes(list_files(d)))
    assert blob == _archive([("b.txt", b"B"), ("sub/a.txt", b"AA")])


def test_digest_ignores_mtime_and_creation_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("1"), (a / "y").write_text("2")
    (b / "y").write_text("2"), (b / "x").write_text("1")
    import os

    os.utime(b / "x", (0, 0))
    assert dir_digest(a) == dir_digest(b)
    (b / "x").write_text("changed")
    assert dir_digest(a) != dir_digest(b)


def test_renaming_a_file_changes_the_digest(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("1")
    (b / "z").write_text("1")
    assert dir_digest(a) != dir_digest(b)


@pytest.mark.parametrize("bad", ["../evil", "/abs", "a/../../b", "a//b", "./a", "a\\b"])
def test_extract_refuses_escaping_paths(tmp_path, bad):
    with pytest.raises(UnsupportedEntry, match="unsafe path"):
        _extract(_archive([(bad, b"x")]), tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_extract_refuses_non_canonical_order_and_duplicates(tmp_path):
    with pytest.raises(UnsupportedEntry, match="canonical order"):
        _extract(_archive([("b", b""), ("a", b"")]), tmp_path / "o1")
    with pytest.raises(UnsupportedEntry, match="canonical order"):
        _extract(_archive([("a", b""), ("a", b"")]), tmp_path / "o2")


def test_extract_refuses_file_below_file_bad_trailer_and_truncation(tmp_path):
    with pytest.raises(UnsupportedEntry, match="below a file"):
        _extract(_archive([("a", b"1"), ("a/b", b"2")]), tmp_path / "o1")
    with pytest.raises(UnsupportedEntry, match="trailer"):
        _extract(_archive([("a", b"1")], trailer=5), tmp_path / "o2")
    with pytest.raises(UnsupportedEntry, match="ends inside"):
        _extract(_archive([("a", b"12345")])[:-15], tmp_path / "o3")
    with pytest.raises(UnsupportedEntry, match="after its trailer"):
        _extract(_archive([("a", b"1")]) + b"junk", tmp_path / "o4")


def test_symlinks_are_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "real").write_text("x")
    (d / "link").symlink_to(d / "real")
    with pytest.raises(UnsupportedEntry, match="symbolic link"):
        list_files(d)
    assert [raw for raw, _ in list_files(d, follow_symlinks=True)] == [b"link", b"real"]


names = st.text(alphabet="abcXYZ019_-. é", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.lists(names, min_size=1, max_size=3).map("/".join), st.binary(max_size=300), max_size=6))
def test_roundtrip_any_tree(tmp_path_factory, tree):
    root = tmp_path_factory.mktemp("tree")
    src = root / "src"
    src.mkdir()
    written = {}
    for rel, data in tree.items():
        target = src / rel
        if any(p.is_file() for p in [*target.parents][: len(rel.split("/")) - 1]) or target.is_dir():
            continue  # a name already used as a file or directory in this tree
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written[rel] = data
    blob = b"".join(iter_dir_bytes(list_files(src)))
    out = root / "out"
    assert _extract(blob, out) == len(written)
    for rel, data in written.items():
        assert (out / rel).read_bytes() == data
    assert dir_digest(out) == dir_digest(src)
