"""Blob exchange between real libp2p peers on loopback: each exchange runs its own p2pd."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import time
from pathlib import Path

import pytest

from bitswarm.node.blob_direct import DataPort
from bitswarm.node.blob_protocol import WireError, provider_key, read_reply, read_request
from bitswarm.node.exchange import BlobExchange, ExchangeError, FetchFailed, _Appender
from bitswarm.store import BlobStore
from bitswarm.swarm.transport import TransportError

pytestmark = pytest.mark.network

MB = 1 << 20


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def p2pd_descendants(pid: int | None = None) -> set[int]:
    """Live (not zombie) p2pd processes below `pid` (default: this test process), from /proc."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[str, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(" (", 1)[1].rsplit(") ", 1)
        except (OSError, ValueError, IndexError):
            continue
        fields = rest.split()
        me = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(me)
        info[me] = (name, fields[0])
    found, todo = set(), [pid or os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if info[child][0] == "p2pd" and info[child][1] != "Z":
                found.add(child)
    return found


def assert_gone(pids: set[int], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while p2pd_descendants() & pids and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not p2pd_descendants() & pids, "p2pd left running"


@pytest.fixture(scope="module", params=["direct", "libp2p"])
def trio(request, tmp_path_factory):
    """Three exchanges, each with its own store and p2pd; a is the bootstrap peer of b and c.

    Once with direct transfers (as nodes run) and once with every byte over libp2p (the fallback).
    """
    before = p2pd_descendants()
    root = tmp_path_factory.mktemp("exchange")
    made: list[BlobExchange] = []
    opts = {"start_timeout_s": 20, "chunk_size": 1 << 20, "direct": request.param == "direct"}
    try:
        a = BlobExchange(BlobStore(root / "a"), **opts).start()
        made.append(a)
        for name in "bc":
            made.append(BlobExchange(BlobStore(root / name), bootstrap=a.maddrs, **opts).start())
        ours = p2pd_descendants() - before
        assert len(ours) == 3
        yield tuple(made)
    finally:
        for x in reversed(made):
            x.close()
    assert_gone(ours)


def test_fetch_a_file_blob_found_through_the_dht(trio):
    a, b, c = trio
    data = blob(1, 3 * MB + 17)
    cid = b.store.put_bytes(data)
    assert b.announce(cid)
    assert c.providers(cid) == [b.peer_id]
    served, fetched = b.stats()["bytes_served"], c.stats()["bytes_fetched"]
    seen: list[int] = []
    assert c.fetch(cid, progress=seen.append) == cid
    assert c.store.read_bytes(cid) == data
    assert sum(seen) == len(data) and max(seen) <= c.chunk_size  # streamed in chunks, not whole
    assert c.stats()["bytes_fetched"] - fetched == len(data) == b.stats()["bytes_served"] - served
    assert not c.partial_path(cid).exists()
    assert b.peer_id in {p["peer_id"] for p in c.peers()}
    assert all(m.endswith(f"/p2p/{b.peer_id}") for m in b.maddrs)
    assert c.fetch(cid) == cid and c.stats()["bytes_fetched"] - fetched == len(data)  # already here


def test_fetch_a_directory_blob(trio, tmp_path):
    a, b, c = trio
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"layers": 2}')
    (src / "sub" / "weights.bin").write_bytes(blob(2, MB + 5))
    (src / "sub" / "empty").write_bytes(b"")
    cid = b.store.put(src)
    b.announce(cid)
    assert a.fetch(cid) == cid
    assert a.store.kind(cid) == "dir"
    out = a.store.checkout(cid)
    for rel in ("config.json", "sub/weights.bin", "sub/empty"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()


def test_policy_decides_what_is_served(trio):
    a, b, c = trio
    cid = b.store.put_bytes(blob(3, 200_000))
    with pytest.raises(FetchFailed) as info:
        c.fetch(cid)  # not announced, so nobody provides it
    assert "No peer announces it" in str(info.value) and info.value.attempts == []

    refused = b.stats()["refused_peers"].get(c.peer_id, 0)
    with pytest.raises(FetchFailed) as info:
        c.fetch(cid, sources=b.maddrs)
    e = info.value
    assert e.cid == cid and [p for p, _ in e.attempts] == [b.peer_id]
    assert "refused" in str(e) and "policy 'announced'" in str(e)
    assert b.stats()["refused_peers"][c.peer_id] == refused + 1
    assert not c.store.has(cid) and not c.partial_path(cid).exists()
    try:
        b.policy = "none"
        with pytest.raises(FetchFailed, match="policy 'none'"):
            c.fetch(cid, sources=[b.peer_id])
        b.policy = "all"
        assert c.fetch(cid, sources=[b.peer_id]) == cid
    finally:
        b.policy = "announced"
    with pytest.raises(ExchangeError, match="policy must be one of"):
        b.policy = "everything"


def test_a_provider_serving_wrong_bytes_is_dropped_for_the_next(trio):
    a, b, c = trio
    data = blob(4, 2 * MB)
    cid = b.store.put_bytes(data)
    assert c.store.put_bytes(data) == cid
    b.announce(cid)
    c.announce(cid)
    with open(b.store.blob_path(cid), "r+b") as f:  # b's disk rots under it
        f.seek(MB)
        f.write(b"\x00" * 1000)

    assert a.fetch(cid, sources=[b.maddrs[0], c.maddrs[0]]) == cid
    assert a.store.read_bytes(cid) == data
    assert a.stats()["bad_peers"][cid] == [b.peer_id]

    a.store.blob_path(cid).unlink()
    with pytest.raises(FetchFailed) as info:
        a.fetch(cid, sources=[b.peer_id])  # remembered as bad: not even asked again
    assert info.value.attempts == [(b.peer_id, "served bytes that did not hash to the CID earlier; skipped")]


def test_a_fetch_resumes_where_the_last_provider_stopped(trio, tmp_path):
    a, b, c = trio
    size = 4 * MB
    data = blob(5, size)
    # d uploads slowly, so the fetch is surely mid-way when d goes away.
    d = BlobExchange(BlobStore(tmp_path / "d"), bootstrap=a.maddrs, upload_limit=MB / 2, chunk_size=64 << 10)
    try:
        d.start()
        cid = d.store.put_bytes(data)
        d.announce(cid)
        assert b.store.put_bytes(data) == cid  # b holds it too, but does not say so yet

        done = 0

        def close_d_after_a_megabyte(n: int) -> None:
            nonlocal done
            done += n
            if done >= MB:
                d.close()

        with pytest.raises(FetchFailed) as info:
            c.fetch(cid, progress=close_d_after_a_megabyte)
        assert [p for p, _ in info.value.attempts] == [d.peer_id] and "the next fetch resumes" in str(info.value)
    finally:
        d.close()
    kept = c.partial_path(cid).stat().st_size
    assert MB <= kept < size

    b.announce(cid)
    served, fetched, resumed = (b.stats()["bytes_served"], c.stats()["bytes_fetched"], c.stats()["bytes_resumed"])
    assert c.fetch(cid) == cid  # d's record is still up: c tries it (gone) and b
    assert c.store.read_bytes(cid) == data
    assert b.stats()["bytes_served"] - served == size - kept  # b sent only the rest
    assert c.stats()["bytes_fetched"] - fetched == size - kept
    assert c.stats()["bytes_resumed"] - resumed == kept
    assert not c.partial_path(cid).exists()


def test_closing_the_fetching_exchange_ends_its_fetch_at_once(trio, tmp_path):
    a, b, c = trio
    size = 4 * MB
    cid = b.store.put_bytes(blob(11, size))
    b.announce(cid)
    before = p2pd_descendants()
    e = BlobExchange(BlobStore(tmp_path / "e"), bootstrap=a.maddrs, chunk_size=64 << 10, start_timeout_s=20)
    try:
        e.start()
        mine = p2pd_descendants() - before
        with pytest.raises(FetchFailed) as info:
            e.fetch(cid, sources=b.maddrs, progress=lambda n: e.close())  # closed from its own fetching thread
    finally:
        e.close()
    assert [p for p, _ in info.value.attempts] == [b.peer_id]
    assert "this node's exchange was closed" in str(info.value) and "the next fetch resumes" in str(info.value)
    assert 64 << 10 <= e.partial_path(cid).stat().st_size < size  # what came before the close is kept
    assert_gone(mine)


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_the_writer_keeps_every_byte_in_order_whatever_the_alignment(tmp_path, where):
    """Whole aligned blocks go with O_DIRECT where the file system takes it; the rest through the page cache."""
    root = tmp_path if where == "disk" else Path("/dev/shm")
    if not root.is_dir():
        pytest.skip("no tmpfs at /dev/shm")
    path = root / f"appender-{os.getpid()}-{where}.part"
    data = blob(12, 3 * MB + 5000)
    path.write_bytes(data[:1234])  # an unaligned start, as a resumed copy has
    pieces = iter([5000, 4096, 64 << 10, 100, 64 << 10] + [64 << 10] * 100)
    try:
        with open(path, "a+b", buffering=0) as f:
            h = hashlib.sha256(data[:1234])
            out = _Appender(f, 64 << 10, depth=2, hasher=h)
            pos = 1234
            try:
                while pos < len(data):
                    buf = out.buffer()
                    n = out.room(min(next(pieces), len(buf), len(data) - pos))
                    buf[:n] = data[pos : pos + n]
                    out.submit(buf, n)
                    pos += n
            finally:
                out.finish()
        assert path.read_bytes() == data and h.digest() == hashlib.sha256(data).digest()
        with open(path, "rb", buffering=0) as f:  # a write that fails is raised in the fetching thread
            out = _Appender(f, 4096, depth=1, hasher=hashlib.sha256())
            buf = out.buffer()
            out.submit(buf, 4096)
            with pytest.raises(OSError):
                out.buffer()
            with pytest.raises(OSError):
                out.finish()
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("junk", [b"x" * 100_000, b"y" * (MB + 1)], ids=["wrong-prefix", "longer-than-blob"])
def test_a_damaged_partial_copy_is_fetched_again_without_blaming_the_provider(trio, junk):
    a, b, c = trio
    data = blob(7 + len(junk), MB)
    cid = b.store.put_bytes(data)
    b.announce(cid)
    c.partial_path(cid).parent.mkdir(exist_ok=True)
    c.partial_path(cid).write_bytes(junk)  # e.g. a crash left a torn tail
    assert c.fetch(cid) == cid and c.store.read_bytes(cid) == data
    assert cid not in c.stats()["bad_peers"]


def test_the_dht_refuses_forged_provider_records(trio):
    a, b, c = trio
    cid = b.store.put_bytes(blob(6, 1000))
    b.announce(cid)
    expires = time.time() + 60

    def store(*args, **kwargs):
        return a._run(a._dht.store(*args, **kwargs))

    # a tries to hide b behind dead addresses, to add junk, and to announce itself with junk.
    assert not store(provider_key(cid), ["/ip4/10.9.9.9/tcp/1"], expires, subkey=b.peer_id)
    assert not store(provider_key(cid), b"junk", expires, subkey=a.peer_id)
    assert not store(provider_key(cid), [1, 2], expires, subkey=a.peer_id)
    assert not store(provider_key(cid), ["/ip4/10.9.9.9/tcp/1"], expires)
    assert c.providers(cid) == [b.peer_id]
    assert c._run(c._find(cid)) == {b.peer_id: b.maddrs}


def test_sources_must_be_peer_ids_or_whole_multiaddrs(trio):
    a, b, c = trio
    with pytest.raises(TransportError, match="/p2p/<peer id>"):
        c.fetch("sha256:" + "1" * 64, sources=["/ip4/127.0.0.1/tcp/4001"])


def _frames(*objs: object, raw: bytes = b"") -> asyncio.StreamReader:
    """A stream holding these JSON frames and then `raw` (call inside a running loop)."""
    reader = asyncio.StreamReader()
    for o in objs:
        data = json.dumps(o).encode()
        reader.feed_data(len(data).to_bytes(4, "big") + data)
    reader.feed_data(raw)
    reader.feed_eof()
    return reader


@pytest.mark.parametrize(
    "frame",
    [{"cid": "sha256:" + "a" * 64, "offset": -1}, {"cid": "sha256:" + "A" * 64, "offset": 0},
     {"cid": "sha256:" + "a" * 64, "offset": 0, "more": 1}, {"cid": "sha256:" + "a" * 64, "offset": True},
     {"cid": "sha256:" + "a" * 64, "offset": 0, "direct": 1},
     ["sha256:" + "a" * 64, 0]],
)
def test_malformed_requests_are_refused_on_arrival(frame):
    async def request():
        return await read_request(_frames(frame))

    with pytest.raises(WireError):
        asyncio.run(request())


def test_replies_are_checked_before_any_byte_is_read():
    async def reply(*frames, raw=b"", offset=0):
        return await read_reply(_frames(*frames, raw=raw), offset)

    assert asyncio.run(reply({"status": "ok", "size": 10})).size == 10
    for bad in ({"status": "ok", "size": 5}, {"status": "ok"}, {"status": "maybe", "message": ""},
                {"status": "refused", "message": 3}):
        with pytest.raises(WireError):
            asyncio.run(reply(bad, offset=6))
    offer = {"hosts": ["127.0.0.1", "::1"], "port": 4001, "token": "0f" * 16}
    assert asyncio.run(reply({"status": "ok", "size": 10, "direct": offer})).direct.hosts == ("127.0.0.1", "::1")
    for bad in ({**offer, "hosts": []}, {**offer, "hosts": ["example.com"]}, {**offer, "hosts": ["1.2.3.4"] * 5},
                {**offer, "hosts": [16909060]}, {**offer, "port": 0}, {**offer, "port": "80"},
                {**offer, "token": "0F" * 16}, {**offer, "token": "0f" * 15}, {**offer, "more": 1}, ["127.0.0.1", 1]):
        with pytest.raises(WireError, match="direct offer"):
            asyncio.run(reply({"status": "ok", "size": 10, "direct": bad}))
    shown = asyncio.run(reply({"status": "refused", "message": "no\x1b[2J" + "!" * 400})).message
    assert shown == "no?[2J" + "!" * 294  # short, and no terminal escapes reach a person
    with pytest.raises(WireError, match="at most"):
        asyncio.run(reply(raw=(1 << 20).to_bytes(4, "big")))  # a huge header is not read
    with pytest.raises(WireError, match="ended inside"):
        asyncio.run(reply(raw=b"\x00\x00"))


def test_close_leaves_no_p2pd_behind(tmp_path):
    before = p2pd_descendants()
    with BlobExchange(BlobStore(tmp_path / "s")) as x:
        mine = p2pd_descendants() - before
        assert len(mine) == 1
        assert x.peers() == []
    x.close()  # idempotent
    assert_gone(mine)
    with pytest.raises(ExchangeError, match="not running"):
        x.providers("sha256:" + "0" * 64)


def test_a_node_fetches_directly_and_over_libp2p_where_no_offered_host_answers(tmp_path):
    data = blob(21, 3 * MB + 1)
    with BlobExchange(BlobStore(tmp_path / "s")) as server, \
            BlobExchange(BlobStore(tmp_path / "c"), bootstrap=server.maddrs) as client:
        cid = server.store.put_bytes(data)
        server.announce(cid)
        assert client.fetch(cid) == cid and client.store.read_bytes(cid) == data
        assert client.stats()["direct_transfers"] == 1
        # Behind NAT the offered address is not reachable: here 127.0.0.2, where nothing listens.
        server._port.hosts = ["127.0.0.2"]
        client.store.blob_path(cid).unlink()
        assert client.fetch(cid) == cid and client.store.read_bytes(cid) == data
        assert client.stats()["direct_transfers"] == 1 and client.stats()["blobs_fetched"] == 2


def test_the_direct_port_serves_a_range_once_and_only_for_its_token(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(blob(22, 100_000))
    served: list[tuple[int, int]] = []

    def serve(stream, grant):
        with grant.f:
            served.append((grant.offset, grant.size))
            stream.send(grant.f.read()[grant.offset:grant.size], 5)
        stream.close()

    def take(token: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port.port), timeout=5) as s:
            s.sendall(token.encode())
            chunks = []
            while chunk := s.recv(1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)

    port = DataPort("127.0.0.1", ["127.0.0.1"], serve, claim_s=1.0)
    try:
        offer = port.grant("peer-a", open(path, "rb"), 10, 50_000)
        assert take("f" * 32) == b"" and take(offer.token[:-1] + "x") == b""  # strangers get nothing
        assert take(offer.token) == path.read_bytes()[10:50_000]
        assert take(offer.token) == b"" and served == [(10, 50_000)]  # one range, once
        late = open(path, "rb")
        offer = port.grant("peer-b", late, 0, 100_000)
        deadline = time.monotonic() + 5
        while not late.closed and time.monotonic() < deadline:
            time.sleep(0.1)
        assert late.closed and take(offer.token) == b""  # never claimed: expired, its file closed
        with socket.create_connection(("127.0.0.1", port.port), timeout=5) as s:  # says nothing at all
            s.settimeout(5)
            assert s.recv(1) == b""  # dropped after claim_s
    finally:
        port.close()
    assert served == [(10, 50_000)]
