"""Blobs between peers: serve this node's blobs over libp2p, find providers on the DHT, fetch by CID.

Threads. The exchange owns one asyncio loop on a background thread, and every network
operation runs there; the public methods are synchronous and safe to call from any thread (a
node's worker, an HTTP handler). A fetch's disk side (hashing, writing, progress callbacks) runs
in the calling thread, fed chunk by chunk through a blob_protocol.Pipe: hashing overlaps the
network, and at most `readahead` chunks of a blob are in memory at once.

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
import hashlib
import logging
import os
import random
import shutil
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.errors import BitswarmError
from bitswarm.node import peer_key
from bitswarm.node.blob_protocol import (
    MAX_MADDR_CHARS,
    MAX_MADDRS,
    PROTOCOL,
    End,
    PeerFailed,
    Pipe,
    Reply,
    Request,
    Timeouts,
    WireError,
    provider_key,
    provider_record_validator,
    read_request,
    receive,
    write_reply,
)
from bitswarm.store import BlobStore
from bitswarm.store.canonical import CHUNK
from bitswarm.store.cid import parse_cid
from bitswarm.swarm.hivemind_transport import _import_hivemind, start_dht, stop_dht
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


async def _awaited(future: Any) -> Any:
    return await future  # hivemind's MPFuture is awaitable in the loop that created it


_LIVE: weakref.WeakSet[BlobExchange] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Runs before multiprocessing's exit hook, so each DHT process stops cleanly with its p2pd.
    for exchange in list(_LIVE):
        exchange.close()


class BlobExchange:
    """Serves and fetches the blobs of `store` over libp2p; providers are announced on a hivemind DHT.

    `identity` is the node's libp2p key (a fresh one if None): the daemon's peer id is its
    12D3KooW… id. `bootstrap` lists multiaddrs of running peers (their `maddrs`). Provider
    records live `expiration_s` and are renewed three times per expiration. `upload_limit`
    caps the bytes per second served, over all streams together. `op_timeout_s` bounds a DHT
    call, a dial or a reply; a provider that sends nothing for `idle_timeout_s` mid-blob is
    dropped (a slow but steady one is kept).
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        identity: Ed25519PrivateKey | None = None,
        listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        bootstrap: Sequence[str] = (),
        policy: str = "announced",
        chunk_size: int = CHUNK,
        readahead: int = 8,
        upload_limit: float | None = None,
        expiration_s: float = 600,
        start_timeout_s: float = 30,
        op_timeout_s: float = 30,
        idle_timeout_s: float = 30,
        partial_dir: Path | None = None,
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
        self._pipes: set[Pipe] = set()
        self._upload_clock = 0.0
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
        """Start the DHT (and its p2pd) and the event loop; raises TransportError with a diagnosis."""
        if self._dht is not None:
            return self
        self._dht = start_dht(
            self._priv,
            initial_peers=self.bootstrap,
            host_maddrs=self.listen,
            start_timeout_s=self.start_timeout_s,
            record_validators=[provider_record_validator(self._priv)],
        )
        _LIVE.add(self)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"blobs-{self.peer_id[-6:]}", daemon=True)
        self._thread.start()
        try:
            self._run(self._start_p2p())
        except BaseException:
            self.close()
            raise
        return self

    async def _start_p2p(self) -> None:
        self._p2p = await self._dht.replicate_p2p()  # a client of the DHT's own daemon
        if self._p2p.peer_id.to_base58() != self.peer_id:
            raise ExchangeError(f"the p2p daemon runs as {self._p2p.peer_id.to_base58()}, not as {self.peer_id}")
        await self._p2p.add_binary_stream_handler(PROTOCOL, self._serve)
        self.maddrs = [str(m) for m in await self._p2p.get_visible_maddrs()]
        self._spawn(self._renew_forever(first_after=0 if self._announced else None))

    def close(self) -> None:
        """Stop serving, end fetches in flight, stop the DHT process and its p2pd. Idempotent."""
        with self._lock:  # whichever thread closes first does the work
            loop, thread, dht = self._loop, self._thread, self._dht
            self._loop = self._thread = self._dht = None
            pipes, self._pipes = list(self._pipes), set()
        for pipe in pipes:
            pipe.end("this node's exchange was closed")
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
        if dht is not None:
            _LIVE.discard(self)
            stop_dht(dht)
        self._p2p = None

    async def _stop_tasks(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._p2p is not None:
            await self._p2p.shutdown()  # a replica: closes our sockets; the daemon is the DHT's to stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_dht", None) is not None:
            self.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the exchange's loop and wait for its result (from any thread but the loop's)."""
        loop, wait = self._loop, self.timeouts.op_s + 5
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
        if self._dht is None or not self._dht.is_alive():
            raise ExchangeError("the DHT process is not running; restart the node")
        return await asyncio.wait_for(_awaited(method(*args, return_future=True, **kwargs)), self.timeouts.op_s)

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
        expires = _import_hivemind().utils.get_dht_time() + self.expiration_s
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
        prefixes of partial copies), refused_peers {peer: refusals}, bad_peers {cid: [peer]}."""
        with self._lock:
            names = ("bytes_served", "bytes_fetched", "bytes_resumed", "blobs_served", "blobs_fetched")
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

    async def _serve(self, info: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one reply, then the bytes: the server's side of blob_protocol."""
        peer, task = info.peer_id.to_base58(), asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # so that close() ends it
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
            with f:
                size = os.fstat(f.fileno()).st_size
                if req.offset > size:
                    return await write_reply(writer, Reply("bad_request", message=f"offset {req.offset} > size {size}"))
                await write_reply(writer, Reply("ok", size=size))
                f.seek(req.offset)
                await self._send(f, size - req.offset, writer)
            self._count("blobs_served")
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            log.debug("serving %s ended: %r", peer, e)
        except asyncio.CancelledError:
            # close() ended it. The daemon client's done-callback calls exception() on this task,
            # which raises (and logs a traceback) for a cancelled task, so end it normally.
            log.debug("serving %s ended: the exchange is closing", peer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _send(self, f: BinaryIO, left: int, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while left:
            data = await loop.run_in_executor(None, f.read, min(self.chunk_size, left))
            if not data:
                return  # the file shrank (a damaged store): the fetcher sees a short stream
            writer.write(data)
            await writer.drain()
            left -= len(data)
            self._count("bytes_served", len(data))
            if self.upload_limit:
                # One virtual clock shared by every stream keeps the total under upload_limit.
                now = time.monotonic()
                self._upload_clock = max(self._upload_clock, now) + len(data) / self.upload_limit
                await asyncio.sleep(self._upload_clock - now)

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
            with open(part, "a+b") as f:
                f.seek(0)
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    if progress:
                        progress(len(chunk))
                offset = f.tell()
                failure = self._receive_into(f, h, Request(cid, offset), peer, maddrs, progress)
                got = f.tell()
                f.flush()
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
        self.store._commit(part, hexd, None)  # the store's own rename-and-fsync: no second copy

    def _receive_into(
        self, f: BinaryIO, h: Any, req: Request, peer: str, maddrs: list[str], progress: Progress | None
    ) -> str | None:
        """Append what `peer` sends for `req` to f, hashing it on the way; None once all of it came."""
        loop = self._loop
        if loop is None:
            raise ExchangeError("the blob exchange is not running; call start() first")
        pipe = Pipe(loop, self.readahead)
        with self._lock:
            self._pipes.add(pipe)
        future = asyncio.run_coroutine_threadsafe(
            receive(self._p2p, peer, maddrs, req, pipe, self.chunk_size, self.timeouts), loop
        )
        wait = self.timeouts.op_s + self.timeouts.idle_s + 5  # the loop side times out first
        try:
            reply = pipe.get(wait)
            if isinstance(reply, End):
                return reply.failure
            if reply.status == "bad_request" and req.offset:
                raise PeerFailed(f"refused a resume from byte {req.offset}: {reply.message}", restart=True)
            if reply.status != "ok":
                return f"{reply.status.replace('_', ' ')}: {reply.message}"
            free = shutil.disk_usage(f.name).free
            if reply.size - req.offset > free:
                return f"says the blob is {reply.size} bytes; only {free} are free for it here"
            while not isinstance(item := pipe.get(wait), End):
                f.write(item)
                h.update(item)
                self._count("bytes_fetched", len(item))
                if progress:
                    progress(len(item))
            if item.failure is None and f.tell() != reply.size:
                return f"sent {f.tell() - req.offset} of the {reply.size - req.offset} bytes it promised"
            return item.failure
        finally:
            future.cancel()
            with self._lock:
                self._pipes.discard(pipe)
