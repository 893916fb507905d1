"""What peers say to each other about blobs: the libp2p stream protocol and the DHT provider records.

Stream protocol PROTOCOL, one blob per stream:

    fetcher → server   u32 length | JSON {"cid": "sha256:…", "offset": n}          (≤ MAX_REQUEST)
    server → fetcher   u32 length | JSON {"status": "ok", "size": n}               (≤ MAX_REPLY)
                                      or {"status": "refused"|"not_found"|"bad_request", "message": "…"}
    server → fetcher   after "ok": bytes [offset, size) of the blob, then the stream closes

Nothing here is trusted: a request or reply that breaks the schema ends the stream (WireError),
and the bytes themselves are trusted only once their sha256 equals the CID (the fetcher's job).
`receive` is the fetching end on the event loop: it hands the reply and then the bytes, in
chunks, to a Pipe that the fetching thread drains, so memory holds at most `depth` chunks.

Provider records: key provider_key(cid), subkey = the provider's peer id, value = its dialable
multiaddrs (at most MAX_MADDRS), signed with the provider's Ed25519 key (the one inside its
12D3KooW… peer id) over key, subkey, value and expiration. Without the signature anyone could
overwrite a provider's entry with dead addresses and hide it; replaying a signed record only
repeats what its provider said, until the expiration it signed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bitswarm.errors import BitswarmError
from bitswarm.node import peer_key
from bitswarm.store.cid import is_cid
from bitswarm.swarm.p2p_diagnosis import public_key_of_peer_id

log = logging.getLogger(__name__)

PROTOCOL = "/bitswarm/blob/1"
MAX_REQUEST = 512
MAX_REPLY = 4096
MAX_BLOB_SIZE = 1 << 50  # 1 PiB: a sanity bound on a claimed size, not a policy
STATUSES = ("ok", "refused", "not_found", "bad_request")

MAX_MADDRS = 8
MAX_MADDR_CHARS = 256
_SIGNATURE = 64
_SIGNED_PREFIX = b"bitswarm/blob-provider/1\x00"


def provider_key(cid: str) -> str:
    return f"bitswarm/blob/{cid}"


class WireError(BitswarmError):
    """A peer sent something that is not this protocol; the stream is dropped."""


@dataclass(frozen=True)
class Request:
    cid: str
    offset: int


@dataclass(frozen=True)
class Reply:
    status: str
    size: int = 0
    message: str = ""


async def _write_frame(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    writer.write(len(data).to_bytes(4, "big") + data)
    await writer.drain()


async def _read_frame(reader: asyncio.StreamReader, limit: int, what: str) -> dict[str, Any]:
    try:
        n = int.from_bytes(await reader.readexactly(4), "big")
        if n > limit:
            raise WireError(f"{what} of {n} bytes (at most {limit})")
        obj = json.loads(await reader.readexactly(n))
    except asyncio.IncompleteReadError:
        raise WireError(f"the stream ended inside the {what}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError(f"the {what} is not JSON") from None
    if not isinstance(obj, dict):
        raise WireError(f"the {what} is not a JSON object")
    return obj


def _is_count(x: object, bound: int) -> bool:
    return type(x) is int and 0 <= x <= bound


async def write_request(writer: asyncio.StreamWriter, req: Request) -> None:
    await _write_frame(writer, {"cid": req.cid, "offset": req.offset})


async def read_request(reader: asyncio.StreamReader) -> Request:
    obj = await _read_frame(reader, MAX_REQUEST, "request")
    cid, offset = obj.get("cid"), obj.get("offset")
    if set(obj) != {"cid", "offset"} or not is_cid(cid) or not _is_count(offset, MAX_BLOB_SIZE):
        raise WireError("the request is not {'cid': 'sha256:<64 hex>', 'offset': <bytes ≥ 0>}")
    return Request(cid, offset)


async def write_reply(writer: asyncio.StreamWriter, reply: Reply) -> None:
    if reply.status == "ok":
        await _write_frame(writer, {"status": "ok", "size": reply.size})
    else:
        await _write_frame(writer, {"status": reply.status, "message": reply.message[:1000]})


async def read_reply(reader: asyncio.StreamReader, offset: int) -> Reply:
    """The server's answer to a request from `offset`, checked before any blob byte is read."""
    obj = await _read_frame(reader, MAX_REPLY, "reply")
    status = obj.get("status")
    if status == "ok":
        size = obj.get("size")
        if set(obj) != {"status", "size"} or not _is_count(size, MAX_BLOB_SIZE) or size < offset:
            raise WireError(f"the reply {str(obj)[:200]} is not {{'status': 'ok', 'size': <bytes ≥ {offset}>}}")
        return Reply("ok", size=size)
    message = obj.get("message")
    if status not in STATUSES or set(obj) != {"status", "message"} or not isinstance(message, str):
        raise WireError(f"the reply {str(obj)[:200]} has no known status")
    # Shown to a person in FetchFailed: keep it short and free of terminal control characters.
    return Reply(status, message="".join(ch if ch.isprintable() else "?" for ch in message[:300]))


