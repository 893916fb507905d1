"""The direct transfer of blob_protocol: blob bytes over plain TCP, claimed with a one-time token.

A DataPort listens on one TCP port. When the exchange agrees, over libp2p, to serve a blob
directly, it calls grant(): the file, the range and the peer are kept under a fresh token for
`claim_s` seconds. A connection that sends a live token within `claim_s` gets that range
(the exchange's `serve` callback moves it, with sendfile); a wrong, late or reused token gets
the connection closed and nothing else. An unclaimed grant expires and its file is closed.
At most `max_pending` connections may be waiting to send their token at once, so a flood of
idle connections costs a bounded number of threads.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from bitswarm.node.blob_protocol import TOKEN_CHARS, Direct, PeerFailed, Stream

log = logging.getLogger(__name__)


@dataclass
class Grant:
    peer: str
    f: BinaryIO
    offset: int
    size: int
    expires: float


def connect(direct: Direct, timeout_s: float) -> Stream | None:
    """A stream of the bytes `direct` offers (its token sent), from the first host that answers; None if none does."""
    for host in direct.hosts:
        try:
            sock = socket.create_connection((host, direct.port), timeout=timeout_s)
        except OSError as e:
            log.debug("direct transfer from %s:%d: %r", host, direct.port, e)
            continue
        sock.setblocking(True)
        stream = Stream(sock)
        try:
            stream.send(direct.token.encode(), timeout_s)
        except PeerFailed as e:
            log.debug("direct transfer from %s:%d: %s", host, direct.port, e)
            stream.close()
            continue
        return stream
    return None


class DataPort:
    """A TCP listener handing each granted range to `serve(stream, grant)` in a thread of its own."""

    def __init__(self, host: str, hosts: Sequence[str], serve: Callable[[Stream, Grant], None],
                 *, claim_s: float = 30, max_pending: int = 64):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self._sock.settimeout(1.0)  # wakes up to expire grants and to notice close()
        self.port: int = self._sock.getsockname()[1]
        self.hosts = list(hosts)
        self._serve, self.claim_s = serve, claim_s
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()
        self._pending = threading.BoundedSemaphore(max_pending)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name=f"blobs-direct-{self.port}", daemon=True)
        self._thread.start()

    def grant(self, peer: str, f: BinaryIO, offset: int, size: int) -> Direct:
        """Keep [offset, size) of f for `peer` under a new token; the port owns f from here."""
        token = secrets.token_hex(TOKEN_CHARS // 2)
        with self._lock:
            if self._closed.is_set():
                f.close()
                raise PeerFailed("this node's exchange was closed")
            self._grants[token] = Grant(peer, f, offset, size, time.monotonic() + self.claim_s)
        return Direct(tuple(self.hosts), self.port, token)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            grants, self._grants = list(self._grants.values()), {}
        for g in grants:
            g.f.close()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [t for t, g in self._grants.items() if g.expires < now]
            grants = [self._grants.pop(t) for t in late]
        for g in grants:
            log.debug("a direct transfer to %s was never claimed", g.peer)
            g.f.close()

    def _accept_forever(self) -> None:
        while not self._closed.is_set():
            self._expire()
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as e:
                if not self._closed.is_set():
                    log.warning("the direct blob port stopped accepting: %r", e)
                return
            if not self._pending.acquire(blocking=False):
                conn.close()  # too many connections still owe their token
                continue
            threading.Thread(target=self._claim, args=(conn,), name="blobs-direct-serve", daemon=True).start()

    def _claim(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        stream, grant = Stream(conn), None
        try:
            token = stream.exactly(TOKEN_CHARS, self.claim_s).decode("ascii", "replace")
            with self._lock:
                grant = self._grants.pop(token, None)
        except Exception as e:  # noqa: BLE001  (a stranger's connection: dropped, nothing else)
            log.debug("a direct connection sent no token: %r", e)
        finally:
            self._pending.release()
        if grant is None:
            stream.close()
            return
        self._serve(stream, grant)  # owns the stream and grant.f from here
