"""What peers say to each other about blobs: the libp2p stream protocol and the DHT provider records.

Stream protocol PROTOCOL, one blob per stream:

    fetcher → server   u32 length | JSON {"cid": "sha256:…", "offset": n[, "direct": true]}   (≤ MAX_REQUEST)
    server → fetcher   u32 length | JSON {"status": "ok", "size": n[, "direct": {...}]}      (≤ MAX_REPLY)
                                      or {"status": "refused"|"not_found"|"bad_request", "message": "…"}
    server → fetcher   after "ok" without "direct": bytes [offset, size) of the blob, then the stream closes

Direct transfer. libp2p authenticates and encrypts, but every byte crosses two daemons and
their encryption, which caps a stream on loopback at about a third of sha256's rate (measured:
594 MB/s against 1588), and the fetcher must hash every byte anyway. So a fetcher may ask for
"direct": the server then answers {"hosts": [ip, …], "port": p, "token": 32 hex} and the
fetcher opens a plain TCP connection to one of the hosts, sends the 32 token characters and
receives bytes [offset, size) on it (node.blob_direct). The token is one-time, expires after
op_s, and travels only on the authenticated, encrypted libp2p stream, so only the peer that
asked gets the bytes. The bytes themselves are neither encrypted nor authenticated: an observer
on the path sees the blob (blobs are public by CID; a node that must not show them sets
direct=False), and one who alters them makes the hash fail, the fetcher drops that provider for
this CID and asks the next. Where no host answers (NAT, firewall) the fetcher asks again over
libp2p without "direct".

Nothing here is trusted: a request or reply that breaks the schema ends the stream (WireError),
and the bytes themselves are trusted only once their sha256 equals the CID (the fetcher's job).

Streams are opened on the event loop (hivemind's daemon client is asyncio) and then taken off it
(`detach`): a Stream is the blocking socket to the daemon that carries one libp2p stream, and
the thread that fetches or serves a blob moves the bytes itself (recv_into a reused buffer,
sendfile), with no event-loop round trip or extra copy per chunk. Through asyncio, every chunk
cost a wake-up of the loop, a StreamReader copy, a join into a chunk and a hand-over to the
fetching thread; a stream through p2pd is fast enough for those to halve the fetch rate.

Provider records: key provider_key(cid), subkey = the provider's peer id, value = its dialable
multiaddrs (at most MAX_MADDRS), signed with the provider's Ed25519 key (the one inside its
12D3KooW… peer id) over key, subkey, value and expiration. Without the signature anyone could
overwrite a provider's entry with dead addresses and hide it; replaying a signed record only
repeats what its provider said, until the expiration it signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bitswarm.errors import BitswarmError
from bitswarm import peer_key
from bitswarm.store.cid import is_cid
from bitswarm.swarm.hivemind_import import import_dht_parts
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


MAX_DIRECT_HOSTS = 4
TOKEN_CHARS = 32


@dataclass(frozen=True)
class Request:
    cid: str
    offset: int
    direct: bool = False


@dataclass(frozen=True)
class Direct:
    """Where to fetch the bytes over plain TCP, and the one-time token that claims them."""

    hosts: tuple[str, ...]
    port: int
    token: str


@dataclass(frozen=True)
class Reply:
    status: str
    size: int = 0
    message: str = ""
    direct: Direct | None = None


def _frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return len(data).to_bytes(4, "big") + data


def _decode(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError(f"the {what} is not JSON") from None
    if not isinstance(obj, dict):
        raise WireError(f"the {what} is not a JSON object")
    return obj


async def _read_frame(reader: asyncio.StreamReader, limit: int, what: str) -> dict[str, Any]:
    try:
        n = int.from_bytes(await reader.readexactly(4), "big")
        if n > limit:
            raise WireError(f"{what} of {n} bytes (at most {limit})")
        data = await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise WireError(f"the stream ended inside the {what}") from None
    return _decode(data, what)


def _is_count(x: object, bound: int) -> bool:
    return type(x) is int and 0 <= x <= bound


def _request_obj(req: Request) -> dict[str, Any]:
    return {"cid": req.cid, "offset": req.offset, **({"direct": True} if req.direct else {})}


async def write_request(writer: asyncio.StreamWriter, req: Request) -> None:
    writer.write(_frame(_request_obj(req)))
    await writer.drain()


async def read_request(reader: asyncio.StreamReader) -> Request:
    obj = await _read_frame(reader, MAX_REQUEST, "request")
    cid, offset, direct = obj.get("cid"), obj.get("offset"), obj.get("direct", False)
    if (not {"cid", "offset"} <= set(obj) <= {"cid", "offset", "direct"} or not is_cid(cid)
            or not _is_count(offset, MAX_BLOB_SIZE) or type(direct) is not bool):
        raise WireError("the request is not {'cid': 'sha256:<64 hex>', 'offset': <bytes ≥ 0>[, 'direct': true]}")
    return Request(cid, offset, direct)


def _reply_obj(reply: Reply) -> dict[str, Any]:
    if reply.status == "ok":
        d = reply.direct
        extra = {"direct": {"hosts": list(d.hosts), "port": d.port, "token": d.token}} if d else {}
        return {"status": "ok", "size": reply.size, **extra}
    return {"status": reply.status, "message": reply.message[:1000]}


def _check_direct(obj: object) -> Direct:
    hosts = obj.get("hosts") if isinstance(obj, dict) else None
    port = obj.get("port") if isinstance(obj, dict) else None
    token = obj.get("token") if isinstance(obj, dict) else None
    ok = (isinstance(obj, dict) and set(obj) == {"hosts", "port", "token"} and isinstance(hosts, list)
          and 1 <= len(hosts) <= MAX_DIRECT_HOSTS and all(_is_ip(h) for h in hosts)
          and type(port) is int and 0 < port < 65536 and isinstance(token, str) and len(token) == TOKEN_CHARS
          and all(c in "0123456789abcdef" for c in token))
    if not ok:
        raise WireError(f"the direct offer {str(obj)[:200]} is not "
                        f"{{'hosts': [1 to {MAX_DIRECT_HOSTS} IP addresses], 'port': <1-65535>, 'token': <32 hex>}}")
    return Direct(tuple(hosts), port, token)


def _is_ip(x: object) -> bool:
    try:
        ipaddress.ip_address(x)  # type: ignore[arg-type]
    except ValueError:
        return False
    return isinstance(x, str)


async def write_reply(writer: asyncio.StreamWriter, reply: Reply) -> None:
    writer.write(_frame(_reply_obj(reply)))
    await writer.drain()


def _check_reply(obj: dict[str, Any], offset: int) -> Reply:
    status = obj.get("status")
    if status == "ok":
        size = obj.get("size")
        if (not {"status", "size"} <= set(obj) <= {"status", "size", "direct"}
                or not _is_count(size, MAX_BLOB_SIZE) or size < offset):
            raise WireError(f"the reply {str(obj)[:200]} is not {{'status': 'ok', 'size': <bytes ≥ {offset}>}}")
        return Reply("ok", size=size, direct=_check_direct(obj["direct"]) if "direct" in obj else None)
    message = obj.get("message")
    if status not in STATUSES or set(obj) != {"status", "message"} or not isinstance(message, str):
        raise WireError(f"the reply {str(obj)[:200]} has no known status")
    # Shown to a person in FetchFailed: keep it short and free of terminal control characters.
    return Reply(status, message="".join(ch if ch.isprintable() else "?" for ch in message[:300]))


async def read_reply(reader: asyncio.StreamReader, offset: int) -> Reply:
    """The server's answer to a request from `offset`, checked before any blob byte is read."""
    return _check_reply(await _read_frame(reader, MAX_REPLY, "reply"), offset)


