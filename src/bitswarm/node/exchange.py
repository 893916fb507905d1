"""Blobs between peers: serve this node's blobs over libp2p, find providers on the DHT, fetch by CID.

Threads. The exchange owns one asyncio loop on a background thread, where the DHT calls run,
streams are opened and requests answered; the public methods are synchronous and safe to call
from any thread (a node's worker, an HTTP handler). A blob's bytes never pass through the loop:
once a stream is open it is taken off it (blob_protocol.Stream, the blocking socket to the
daemon that carries the stream). Fetching, the calling thread receives each chunk straight into
one of `readahead` reused buffers, hashes it there and hands it to a writer thread that appends
it to the partial copy while the next chunk arrives (with O_DIRECT where it can, see
_Appender); progress callbacks run in the calling thread. Serving, a thread per stream sends
the file from the page cache to the socket with sendfile. So a blob costs no event-loop
wake-up, task or extra copy per chunk, and at most `readahead` chunks of it are in memory.

Trust. A provider is believed about nothing: the bytes are committed to the store only when
their sha256 equals the CID; a provider whose bytes do not is remembered as bad for that CID
for the life of the exchange, and the next one is tried. (A CID is one sha256 over the whole
blob, so bad bytes show only at the end; chunk hashes would need a manifest beside the CID.)

Resuming. Bytes arrive in <store>/partial/<hex>.part, fsynced when a transfer stops. If a
provider goes away the part stays; the next fetch re-hashes it and asks a provider for the rest
from that offset. If a resumed copy does not hash to its CID we cannot tell whose bytes were
wrong, so it starts over from 0 with the same provider before blaming anyone.

Serving policy (who may fetch what), checked before the store is looked at so that a refusal
does not reveal what this node holds: "announced" (default) serves only what this node
announced, "all" the whole store, "none" nothing. Directory blobs are self-contained (their
canonical bytes hold every file, see store.canonical), so a directory moves as one blob and
announcing it covers its files.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import queue
import random
import shutil
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import CancelledError as FutureCancelled
from pathlib import Path
from typing import Any, BinaryIO, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.errors import BitswarmError
from bitswarm import peer_key
from bitswarm.node.blob_direct import DataPort, Grant
from bitswarm.node.blob_direct import connect as direct_connect
from bitswarm.node.blob_protocol import (
    MAX_MADDR_CHARS,
    MAX_DIRECT_HOSTS,
    MAX_MADDRS,
    PROTOCOL,
    PeerFailed,
    Reply,
    Request,
    Stream,
    Timeouts,
    WireError,
    detach,
    open_stream,
    provider_key,
    provider_record_validator,
    read_request,
    write_reply,
)
from bitswarm.store import BlobStore
from bitswarm.store.cid import parse_cid
from bitswarm.swarm.hivemind_import import import_dht_parts
from bitswarm.swarm.hivemind_transport import start_dht_node
from bitswarm.swarm.p2p_diagnosis import check_bootstrap_maddr

log = logging.getLogger(__name__)

POLICIES = ("announced", "all", "none")
Progress = Callable[[int], None]


class ExchangeError(BitswarmError):
    """The exchange could not do what was asked (not running, blob not in the store, bad setting)."""


class FetchFailed(ExchangeError):
    """No provider delivered the blob; `attempts` holds (peer id, why it failed) for each one tried."""

    def __init__(self, cid: str, attempts: Sequence[tuple[str, str]], note: str = ""):
        self.cid, self.attempts = cid, list(attempts)
        head = f"could not fetch {cid}: " + (f"tried {len(self.attempts)} peer(s)" if self.attempts else "no peer to ask")
        lines = [head] + [f"  {peer}: {why}" for peer, why in self.attempts] + ([note] if note else [])
        super().__init__("\n".join(lines))


async def _in_thread(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a thread of its own, awaited. A daemon thread: unlike an executor's, it is
    not joined at interpreter exit, and a long upload never waits for a free worker."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if done.done():
            return
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)

    def run() -> None:
        try:
            outcome = (True, fn(*args))
        except BaseException as e:  # noqa: BLE001  (handed to the awaiting coroutine)
            outcome = (False, e)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done


class _Appender:
    """Hashes a fetch's chunks and appends them to its partial copy, each from a thread of its own.

    The fetching thread takes a free buffer (buffer()), receives a chunk into it and hands it
    over (submit()); one thread feeds it to `hasher` while the next chunk arrives, another
    writes it, then the buffer is free again. Receiving, hashing and writing thus overlap: on
    loopback a fetch runs at the rate of sha256 alone, where one thread doing all three ran at
    barely more than half of it. `depth` buffers of chunk_size are all the blob ever holds in memory.

    Whole blocks at block-aligned offsets, from these page-aligned buffers, are written with
    O_DIRECT: straight from the buffer to the disk, with no copy into the page cache and no
    page-cache pages to allocate. On a VM whose freed memory goes back to the host, allocating
    those pages is what a buffered write of fresh data mostly costs (1 to 4 ms of CPU per MB
    measured here, against 0.65 ms to hash it); a direct write costs almost no CPU, only the
    device's time, which this thread overlaps with receiving. The rest (the unaligned start of
    a resumed copy, a blob's tail) goes through the page cache as usual, and so does everything
    on a file system that refuses O_DIRECT (tmpfs). The caller's fsync makes it all durable. The
    price: a freshly fetched blob is not in the page cache, so its first read comes from disk.
    """

    BLOCK = 4096  # a multiple of every logical block size in use

    def __init__(self, f: Any, chunk_size: int, depth: int, hasher: Any):
        self._fd = f.fileno()
        self._pos = self._planned = os.fstat(self._fd).st_size  # the end now, and once all submitted is written
        self._direct, self._can = False, hasattr(os, "O_DIRECT")
        size = -(-chunk_size // mmap.PAGESIZE) * mmap.PAGESIZE
        self._mems = [mmap.mmap(-1, size) for _ in range(depth)]  # anonymous, so page-aligned
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for m in self._mems:
            self._free.put(memoryview(m)[:chunk_size])
        self._hasher = hasher
        self._todo: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        self._hashed: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._hash, name="blobs-hash", daemon=True),
                         threading.Thread(target=self._run, name="blobs-write", daemon=True)]
        for t in self._threads:
            t.start()

    def room(self, want: int) -> int:
        """How much of the next `want` bytes to take now, so that later chunks start on a block."""
        head = -self._planned % self.BLOCK
        return min(want, head) if head else want

    def buffer(self) -> memoryview:
        """A free chunk buffer (waits for a write to finish); raises the writing's error, if any."""
        view = self._free.get()
        if self._error is not None:
            self._free.put(view)
            raise self._error
        return view

    def unused(self, view: memoryview) -> None:
        self._free.put(view)

    def submit(self, view: memoryview, n: int) -> None:
        """Hash and append view[:n] (after everything submitted before), then free `view`."""
        self._planned += n
        self._todo.put((view, n))

    def finish(self) -> None:
        """Wait until every chunk is hashed and written; raise the first error. Frees the buffers."""
        self._todo.put(None)
        for t in self._threads:
            t.join()
        while not self._free.empty():
            self._free.get().release()
        for m in self._mems:
            with contextlib.suppress(BufferError):  # a slice still held by a traceback: the GC unmaps it
                m.close()
        if self._error is not None:
            raise self._error

    def _hash(self) -> None:
        while (item := self._todo.get()) is not None:
            view, n = item
            self._hasher.update(view[:n])  # hashlib lets go of the GIL for this
            self._hashed.put(item)
        self._hashed.put(None)

    def _run(self) -> None:
        while (item := self._hashed.get()) is not None:
            view, n = item
            if self._error is None:
                try:
                    self._write(view[:n])
                except BaseException as e:  # noqa: BLE001  (raised in the fetching thread)
                    self._error = e
            self._free.put(view)

    def _set_direct(self, on: bool) -> None:
        if on == self._direct:
            return
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
        except OSError:  # EINVAL: this file system has no direct I/O
            self._can = False
            return
        self._direct = on

    def _write(self, view: memoryview) -> None:
        while view:
            self._set_direct(self._can and self._pos % self.BLOCK == 0 and len(view) % self.BLOCK == 0)
            try:
                n = os.write(self._fd, view)
            except OSError as e:
                if not self._direct or e.errno != errno.EINVAL:
                    raise
                self._can = False  # the buffer or the device disagrees after all: no direct I/O from here
                continue
            view = view[n:]
            self._pos += n


