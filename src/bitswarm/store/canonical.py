"""Canonical bytes of a directory, so that a directory has one CID like a file does.

Format v1 (all integers little-endian):

    MAGIC                                   16 bytes: b"BITSWARM-DIR\\x00v1\\n"
    for each regular file, in ascending order of its relative path's UTF-8 bytes:
        b"F" | u32 path length | path (UTF-8, '/'-separated) | u64 size | contents
    b"E" | u64 number of files

Only relative paths and contents are covered: no timestamps, modes or owners, and empty
directories are not represented. A file's canonical bytes are its contents, so the CID of a
file is the plain sha256 of the file. A blob that starts with MAGIC and parses completely is a
directory; any other blob is a file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from bitswarm.store.errors import UnsupportedEntry

MAGIC = b"BITSWARM-DIR\x00v1\n"
CHUNK = 1 << 20
MAX_PATH_BYTES = 4096

Progress = Callable[[int], None]


def _check_rel_path(rel: str) -> bytes:
    """Reject names that could escape the output directory or differ between platforms."""
    p = PurePosixPath(rel)
    if (
        not rel
        or p.is_absolute()
        or "\\" in rel
        or "\x00" in rel
        or any(part in ("", ".", "..") for part in rel.split("/"))
    ):
        raise UnsupportedEntry(f"unsafe path in directory: {rel!r}")
    raw = rel.encode("utf-8")
    if len(raw) > MAX_PATH_BYTES:
        raise UnsupportedEntry(f"path longer than {MAX_PATH_BYTES} bytes: {rel[:80]!r}…")
    return raw


def list_files(root: Path, follow_symlinks: bool = False) -> list[tuple[bytes, Path]]:
    """Every regular file under `root` as (canonical path bytes, absolute path), in canonical order."""
    root = Path(root)
    entries: list[tuple[bytes, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if full.is_symlink() and not follow_symlinks:
                raise UnsupportedEntry(
                    f"{full} is a symbolic link; the store holds regular files and directories only"
                )
        for name in filenames:
            full = Path(dirpath) / name
            if not full.is_file():
                raise UnsupportedEntry(
                    f"{full} is not a regular file; the store holds regular files and directories only"
                )
            rel = full.relative_to(root).as_posix()
            entries.append((_check_rel_path(rel), full))
    entries.sort(key=lambda e: e[0])
    return entries


def canonical_size(files: list[tuple[bytes, Path]]) -> int:
    size = len(MAGIC) + 1 + 8
    for raw, full in files:
        size += 1 + 4 + len(raw) + 8 + full.stat().st_size
    return size


def iter_dir_bytes(
    files: list[tuple[bytes, Path]], progress: Progress | None = None
) -> Iterator[bytes]:
    """Yield the canonical bytes of the listed files in chunks, never holding a whole file."""
    yield MAGIC
    for raw, full in files:
        with open(full, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            yield b"F" + struct.pack("<I", len(raw)) + raw + struct.pack("<Q", size)
            left = size
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise UnsupportedEntry(f"{full} shrank while it was being read; try again")
                left -= len(chunk)
                if progress:
                    progress(len(chunk))
                yield chunk
            if f.read(1):
                raise UnsupportedEntry(f"{full} grew while it was being read; try again")
    yield b"E" + struct.pack("<Q", len(files))


class _Reader:
    """Reads exact byte counts from a stream, feeding every byte read to `sink` (the hasher)."""

    def __init__(self, stream: BinaryIO, sink: Callable[[bytes], None], progress: Progress | None):
        self.stream, self.sink, self.progress = stream, sink, progress

    def exact(self, n: int, what: str) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise UnsupportedEntry(f"directory archive ends inside {what}")
        self.sink(data)
        if self.progress:
            self.progress(n)
        return data


def extract_dir(
    stream: BinaryIO,
    out_dir: Path,
    sink: Callable[[bytes], None],
    progress: Progress | None = None,
) -> int:
    """Unpack canonical directory bytes (MAGIC already consumed and fed to `sink`) into out_dir.

    Checks canonical order, safe names and the trailer; returns the number of files. The caller
    compares the hash fed through `sink` with the CID before it exposes out_dir to anyone.
    """
    r = _Reader(stream, sink, progress)
    out_dir.mkdir(parents=True, exist_ok=False)
    previous: bytes | None = None
    count = 0
    file_paths: set[bytes] = set()
    while True:
        tag = r.exact(1, "an entry tag")
        if tag == b"E":
            (n,) = struct.unpack("<Q", r.exact(8, "the trailer"))
            if n != count:
                raise UnsupportedEntry(f"directory archive trailer says {n} files, found {count}")
            if stream.read(1):
                raise UnsupportedEntry("directory archive has bytes after its trailer")
            return count
        if tag != b"F":
            raise UnsupportedEntry(f"directory archive has an unknown entry tag {tag!r}")
        (plen,) = struct.unpack("<I", r.exact(4, "a path length"))
        if plen > MAX_PATH_BYTES:
            raise UnsupportedEntry(f"directory archive has a path of {plen} bytes")
        raw = r.exact(plen, "a path")
        try:
            rel = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UnsupportedEntry(f"directory archive has a path that is not UTF-8: {raw!r}") from e
        _check_rel_path(rel)
        if previous is not None and raw <= previous:
            raise UnsupportedEntry(f"directory archive is not in canonical order at {rel!r}")
        parts = raw.split(b"/")
        for i in range(1, len(parts)):
            if b"/".join(parts[:i]) in file_paths:
                raise UnsupportedEntry(f"directory archive has {rel!r} below a file")
        file_paths.add(raw)
        previous = raw
        (size,) = struct.unpack("<Q", r.exact(8, "a file size"))
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            left = size
            while left:
                chunk = r.exact(min(CHUNK, left), f"the contents of {rel!r}")
                f.write(chunk)
                left -= len(chunk)
        count += 1