# ---------------------------------------------------------------- the fetching end


class PeerFailed(Exception):
    """One provider failed (the message says how); a fetch goes on with the next.

    restart: the partial copy may be at fault, not the peer; drop it and ask this peer again from 0.
    """

    def __init__(self, reason: str, restart: bool = False):
        super().__init__(reason)
        self.restart = restart


@dataclass(frozen=True)
class End:
    failure: str | None = None  # None: every promised byte was handed over


class Pipe:
    """The reply, then chunks, from the event loop to a fetching thread; at most `depth` chunks wait."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int):
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._credits = asyncio.Semaphore(depth)

    async def put(self, item: Reply | bytes | bytearray) -> None:
        await self._credits.acquire()
        self._queue.put(item)

    def end(self, failure: str | None = None) -> None:
        self._queue.put(End(failure))  # needs no credit, so the end always gets through

    def get(self, timeout: float) -> Any:
        """Called from the fetching thread: a Reply, a chunk, or End."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise PeerFailed(f"nothing arrived for {timeout:g} s") from None
        if not isinstance(item, End):
            self._loop.call_soon_threadsafe(self._credits.release)
        return item


@dataclass(frozen=True)
class Timeouts:
    op_s: float  # to dial, open a stream, get a reply
    idle_s: float  # a peer that sends nothing for this long mid-blob is dropped


def _dial_addrs(peer: str, maddrs: Sequence[str]) -> list[Any]:
    """The daemon dials addresses without the trailing /p2p/<peer> (the peer id goes alongside)."""
    from multiaddr import Multiaddr

    suffix = f"/p2p/{peer}"
    return [Multiaddr(m[: -len(suffix)] if m.endswith(suffix) else m) for m in maddrs]


async def receive(
    p2p: Any, peer: str, maddrs: Sequence[str], req: Request, pipe: Pipe, chunk_size: int, timeouts: Timeouts
) -> None:
    """Open a stream to `peer`, ask for `req`, and hand the reply and then the bytes to `pipe`.

    Always ends the pipe: End(None) once all bytes after req.offset were handed over, else End
    with what went wrong in words.
    """
    from hivemind.p2p import PeerID

    writer = None
    try:
        try:
            peer_id = PeerID.from_base58(peer)
        except ValueError:
            raise PeerFailed(f"{peer!r} is not a peer id") from None
        if maddrs:  # a provider known only from its DHT record: dial it first
            try:
                # hivemind's P2P has no public connect(); its own code uses the client's.
                await asyncio.wait_for(p2p._client.connect(peer_id, _dial_addrs(peer, maddrs)), timeouts.op_s)
            except Exception as e:  # noqa: BLE001  (opening the stream below reports the outcome)
                log.debug("dialing %s at %s: %r", peer, maddrs, e)
        try:
            _, reader, writer = await asyncio.wait_for(p2p.call_binary_stream_handler(peer_id, PROTOCOL), timeouts.op_s)
        except TimeoutError:
            raise PeerFailed(f"did not answer within {timeouts.op_s:g} s") from None
        except Exception as e:  # noqa: BLE001  (the daemon's errors have no common base)
            raise PeerFailed(f"unreachable: {e}") from None
        await write_request(writer, req)
        reply = await asyncio.wait_for(read_reply(reader, req.offset), timeouts.op_s)
        await pipe.put(reply)
        if reply.status == "ok":
            await _pump(reader, reply.size - req.offset, pipe, chunk_size, timeouts.idle_s)
        pipe.end()
    except asyncio.CancelledError:
        pipe.end("cancelled")
        raise
    except PeerFailed as e:
        pipe.end(str(e))
    except TimeoutError:
        pipe.end("stopped answering")
    except WireError as e:
        pipe.end(f"broke the protocol: {e}")
    except Exception as e:  # noqa: BLE001  (a dropped connection surfaces in many shapes)
        pipe.end(f"connection lost: {e or type(e).__name__}")
    finally:
        if writer is not None:
            writer.close()