# The unit of receiving, hashing and writing a fetch. Measured on loopback (benchmarks/blob_fetch.py,
# 2 cores): 4 MiB chunks fetch at 0.78-0.86 of sha256's rate, 1 MiB ones at 0.58-0.62 (a syscall,
# a queue hand-over and an O_DIRECT write per chunk, four times as many).
FETCH_CHUNK = 4 << 20

_LIVE: weakref.WeakSet[BlobExchange] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Stops each exchange's p2pd, which would otherwise outlive an interpreter that exits without close().
    for exchange in list(_LIVE):
        exchange.close()


class BlobExchange:
    """Serves and fetches the blobs of `store` over libp2p; providers are announced on a hivemind DHT.

    `identity` is the node's libp2p key (a fresh one if None): the daemon's peer id is its
    12D3KooW… id. `bootstrap` lists multiaddrs of running peers (their `maddrs`). Provider
    records live `expiration_s` and are renewed three times per expiration. `chunk_size` is
    the unit of hashing, writing and progress when fetching and of pacing when serving; a
    fetch holds `readahead` buffers of it (one being received, the others being written).
    `upload_limit` caps the bytes per second served, over all streams together. `op_timeout_s`
    bounds a DHT call, a dial or a reply; a provider that sends nothing for `idle_timeout_s`
    mid-blob is dropped (a slow but steady one is kept), and so is a fetcher that takes
    nothing for op_timeout_s + idle_timeout_s.
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        identity: Ed25519PrivateKey | None = None,
        listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        bootstrap: Sequence[str] = (),
        policy: str = "announced",
        chunk_size: int = FETCH_CHUNK,
        readahead: int = 4,
        upload_limit: float | None = None,
        expiration_s: float = 600,
        start_timeout_s: float = 30,
        op_timeout_s: float = 30,
        idle_timeout_s: float = 30,
        partial_dir: Path | None = None,
        direct: bool = True,
    ):
        if chunk_size < 1 or readahead < 1 or (upload_limit is not None and upload_limit <= 0):
            raise ExchangeError("chunk_size, readahead and upload_limit must be positive")
        self.store = store
        self.policy = policy
        self.listen, self.bootstrap = list(listen), list(bootstrap)
        self.chunk_size, self.readahead, self.upload_limit = chunk_size, readahead, upload_limit
        self.expiration_s, self.start_timeout_s = expiration_s, start_timeout_s
        self.timeouts = Timeouts(op_s=op_timeout_s, idle_s=idle_timeout_s)
        # Not the store's tmp/: that is swept on open, and a partial copy must outlive a restart.
        self.partial_dir = Path(partial_dir) if partial_dir else store.root / "partial"
        self._priv = identity or peer_key.generate()
        self.peer_id = peer_key.peer_id(self._priv)
        self.maddrs: list[str] = []  # where peers reach us, each ending in /p2p/<peer_id>; set by start()

        self._lock = threading.Lock()  # guards the sets and counters below
        self._announced: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._bad: dict[str, set[str]] = {}
        self._cid_locks: dict[str, threading.Lock] = {}
        self._streams: set[Stream] = set()  # off the loop, fetching or serving: close() aborts them
        self._opening: set[Any] = set()  # futures of streams being opened for a fetch: close() cancels them
        self._upload_clock = 0.0
        self.direct = direct
        self._port: DataPort | None = None
        self._dht: Any = None
        self._p2p: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in POLICIES:
            raise ExchangeError(f"policy must be one of {', '.join(POLICIES)}, not {value!r}")
        self._policy = value

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the event loop, the DHT node and its p2pd; raises TransportError with a diagnosis."""
        if self._loop is not None:
            return self
        _LIVE.add(self)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"blobs-{self.peer_id[-6:]}", daemon=True)
        self._thread.start()
        try:
            self._run(self._start_dht(), timeout=self.start_timeout_s + 30)
        except BaseException:
            self.close()
            raise
        return self

    async def _start_dht(self) -> None:
        # The DHT runs on this loop, in this process: no DHT process, and no torch (hivemind_import).
        self._dht = await start_dht_node(
            self._priv,
            initial_peers=self.bootstrap,
            host_maddrs=self.listen,
            start_timeout_s=self.start_timeout_s,
            record_validators=[provider_record_validator(self._priv)],
        )
        self._p2p = self._dht.p2p
        if self._p2p.peer_id.to_base58() != self.peer_id:
            raise ExchangeError(f"the p2p daemon runs as {self._p2p.peer_id.to_base58()}, not as {self.peer_id}")
        await self._p2p.add_binary_stream_handler(PROTOCOL, self._serve)
        self.maddrs = [str(m) for m in await self._p2p.get_visible_maddrs()]
        if self.direct:
            self._port = self._open_data_port()
        self._spawn(self._renew_forever(first_after=0 if self._announced else None))

    def close(self) -> None:
        """Stop serving, end fetches in flight, stop the DHT node and its p2pd. Idempotent."""
        with self._lock:  # whichever thread closes first does the work
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            streams, self._streams = list(self._streams), set()
            opening, self._opening = list(self._opening), set()
        for stream in streams:
            stream.abort("this node's exchange was closed")
        for future in opening:
            future.cancel()
        if loop is not None and thread is not None:
            if loop.is_running():
                try:
                    asyncio.run_coroutine_threadsafe(self._stop_tasks(), loop).result(timeout=10)
                except Exception as e:  # noqa: BLE001  (shutting down regardless)
                    log.debug("stopping the exchange's tasks: %r", e)
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()
            _LIVE.discard(self)
        if self._port is not None:
            self._port.close()
            self._port = None
        self._dht = self._p2p = None

    async def _stop_tasks(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._dht is not None:
            await self._dht.shutdown()  # the node owns its P2P: this stops the daemon and waits for it
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]  # hivemind's own timers
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_loop", None) is not None:
            self.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run `coro` on the exchange's loop and wait for its result (from any thread but the loop's)."""
        loop, wait = self._loop, timeout or self.timeouts.op_s + 5
        if loop is None or threading.current_thread() is self._thread:
            coro.close()
            raise ExchangeError("the blob exchange is not running; call start() first")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=wait)
        except TimeoutError:
            future.cancel()
            raise ExchangeError(f"the exchange did not answer within {wait:g} s") from None

    async def _dht_call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._dht is None or not self._dht.is_alive:
            raise ExchangeError("the DHT node is not running; restart the node")
        return await asyncio.wait_for(method(*args, **kwargs), self.timeouts.op_s)

    # -- announcing and finding -----------------------------------------------------------

    def announce(self, cid: str) -> bool:
        """Serve `cid` (under policy "announced") and put this node up as its provider on the DHT.

        True if some DHT node took the record; either way it is renewed before it would expire.
        """
        if not self.store.has(cid):
            raise ExchangeError(f"cannot announce {cid}: it is not in the store at {self.store.root}")
        with self._lock:
            self._announced.add(cid)
        return self._run(self._provide(cid))

    async def _provide(self, cid: str) -> bool:
        expires = import_dht_parts().get_dht_time() + self.expiration_s
        maddrs = [m for m in self.maddrs if len(m) <= MAX_MADDR_CHARS][:MAX_MADDRS]  # what validators accept
        return bool(await self._dht_call(self._dht.store, provider_key(cid), maddrs, expires, subkey=self.peer_id))

    async def _renew_forever(self, first_after: float | None) -> None:
        """Keep every announced CID's record alive; after a restart, put them all up at once."""
        pause = self.expiration_s / 3 if first_after is None else first_after
        while True:
            await asyncio.sleep(pause)
            pause = self.expiration_s / 3
            with self._lock:
                cids = sorted(self._announced)
            for cid in cids:
                try:
                    await self._provide(cid)
                except Exception as e:  # noqa: BLE001  (the next round tries again)
                    log.warning("renewing the provider record of %s failed: %r", cid, e)

    def providers(self, cid: str) -> list[str]:
        """Peer ids that announce `cid` on the DHT now (this node included, if it does)."""
        parse_cid(cid)
        return sorted(self._run(self._find(cid)))

    async def _find(self, cid: str) -> dict[str, list[str]]:
        found = await self._dht_call(self._dht.get, provider_key(cid), latest=True)
        if found is None or not isinstance(found.value, dict):
            return {}
        return {
            peer: [m for m in item.value if isinstance(m, str)]
            for peer, item in found.value.items()
            if isinstance(peer, str) and isinstance(item.value, list)
        }

    def peers(self) -> list[dict]:
        """Peers connected to this node's daemon, as [{"peer_id": str, "maddrs": [str]}]."""
        infos = self._run(self._list_peers())
        return [{"peer_id": i.peer_id.to_base58(), "maddrs": [str(a) for a in i.addrs]} for i in infos]

    async def _list_peers(self) -> list[Any]:
        return await asyncio.wait_for(self._p2p.list_peers(), self.timeouts.op_s)

    def stats(self) -> dict:
        """Counters since start: bytes and blobs served and fetched, bytes_resumed (re-hashed
        prefixes of partial copies), direct_transfers (fetches whose bytes came over plain TCP),
        refused_peers {peer: refusals}, bad_peers {cid: [peer]}."""
        with self._lock:
            names = ("bytes_served", "bytes_fetched", "bytes_resumed", "blobs_served", "blobs_fetched", "direct_transfers")
            return {
                **{k: self._counts[k] for k in names},
                "refused_peers": dict(self._refused),
                "bad_peers": {cid: sorted(peers) for cid, peers in self._bad.items()},
            }

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    # -- serving --------------------------------------------------------------------------

    def _refusal(self, cid: str) -> str | None:
        if self.policy == "none":
            return "this node serves no blobs (policy 'none')"
        with self._lock:
            if self.policy == "announced" and cid not in self._announced:
                return f"this node serves only blobs it announced (policy 'announced'); {cid} is not one"
        return None

    def _track(self, stream: Stream) -> Stream:
        with self._lock:
            if self._loop is None:  # closed meanwhile: nothing would end it later
                stream.abort("this node's exchange was closed")
            else:
                self._streams.add(stream)
        return stream

    def _untrack(self, stream: Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    async def _serve(self, info: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one reply, then the bytes: the server's side of blob_protocol."""
        peer, task = info.peer_id.to_base58(), asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # so that close() ends it
        stream = None
        try:
            try:
                req = await asyncio.wait_for(read_request(reader), self.timeouts.op_s)
            except (WireError, TimeoutError) as e:
                return await write_reply(writer, Reply("bad_request", message=str(e) or "no request in time"))
            refusal = self._refusal(req.cid)
            if refusal is not None:
                with self._lock:
                    self._refused[peer] += 1
                return await write_reply(writer, Reply("refused", message=refusal))
            try:
                f = open(self.store.blob_path(req.cid), "rb")
            except FileNotFoundError:
                return await write_reply(writer, Reply("not_found", message=f"this node does not hold {req.cid}"))
            try:
                size = os.fstat(f.fileno()).st_size
                if req.offset > size:
                    f.close()
                    return await write_reply(writer, Reply("bad_request", message=f"offset {req.offset} > size {size}"))
                if req.direct and self._port is not None:
                    direct = self._port.grant(peer, f, req.offset, size)  # the port owns f from here
                    return await write_reply(writer, Reply("ok", size=size, direct=direct))
                stream = self._track(detach(reader, writer))
            except BaseException:
                f.close()
                raise
            # The thread owns f and the stream from here: it closes both, even if this task is cancelled.
            await _in_thread(f"blobs-serve-{peer[-6:]}", self._send, stream, f, req.offset, size, True)
        except (ConnectionError, asyncio.IncompleteReadError, PeerFailed) as e:
            log.debug("serving %s ended: %s", peer, e)
        except asyncio.CancelledError:
            # close() ended it. The daemon client's done-callback calls exception() on this task,
            # which raises (and logs a traceback) for a cancelled task, so end it normally.
            log.debug("serving %s ended: the exchange is closing", peer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            if stream is not None:
                stream.abort("serving ended")  # a no-op once the thread closed it
            writer.close()

    def _open_data_port(self) -> DataPort | None:
        """The TCP port of direct transfers, on the host the daemon listens on; None where there is none."""
        first = self.listen[0].split("/") if self.listen else []
        host = first[2] if len(first) > 2 and first[1] in ("ip4", "ip6") else "0.0.0.0"
        if host in ("0.0.0.0", "::"):  # every interface: offer the addresses the daemon shows
            hosts = list(dict.fromkeys(m.split("/")[2] for m in self.maddrs if m.split("/")[1:2] == ["ip4"]))
        else:
            hosts = [host]
        hosts = [h for h in hosts if h not in ("0.0.0.0", "::")][:MAX_DIRECT_HOSTS]
        if not hosts:
            return None
        try:
            return DataPort(host, hosts, self._send_direct, claim_s=self.timeouts.op_s)
        except OSError as e:
            log.warning("no direct blob transfers (blobs go over libp2p only): %s", e)
            return None

    def _send_direct(self, stream: Stream, grant: Grant) -> None:
        try:
            self._track(stream)
        except BaseException:
            grant.f.close()
            raise
        self._send(stream, grant.f, grant.offset, grant.size, False)

    def _send(self, stream: Stream, f: BinaryIO, offset: int, size: int, reply: bool) -> None:
        """The serving thread: reply "ok" (on libp2p), then bytes [offset, size) of f, page cache to socket."""
        timeout = self.timeouts.op_s + self.timeouts.idle_s  # a fetcher that takes nothing this long is dropped
        try:
            with f:
                if reply:
                    stream.write_reply(Reply("ok", size=size), timeout)
                while offset < size:
                    sent = stream.sendfile(f, offset, min(self.chunk_size, size - offset), timeout)
                    if not sent:
                        return  # the file shrank (a damaged store): the fetcher sees a short stream
                    offset += sent
                    self._count("bytes_served", sent)
                    if self.upload_limit:
                        # One virtual clock shared by every stream keeps the total under upload_limit.
                        with self._lock:
                            now = time.monotonic()
                            self._upload_clock = max(self._upload_clock, now) + sent / self.upload_limit
                            pause = self._upload_clock - now
                        stream.sleep(pause)
            self._count("blobs_served")
        except PeerFailed as e:
            log.debug("serving ended: %s", e)
        finally:
            self._untrack(stream)
            stream.close()

    # -- fetching -------------------------------------------------------------------------

    def partial_path(self, cid: str) -> Path:
        return self.partial_dir / f"{parse_cid(cid)}.part"

    def fetch(self, cid: str, progress: Progress | None = None, *, sources: Sequence[str] = ()) -> str:
        """Bring `cid` into the local store from its providers (or from `sources`); returns the CID.

        `sources`: peer ids or multiaddrs ending in /p2p/<peer id>, asked in this order instead
        of the providers found on the DHT. `progress(n)` is called in this thread for every n
        bytes done, the re-hashed prefix of a resumed copy included. Raises FetchFailed, which
        says which peers were asked and why each failed.
        """
        parse_cid(cid)
        if self.store.has(cid):
            return cid
        with self._lock:
            cid_lock = self._cid_locks.setdefault(cid, threading.Lock())
        with cid_lock:  # one writer per partial copy
            if self.store.has(cid):
                return cid
            candidates = self._candidates(cid, sources)
            attempts: list[tuple[str, str]] = []
            for peer, maddrs in candidates:
                with self._lock:
                    bad = peer in self._bad.get(cid, ())
                if bad:
                    attempts.append((peer, "served bytes that did not hash to the CID earlier; skipped"))
                    continue
                try:
                    self._fetch_from(cid, peer, maddrs, progress)
                    self._count("blobs_fetched")
                    return cid
                except PeerFailed as e:
                    attempts.append((peer, str(e)))
            part = self.partial_path(cid)
            kept = part.stat().st_size if part.exists() else 0
            note = f"{kept} bytes are kept in {part}; the next fetch resumes from there." if kept else ""
            if not candidates:
                note = (
                    f"No peer announces it on the DHT (this node is connected to {len(self.peers())} "
                    "peer(s)). Ask a node that holds it to announce it, or name one in sources."
                )
            raise FetchFailed(cid, attempts, note)

    def _candidates(self, cid: str, sources: Sequence[str]) -> list[tuple[str, list[str]]]:
        """(peer id, its multiaddrs) to ask, in order."""
        if sources:
            grouped: dict[str, list[str]] = {}
            for s in sources:
                if "/" in s:
                    check_bootstrap_maddr(s)  # a malformed address is the caller's error, said in words
                grouped.setdefault(s.rsplit("/p2p/", 1)[-1], []).extend([s] if "/" in s else [])
            return list(grouped.items())
        found = self._run(self._find(cid))
        found.pop(self.peer_id, None)
        items = list(found.items())
        random.shuffle(items)  # spreads the load over the providers
        return items

    def _fetch_from(self, cid: str, peer: str, maddrs: list[str], progress: Progress | None) -> None:
        try:
            self._download(cid, peer, maddrs, progress)
        except PeerFailed as e:
            if not e.restart:
                raise
            log.info("fetching %s from %s: %s; starting over from byte 0", cid, peer, e)
            self.partial_path(cid).unlink(missing_ok=True)
            self._download(cid, peer, maddrs, progress)

    def _download(self, cid: str, peer: str, maddrs: list[str], progress: Progress | None) -> None:
        """Extend the partial copy with what `peer` sends, then commit it if it hashes to the CID."""
        hexd, part = parse_cid(cid), self.partial_path(cid)
        h = hashlib.sha256()
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "a+b", buffering=0) as f:
                out = _Appender(f, self.chunk_size, self.readahead, h)
                try:
                    buf = out.buffer()
                    try:
                        f.seek(0)
                        while n := f.readinto(buf):
                            h.update(buf[:n])
                            if progress:
                                progress(n)
                    finally:
                        out.unused(buf)
                    offset = f.tell()
                    failure = self._receive_into(out, h, Request(cid, offset, direct=self.direct), peer, maddrs, progress)
                finally:
                    out.finish()
                got = f.tell()
                os.fsync(f.fileno())  # what arrived survives a crash, for the next fetch to resume
        except OSError as e:
            raise ExchangeError(f"could not write the partial copy of {cid} at {part}: {e}") from e
        if failure is not None:
            if got == 0:
                part.unlink(missing_ok=True)
            raise PeerFailed(f"{failure} (we hold {got} bytes)" if got > offset else failure)
        self._count("bytes_resumed", offset)
        if h.hexdigest() != hexd:
            if offset:
                raise PeerFailed(f"the copy resumed from byte {offset} does not hash to the CID", restart=True)
            part.unlink(missing_ok=True)
            with self._lock:
                self._bad.setdefault(cid, set()).add(peer)
            raise PeerFailed(f"sent {got} bytes that hash to sha256:{h.hexdigest()}, not to the CID; dropped")
        self.store.adopt(part, cid)  # the store's own rename-and-fsync: no second copy

    def _open(self, peer: str, maddrs: list[str]) -> Stream:
        """A stream to `peer`, opened on the loop and handed to this thread; PeerFailed if none."""
        loop = self._loop
        if loop is None:
            raise ExchangeError("the blob exchange is not running; call start() first")
        future = asyncio.run_coroutine_threadsafe(open_stream(self._p2p, peer, maddrs, self.timeouts), loop)
        with self._lock:
            if self._loop is None:
                future.cancel()
            self._opening.add(future)
        try:
            return self._track(future.result(timeout=2 * self.timeouts.op_s + 5))  # a dial, then the stream
        except FutureCancelled:
            raise PeerFailed("this node's exchange was closed") from None
        except TimeoutError:
            future.cancel()
            raise PeerFailed(f"did not answer within {2 * self.timeouts.op_s + 5:g} s") from None
        finally:
            with self._lock:
                self._opening.discard(future)

    def _receive_into(
        self, out: _Appender, h: Any, req: Request, peer: str, maddrs: list[str], progress: Progress | None
    ) -> str | None:
        """Append what `peer` sends for `req` to `out`, hashing it on the way; None once all of it came.

        What went wrong on the peer's side comes back in words; our own disk's errors (OSError)
        and a refused resume (PeerFailed with restart) are raised.
        """
        try:
            stream = self._open(peer, maddrs)
        except PeerFailed as e:
            return str(e)
        try:
            stream.write_request(req, self.timeouts.op_s)
            reply = stream.read_reply(req.offset, self.timeouts.op_s)
            if reply.status == "bad_request" and req.offset:
                raise PeerFailed(f"refused a resume from byte {req.offset}: {reply.message}", restart=True)
            if reply.status != "ok":
                return f"{reply.status.replace('_', ' ')}: {reply.message}"
            if reply.direct is not None and not req.direct:
                return "broke the protocol: offered a direct transfer nobody asked for"
            free = shutil.disk_usage(self.partial_dir).free
            if reply.size - req.offset > free:
                return f"says the blob is {reply.size} bytes; only {free} are free for it here"
            if reply.direct is not None:
                self._untrack(stream)
                stream.close()
                data = direct_connect(reply.direct, self.timeouts.op_s)
                if data is None:  # no host of the offer answers (NAT, firewall): the bytes come over libp2p
                    log.info("no direct connection to %s at %s; fetching over libp2p", peer, reply.direct.hosts)
                    return self._receive_into(out, h, Request(req.cid, req.offset), peer, maddrs, progress)
                stream = self._track(data)
                self._count("direct_transfers")
            left, idle_s = reply.size - req.offset, self.timeouts.idle_s
            while left:
                buf = out.buffer()
                want = out.room(min(len(buf), left))
                try:
                    n = stream.fill(buf[:want], idle_s)
                except BaseException:
                    out.unused(buf)
                    raise
                out.submit(buf, n)
                if n:
                    left -= n
                    self._count("bytes_fetched", n)
                    if progress:
                        progress(n)
                if n < want:
                    return f"the stream ended with {left} bytes still to come"
            return None
        except PeerFailed as e:
            if e.restart:
                raise
            return str(e)
        except WireError as e:
            return f"broke the protocol: {e}"
        finally:
            self._untrack(stream)
            stream.close()