# ---------------------------------------------------------------- streams, off the event loop


class PeerFailed(Exception):
    """One provider failed (the message says how); a fetch goes on with the next.

    restart: the partial copy may be at fault, not the peer; drop it and ask this peer again from 0.
    """

    def __init__(self, reason: str, restart: bool = False):
        super().__init__(reason)
        self.restart = restart


@dataclass(frozen=True)
class Timeouts:
    op_s: float  # to dial, open a stream, get a reply
    idle_s: float  # a peer that sends nothing for this long mid-blob is dropped


def detach(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Stream:
    """Take a stream off the event loop: from here on one thread moves its bytes with blocking calls.

    A libp2p stream reaches us as a unix socket to the daemon; we keep a duplicate of its
    descriptor and close the asyncio transport (a close, not a shutdown: the connection stays
    up). Bytes the transport had already read are handed on, so none is lost.
    """
    transport = writer.transport
    transport.pause_reading()
    if transport.get_write_buffer_size():
        raise ConnectionError("the stream still has unsent bytes; it cannot leave the event loop")
    sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
    early = bytes(getattr(reader, "_buffer", b""))  # asyncio keeps no public view of what it read ahead
    transport.abort()
    sock.setblocking(True)
    return Stream(sock, early)


class Stream:
    """One blob stream as a blocking socket, used by one thread; abort() may come from any other.

    The thread that moves a blob's bytes calls the socket directly (recv_into a reused buffer,
    sendfile from the page cache): no event-loop round trip or extra copy per chunk.
    abort(why) makes a call blocked on the socket return at once, and it and every later call
    raise PeerFailed(why).
    """

    def __init__(self, sock: socket.socket, early: bytes = b""):
        self._sock, self._early = sock, early
        self._lock = threading.Lock()  # so that abort() never shuts down a closed (reused) descriptor
        self._closed = False
        self._timeout: float | None = None
        self._woken = threading.Event()
        self.aborted: str | None = None

    def abort(self, why: str) -> None:
        with self._lock:
            if self.aborted is None:
                self.aborted = why
            self._woken.set()
            if not self._closed:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._sock.close()

    def _check(self) -> None:
        if self.aborted is not None:
            raise PeerFailed(self.aborted)

    def _settimeout(self, timeout: float) -> None:
        if timeout != self._timeout:  # each change is a syscall
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def _failed(self, e: OSError, silent: str) -> PeerFailed:
        self._check()  # aborted: say why, not how the socket ended
        return PeerFailed(silent if isinstance(e, TimeoutError) else f"connection lost: {e or type(e).__name__}")

    def recv_into(self, view: memoryview, timeout: float, silent: str) -> int:
        """Up to len(view) bytes into `view`; 0 once the stream ended. PeerFailed(silent): none for `timeout` s."""
        if self._early:
            n = min(len(view), len(self._early))
            view[:n], self._early = self._early[:n], self._early[n:]
            return n
        self._check()
        self._settimeout(timeout)
        try:
            n = self._sock.recv_into(view)
        except OSError as e:
            raise self._failed(e, silent) from None
        if not n:
            self._check()
        return n

    def fill(self, view: memoryview, idle_s: float) -> int:
        """Fill `view` unless the stream ends first; how many bytes came. PeerFailed after idle_s of silence.

        The clock restarts with every byte, so a slow but steady peer is kept; the time this
        thread spends on its own disk between calls is not counted.
        """
        got, silent = 0, f"sent nothing for {idle_s:g} s"
        while got < len(view):
            n = self.recv_into(view[got:], idle_s, silent)
            if not n:
                break
            got += n
        return got

    def _exactly(self, n: int, deadline: float, what: str) -> bytes:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.recv_into(view[got:], max(deadline - time.monotonic(), 1e-3), "stopped answering")
            if not k:
                raise WireError(f"the stream ended inside the {what}")
            got += k
        return bytes(buf)

    def exactly(self, n: int, timeout: float) -> bytes:
        """n bytes, all within `timeout` s; WireError if the stream ends first."""
        return self._exactly(n, time.monotonic() + timeout, f"first {n} bytes")

    def send(self, data: bytes, timeout: float) -> None:
        self._check()
        self._settimeout(timeout)
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise self._failed(e, f"took nothing for {timeout:g} s") from None

    def sendfile(self, f: BinaryIO, offset: int, count: int, timeout: float) -> int:
        """Send up to `count` bytes of `f` from `offset`, page cache to socket; fewer only where the file ends."""
        self._check()
        self._settimeout(timeout)
        try:
            return self._sock.sendfile(f, offset, count)
        except OSError as e:
            raise self._failed(e, f"took nothing for {timeout:g} s") from None

    def sleep(self, seconds: float) -> None:
        if self._woken.wait(seconds):
            self._check()

    def write_request(self, req: Request, timeout: float) -> None:
        self.send(_frame(_request_obj(req)), timeout)

    def read_reply(self, offset: int, timeout: float) -> Reply:
        """The server's answer to a request from `offset`, checked before any blob byte is read."""
        deadline = time.monotonic() + timeout
        n = int.from_bytes(self._exactly(4, deadline, "reply"), "big")
        if n > MAX_REPLY:
            raise WireError(f"reply of {n} bytes (at most {MAX_REPLY})")
        return _check_reply(_decode(self._exactly(n, deadline, "reply"), "reply"), offset)

    def write_reply(self, reply: Reply, timeout: float) -> None:
        self.send(_frame(_reply_obj(reply)), timeout)


def _dial_addrs(peer: str, maddrs: Sequence[str]) -> list[Any]:
    """The daemon dials addresses without the trailing /p2p/<peer> (the peer id goes alongside)."""
    from hivemind.utils.multiaddr import Multiaddr  # hivemind vendors it; the PyPI multiaddr is not installed

    suffix = f"/p2p/{peer}"
    return [Multiaddr(m[: -len(suffix)] if m.endswith(suffix) else m) for m in maddrs]


async def open_stream(p2p: Any, peer: str, maddrs: Sequence[str], timeouts: Timeouts) -> Stream:
    """A PROTOCOL stream to `peer` (dialing `maddrs` first, if any), off the event loop; or PeerFailed."""
    try:
        peer_id = import_dht_parts().PeerID.from_base58(peer)
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
    try:
        return detach(reader, writer)
    except OSError as e:
        writer.close()
        raise PeerFailed(f"connection lost: {e}") from None


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
    hm = import_dht_parts()
    DHTRecord, RecordValidatorBase, MSGPackSerializer = hm.DHTRecord, hm.RecordValidatorBase, hm.MSGPackSerializer
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
