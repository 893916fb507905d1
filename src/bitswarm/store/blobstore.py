"""The local blob store: one directory of immutable blobs, each named by the sha256 of its bytes.

Layout under `root`:
    blobs/<2 hex>/<64 hex>   canonical bytes of a file or directory (see canonical.py)
    labels/<64 hex>          optional human label (e.g. the model name it was imported as)
    checkouts/<64 hex>/      unpacked directories handed to loaders, re-hashed on every use
    tmp/                     writes in progress; a crash leaves only these, removed on next open

Every read re-hashes what it returns: a blob whose bytes no longer match its CID raises
CorruptBlob and nothing of it reaches the caller. Every write goes to tmp/ and is renamed into
place once complete, so a crash never leaves a partial blob under blobs/. Removal runs the
same way backwards: a blob is renamed into tmp/ before it is deleted (see `remove`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bitswarm.store import canonical
from bitswarm.store.atomic import atomic_write_text, fsync_dir
from bitswarm.store.cid import cid_from_digest, is_cid, parse_cid
from bitswarm.store.errors import BlobNotFound, CorruptBlob, StoreError, UnsupportedEntry

Progress = canonical.Progress
MAX_LABEL = 200
# tmp/ entries that carry no writer pid (tempfile.TemporaryDirectory(dir=store.tmp), used by
# model import and warm-start while they build a directory to put) cannot be asked whether their
# writer lives; they are removed only once nothing could still be writing them.
FOREIGN_TMP_MAX_AGE = 24 * 3600


@dataclass(frozen=True)
class BlobInfo:
    cid: str
    size: int
    kind: str  # "file" or "dir"
    label: str | None


def _check_label(label: str) -> str:
    label = label.strip()
    if not label or len(label) > MAX_LABEL or any(c in label for c in "\n\r\x00"):
        raise StoreError(f"a label is 1 to {MAX_LABEL} printable characters on one line")
    return label


def _tree_bytes(path: Path) -> int:
    """Bytes of the files under a directory (0 if it is gone)."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.labels = self.root / "labels"
        self.checkouts = self.root / "checkouts"
        self.tmp = self.root / "tmp"
        for d in (self.blobs, self.labels, self.checkouts, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._sweep_tmp()

    # -- housekeeping ---------------------------------------------------------------------

    def _sweep_tmp(self) -> None:
        """Remove what crashed writers left; a live writer's files carry its pid and are kept."""
        now = time.time()
        for entry in self.tmp.iterdir():
            pid_text = entry.name.split("-", 1)[0]
            if pid_text.isdigit():
                if _pid_alive(int(pid_text)):
                    continue
            else:
                try:
                    if now - entry.lstat().st_mtime < FOREIGN_TMP_MAX_AGE:
                        continue
                except FileNotFoundError:
                    continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()

    def _tmp_path(self) -> Path:
        return self.tmp / f"{os.getpid()}-{secrets.token_hex(8)}"

    def blob_path(self, cid: str) -> Path:
        hexd = parse_cid(cid)
        return self.blobs / hexd[:2] / hexd

    # -- writing --------------------------------------------------------------------------

    def _commit(self, tmp: Path, hex_digest: str, label: str | None) -> str:
        cid = cid_from_digest(hex_digest)
        if label is not None:
            label = _check_label(label)  # before the rename: a bad label stores nothing
        final = self.blobs / hex_digest[:2] / hex_digest
        final.parent.mkdir(exist_ok=True)
        # Replacing an existing blob is harmless (same bytes) and repairs a corrupted copy. It
        # also gives the blob a new inode, which is how a concurrent `remove` sees it is wanted.
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if label is not None:
            # Not set_label: its has() could catch the moment a concurrent remove() has the
            # blob in tmp/ before putting it back, and fail a put that did succeed.
            atomic_write_text(self.labels / hex_digest, label)
        return cid

    def adopt(self, path: Path, cid: str) -> str:
        """Move a complete file whose bytes the caller has hashed to `cid` into the store; returns the CID.

        A rename (so `path` must be on the store's file system), no copy and no re-hash: for a
        writer that hashed the bytes as they arrived, e.g. a blob fetched from a peer.
        """
        return self._commit(Path(path), parse_cid(cid), None)

    def _write_chunks(self, chunks, label: str | None) -> str:
        tmp = self._tmp_path()
        h = hashlib.sha256()
        try:
            with open(tmp, "xb") as f:
                for chunk in chunks:
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            return self._commit(tmp, h.hexdigest(), label)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def put_bytes(self, data: bytes, label: str | None = None) -> str:
        return self._write_chunks([data], label)

    def put_file(self, path: Path, label: str | None = None, progress: Progress | None = None) -> str:
        path = Path(path)

        def chunks():
            with open(path, "rb") as f:
                while chunk := f.read(canonical.CHUNK):
                    if progress:
                        progress(len(chunk))
                    yield chunk

        return self._write_chunks(chunks(), label)

    def put_dir(
        self,
        path: Path,
        label: str | None = None,
        progress: Progress | None = None,
        follow_symlinks: bool = False,
    ) -> str:
        files = canonical.list_files(Path(path), follow_symlinks=follow_symlinks)
        return self._write_chunks(canonical.iter_dir_bytes(files, progress), label)

    def put(self, path: Path, label: str | None = None, progress: Progress | None = None) -> str:
        """Store a file or a directory; returns its CID."""
        path = Path(path)
        if path.is_symlink():
            raise UnsupportedEntry(f"{path} is a symbolic link; give the path it points to")
        if path.is_dir():
            return self.put_dir(path, label, progress)
        if path.is_file():
            return self.put_file(path, label, progress)
        if not path.exists():
            raise StoreError(f"no such file or directory: {path}")
        raise UnsupportedEntry(f"{path} is neither a regular file nor a directory")

    @staticmethod
    def size_of(path: Path, follow_symlinks: bool = False) -> int:
        """Bytes that put() will read, for progress bars."""
        path = Path(path)
        if path.is_dir():
            return sum(f.stat().st_size for _, f in canonical.list_files(path, follow_symlinks))
        return path.stat().st_size

    # -- labels ---------------------------------------------------------------------------

    def set_label(self, cid: str, label: str) -> None:
        label = _check_label(label)
        if not self.has(cid):
            raise BlobNotFound(f"no blob {cid} in the store at {self.root}")
        atomic_write_text(self.labels / parse_cid(cid), label)

    def label(self, cid: str) -> str | None:
        try:
            return (self.labels / parse_cid(cid)).read_text("utf-8")
        except FileNotFoundError:
            return None

    def find_label(self, label: str) -> list[str]:
        """CIDs carrying this label, newest first."""
        hits = []
        for p in self.labels.iterdir():
            if len(p.name) == 64 and p.read_text("utf-8") == label:
                hits.append((p.stat().st_mtime, cid_from_digest(p.name)))
        return [cid for _, cid in sorted(hits, reverse=True) if self.has(cid)]

    # -- reading --------------------------------------------------------------------------

    def has(self, cid: str) -> bool:
        return self.blob_path(cid).is_file()

    def _open_blob(self, cid: str):
        path = self.blob_path(cid)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(
                f"no blob {cid} in the store at {self.root}; `bitswarm store ls` lists what it holds"
            ) from None

    def _corrupt(self, cid: str, actual_hex: str) -> CorruptBlob:
        return CorruptBlob(
            f"blob {cid} is corrupt: its bytes hash to sha256:{actual_hex}. It was not returned. "
            f"Put the original again to repair it, or delete {self.blob_path(cid)}."
        )

    def kind(self, cid: str) -> str:
        with self._open_blob(cid) as f:
            return "dir" if f.read(len(canonical.MAGIC)) == canonical.MAGIC else "file"

    def size(self, cid: str) -> int:
        try:
            return self.blob_path(cid).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {cid} in the store at {self.root}") from None

    def read_bytes(self, cid: str) -> bytes:
        """The whole blob, after checking its hash (for small blobs: specs, transcripts)."""
        expected = parse_cid(cid)
        with self._open_blob(cid) as f:
            data = f.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise self._corrupt(cid, actual)
        return data

    def get(self, cid: str, out: Path, progress: Progress | None = None, raw: bool = False) -> str:
        """Write a blob to `out` (a file, or a directory for directory blobs); returns the kind.

        The output appears only after the hash matched; on a mismatch nothing is left at `out`.
        With raw=True a directory blob is written as its canonical bytes instead of unpacked.
        """
        out = Path(out)
        if out.exists() or out.is_symlink():
            raise StoreError(f"{out} already exists; choose a new path or remove it first")
        if not out.parent.is_dir():
            raise StoreError(f"{out.parent} is not a directory; create it first")
        expected = parse_cid(cid)
        h = hashlib.sha256()
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with self._open_blob(cid) as f:
                head = f.read(len(canonical.MAGIC))
                is_dir = head == canonical.MAGIC and not raw
                if is_dir:
                    h.update(head)
                    if progress:
                        progress(len(head))
                    try:
                        canonical.extract_dir(f, tmp, h.update, progress)
                    except UnsupportedEntry:
                        # A blob that starts like a directory but does not parse: either it is
                        # corrupt (the hash says so) or it is a file that happens to look like one.
                        shutil.rmtree(tmp, ignore_errors=True)
                        return self._get_file_after_check(cid, out, progress)
                else:
                    f.seek(0)
                    with open(tmp, "xb") as o:
                        while chunk := f.read(canonical.CHUNK):
                            h.update(chunk)
                            o.write(chunk)
                            if progress:
                                progress(len(chunk))
            if h.hexdigest() != expected:
                raise self._corrupt(cid, h.hexdigest())
            os.replace(tmp, out)
            return "dir" if is_dir else "file"
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()

    def _get_file_after_check(self, cid: str, out: Path, progress: Progress | None) -> str:
        actual = self.hash_blob(cid)
        if actual != parse_cid(cid):
            raise self._corrupt(cid, actual)
        return self.get(cid, out, progress, raw=True)

    def hash_blob(self, cid: str, progress: Progress | None = None) -> str:
        h = hashlib.sha256()
        with self._open_blob(cid) as f:
            while chunk := f.read(canonical.CHUNK):
                h.update(chunk)
                if progress:
                    progress(len(chunk))
        return h.hexdigest()

    def checkout(self, cid: str, progress: Progress | None = None) -> Path:
        """A read-only view of a directory blob as a real directory, for loaders that want paths.

        An existing checkout is re-hashed on every call; one that no longer matches (edited or
        damaged on disk) is discarded and unpacked again from the verified blob.
        """
        hexd = parse_cid(cid)
        target = self.checkouts / hexd
        if target.is_dir():
            if dir_digest(target) == hexd:
                return target
            shutil.rmtree(target)
        if not self.has(cid):
            raise BlobNotFound(
                f"no blob {cid} in the store at {self.root}; `bitswarm store ls` lists what it holds"
            )
        staging = self._tmp_path()
        if self.get(cid, staging, progress) != "dir":
            staging.unlink()
            raise StoreError(f"blob {cid} is a file, not a directory")
        try:
            os.replace(staging, target)
        except OSError:
            # Another process checked out the same CID first; its copy is as good as ours.
            shutil.rmtree(staging, ignore_errors=True)
        return target

    # -- listing and checking -------------------------------------------------------------

    def list(self) -> list[BlobInfo]:
        infos = []
        for sub in sorted(self.blobs.iterdir()):
            if not sub.is_dir():
                continue
            for p in sorted(sub.iterdir()):
                if len(p.name) != 64:
                    continue
                cid = cid_from_digest(p.name)
                infos.append(BlobInfo(cid, p.stat().st_size, self.kind(cid), self.label(cid)))
        return infos

    def verify(self, cid: str | None = None, progress: Progress | None = None) -> dict:
        """Re-hash one blob or all; returns {"checked": n, "corrupt": [cid, ...]}."""
        cids = [cid] if cid is not None else [b.cid for b in self.list()]
        corrupt = []
        for c in cids:
            if self.hash_blob(c, progress) != parse_cid(c):
                corrupt.append(c)
        return {"checked": len(cids), "corrupt": corrupt}

    def total_bytes(self, cid: str | None = None) -> int:
        if cid is not None:
            return self.size(cid)
        return sum(b.size for b in self.list())

    # -- removing -------------------------------------------------------------------------
    # What may be removed is decided above the store (gc.py, from pins); these only remove safely.

    def blob_stats(self) -> dict[str, os.stat_result]:
        """Every blob's hex digest with its stat (size, mtime, inode), without opening any blob."""
        stats = {}
        for sub in self.blobs.iterdir():
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                if is_cid(cid_from_digest(p.name)):
                    with contextlib.suppress(FileNotFoundError):  # removed since the listing
                        stats[p.name] = p.stat()
        return stats

    def remove(self, cid: str, expect_inode: int | None = None) -> int | None:
        """Delete a blob with its label and checkout; returns the bytes freed.

        Returns None and leaves the blob in place when it was put again meanwhile: since
        `expect_inode` was read (gc plans from one stat and removes later), or while this ran.
        Every put renames a new file over the blob, so a changed inode means a writer wants it.
        The label goes before the blob: a crash between leaves an unlabelled blob, which the
        next gc decides about again, and never a label naming nothing. What is renamed into
        tmp/ under this process's pid is removed by the next open if this process dies.
        """
        hexd = parse_cid(cid)
        final = self.blobs / hexd[:2] / hexd
        try:
            before = final.stat()
        except FileNotFoundError:
            raise BlobNotFound(
                f"no blob {cid} in the store at {self.root}; `bitswarm store ls` lists what it holds"
            ) from None
        if expect_inode is not None and before.st_ino != expect_inode:
            return None
        label_trash = self._to_trash(self.labels / hexd)
        blob_trash = self._to_trash(final)
        if blob_trash is None:  # another process removed it first
            self._discard(label_trash)
            return None
        if blob_trash.stat().st_ino != before.st_ino:
            # Renamed away a copy a writer put since the stat: put both back. A link never
            # replaces what is there, so a newer label the writer set meanwhile is kept.
            self._restore(blob_trash, final)
            self._restore(label_trash, self.labels / hexd)
            return None
        self._discard(blob_trash)
        self._discard(label_trash)
        fsync_dir(final.parent)
        return before.st_size + self.drop_checkout(cid)

    def checkout_bytes(self, cid: str) -> int:
        """Disk bytes of a blob's checkout (0 if it has none)."""
        return _tree_bytes(self.checkouts / parse_cid(cid))

    def drop_checkout(self, cid: str) -> int:
        """Remove a blob's checkout (loaders re-create it from the blob); returns the bytes freed."""
        path = self.checkouts / parse_cid(cid)
        size = _tree_bytes(path)
        trash = self._to_trash(path)
        self._discard(trash)
        return size if trash is not None else 0

    def orphan_checkouts(self) -> list[str]:
        """CIDs of checkouts whose blob is gone (left by a crash between a blob and its checkout)."""
        return [cid_from_digest(p.name) for p in sorted(self.checkouts.iterdir())
                if is_cid(cid_from_digest(p.name)) and not (self.blobs / p.name[:2] / p.name).exists()]

    def _to_trash(self, path: Path) -> Path | None:
        """Rename `path` into tmp/ under this pid (None if it is not there): one atomic step out."""
        trash = self.tmp / f"{os.getpid()}-rm-{secrets.token_hex(8)}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return None
        return trash

    def _restore(self, trash: Path | None, path: Path) -> None:
        if trash is None:
            return
        try:
            os.link(trash, path)  # never replaces: a copy the writer put back meanwhile wins
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(trash, path)
        with contextlib.suppress(FileNotFoundError):
            trash.unlink()
        fsync_dir(path.parent)

    def _discard(self, trash: Path | None) -> None:
        if trash is None:
            return
        if trash.is_dir():
            shutil.rmtree(trash)
        else:
            trash.unlink()


def dir_digest(path: Path) -> str:
    """Hex sha256 of a directory's canonical bytes, computed without writing anything."""
    h = hashlib.sha256()
    for chunk in canonical.iter_dir_bytes(canonical.list_files(Path(path))):
        h.update(chunk)
    return h.hexdigest()


def path_cid(path: Path) -> str:
    """The CID `put` would give this file or directory."""
    path = Path(path)
    if path.is_dir():
        return cid_from_digest(dir_digest(path))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(canonical.CHUNK):
            h.update(chunk)
    return cid_from_digest(h.hexdigest())