async def _pump(reader: asyncio.StreamReader, left: int, pipe: Pipe, chunk_size: int, idle_s: float) -> None:
    """Move `left` bytes to the pipe in chunk_size pieces; a peer silent for idle_s is dropped.

    The watchdog looks at the time of the last byte, not at one read's duration, so a slow but
    steady peer is kept; time spent waiting for our own disk (pipe.put) is not counted.
    """
    last = [time.monotonic()]

    async def pump() -> None:
        nonlocal left
        buf = bytearray()
        while left:
            piece = await reader.read(min(chunk_size - len(buf), left))
            if not piece:
                if buf:
                    await pipe.put(buf)
                raise PeerFailed(f"the stream ended with {left} bytes still to come")
            last[0] = time.monotonic()
            buf += piece
            left -= len(piece)
            if len(buf) >= chunk_size or not left:
                last[0] = math.inf
                await pipe.put(buf)
                buf = bytearray()
                last[0] = time.monotonic()

    task = asyncio.ensure_future(pump())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=1.0)
            if not task.done() and time.monotonic() - last[0] > idle_s:
                raise PeerFailed(f"sent nothing for {idle_s:g} s")
        task.result()
    finally:
        task.cancel()


# ---------------------------------------------------------------- provider records


def _signed_bytes(key: bytes, subkey: bytes, value: bytes, expiration_time: float) -> bytes:
    exp = repr(float(expiration_time)).encode()
    parts = (key, subkey, value, exp)
    return _SIGNED_PREFIX + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def provider_record_validator(priv: Ed25519PrivateKey) -> Any:
    """A hivemind validator: every record is a provider entry signed by the peer its subkey names.

    It signs this node's own entries as they are stored (sign_value), and every honest node
    refuses to store or return an entry whose signature, subkey or address list is wrong. This
    makes the exchange's DHT single-purpose, like the rollout transport's.
    """
    from hivemind.dht.validation import DHTRecord, RecordValidatorBase
    from hivemind.utils.serializer import MSGPackSerializer

    own = peer_key.peer_id(priv)

    def maddrs_ok(value: bytes) -> bool:
        maddrs = MSGPackSerializer.loads(value)
        return (
            isinstance(maddrs, list)
            and 0 < len(maddrs) <= MAX_MADDRS
            and all(isinstance(m, str) and m.startswith("/") and len(m) <= MAX_MADDR_CHARS for m in maddrs)
        )

    class ProviderRecordValidator(RecordValidatorBase):
        def validate(self, record: DHTRecord) -> bool:
            try:
                subkey = MSGPackSerializer.loads(record.subkey)
                raw = public_key_of_peer_id(base58.b58decode(subkey)) if isinstance(subkey, str) else None
                if raw is None or len(record.value) <= _SIGNATURE:
                    return False
                value, sig = record.value[:-_SIGNATURE], record.value[-_SIGNATURE:]
                signed = _signed_bytes(record.key, record.subkey, value, record.expiration_time)
                Ed25519PublicKey.from_public_bytes(raw).verify(sig, signed)
                return maddrs_ok(value)
            except (InvalidSignature, ValueError):
                return False
            except Exception:  # noqa: BLE001  (msgpack's errors have no one base; undecodable = invalid)
                return False

        def sign_value(self, record: DHTRecord) -> bytes:
            if MSGPackSerializer.loads(record.subkey) != own:
                return record.value  # not ours to sign: validate() will refuse it
            signed = _signed_bytes(record.key, record.subkey, record.value, record.expiration_time)
            return record.value + priv.sign(signed)

        def strip_value(self, record: DHTRecord) -> bytes:
            return record.value[:-_SIGNATURE]

    return ProviderRecordValidator()
