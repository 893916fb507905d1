"""Transports: the in-memory hub, the hivemind DHT on loopback, and start-up diagnosis."""

from __future__ import annotations

import socket
import stat
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm import peer_key
from bitswarm.swarm import hivemind_transport as tr
from bitswarm.swarm.hivemind_transport import HivemindTransport
from bitswarm.swarm.p2p_diagnosis import (
    EXAMPLE_MADDR,
    check_bootstrap_maddr,
    diagnose_p2pd,
    diagnose_start_failure,
    p2pd_path,
)
from bitswarm.swarm.records import (
    RecordFilter,
    Rollout,
    RolloutRecord,
    encode_signed,
    public_key_hex,
)
from bitswarm.swarm.transport import (
    MemoryHub,
    MemoryTransport,
    Transport,
    TransportError,
)

from .support import live_p2pd


def signed(priv: Ed25519PrivateKey, round: int, seq: int = 0) -> bytes:
    rec = RolloutRecord(
        round=round,
        peer=public_key_hex(priv),
        seq=seq,
        rollouts=[Rollout(dataset="d", seed=seq, index=0, completion="c", claimed_reward=1.0, group=0)],
    )
    return encode_signed(rec, priv)


# ---------------------------------------------------------------- memory


def test_memory_swarm_of_64_peers():
    hub = MemoryHub()
    keys = [peer_key.generate() for _ in range(64)]
    peers = [MemoryTransport(hub, k) for k in keys]
    assert all(isinstance(p, Transport) for p in peers)
    for round in range(2):
        for k, p in zip(keys, peers):
            p.publish(round, signed(k, round))
        filters = [RecordFilter() for _ in peers]
        for p, f in zip(peers, filters):
            got = [f.accept(b, round) for b in p.gather(round)]
            assert len(got) == 63 and all(got)  # everyone else's, none of its own
            assert {r.peer for r in got} == {q.peer_key for q in peers} - {p.peer_key}
            assert all(f.accept(b, round) is None for b in p.gather(round))  # repeats are the filter's job
            assert f.dropped == {"replayed": 63}


def test_memory_hub_expires_old_rounds_and_caps_bytes():
    hub = MemoryHub(round_window=2, max_bytes_per_peer_round=1000)
    a, b = MemoryTransport(hub, peer_key.generate()), MemoryTransport(hub, peer_key.generate())
    for r in range(6):
        a.publish(r, b"x" * 10)
    assert hub.rounds_held == [3, 4, 5]
    assert b.gather(2) == [] and b.gather(5) == [b"x" * 10]
    a.publish(1, b"late")
    assert hub.refused == {"expired_round": 1}
    a.publish(5, b"y" * 990)  # 10 + 990 = the cap: fine
    a.publish(5, b"z")
    assert hub.refused["over_byte_cap"] == 1 and len(b.gather(5)) == 2
    assert hub.bytes_held == 10 + 10 + 1000


# ---------------------------------------------------------------- diagnosis (no daemon)

PID = "12D3KooWELgDjc5itMZ4cuoUVEBf8dmU5YfV3TyHnNse6Wbm5b9F"


@pytest.mark.parametrize(
    "maddr",
    [f"/ip4/1.2.3.4/tcp/31337/p2p/{PID}", f"/ip6/::1/tcp/1/p2p/{PID}", f"/dns/boot.example.org/tcp/443/p2p/{PID}",
     f"/ip4/1.2.3.4/udp/9/quic-v1/p2p/{PID}", f"/ip4/1.2.3.4/tcp/5/p2p/{PID}/p2p-circuit/p2p/{PID}",
     "/ip4/1.2.3.4/tcp/5/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"],
)
def test_valid_bootstrap_maddrs(maddr):
    assert check_bootstrap_maddr(maddr) == maddr


@pytest.mark.parametrize(
    "maddr, why",
    [("1.2.3.4:31337", "starts with '/'"), ("/ip4/1.2.3.4/tcp/31337", "/p2p/<peer id>"),
     (f"/ip4/1.2.3.4/tcp/0/p2p/{PID}", "port"), (f"/ip4/1.2.3.400/tcp/1/p2p/{PID}", "not a valid /ip4 host"),
     ("/ip4/1.2.3.4/tcp/1/p2p/12D3KooW0OIl", "not base58"), ("/ip4/1.2.3.4/tcp/1/p2p/abc", "not a libp2p peer id"),
     (f"/ip4/1.2.3.4/p2p/{PID}", "/tcp/<port>"), (f"/http/x/tcp/1/p2p/{PID}", "/ip4, /ip6 or /dns"),
     (f"/ip4/1.2.3.4/tcp/1/p2p/{PID}/", "empty component")],
)
def test_malformed_bootstrap_maddr_is_explained(maddr, why):
    with pytest.raises(TransportError) as info:
        check_bootstrap_maddr(maddr)
    e = info.value
    assert e.kind == "bad_maddr" and why in e.problem and maddr in e.problem
    assert EXAMPLE_MADDR in e.diagnosis


def test_transport_refuses_malformed_bootstrap_before_starting_anything():
    with pytest.raises(TransportError, match=r"/p2p/<peer id>") as info:
        HivemindTransport(peer_key.generate(), initial_peers=["/ip4/127.0.0.1/tcp/31337"])
    assert "/ip4/1.2.3.4/tcp/31337/p2p/12D3KooW" in str(info.value)


def test_p2pd_diagnosis(tmp_path):
    missing = tmp_path / "hivemind_cli" / "p2pd"
    e = diagnose_p2pd(missing)
    assert e.kind == "p2pd_missing" and str(missing) in e.problem and "reinstall" in e.diagnosis
    missing.parent.mkdir()
    missing.write_bytes(b"\x7fELF....")
    e = diagnose_p2pd(missing)
    assert "not executable" in e.problem and f"chmod +x {missing}" in e.diagnosis
    missing.write_bytes(b"<html>404</html>")
    missing.chmod(missing.stat().st_mode | stat.S_IXUSR)
    assert "not a Linux executable" in diagnose_p2pd(missing).problem
    assert diagnose_p2pd(p2pd_path()) is None  # the real one, shipped in hivemind's wheel


def test_transport_reports_missing_p2pd(monkeypatch, tmp_path):
    monkeypatch.setattr(tr, "p2pd_path", lambda: tmp_path / "p2pd")
    with pytest.raises(TransportError, match="binary is missing") as info:
        HivemindTransport(peer_key.generate())
    assert info.value.kind == "p2pd_missing" and str(tmp_path / "p2pd") in str(info.value)


# What hivemind 1.1.12 raises (P2PDaemonError carries the daemon's last output line).
@pytest.mark.parametrize(
    "message, kind, hint",
    [(("Daemon failed to start: 2026/11/25 08:55:33 failed to listen on any addresses: [listen tcp4 "
       "127.0.0.1:42591: bind: address already in use]"), "daemon_start", "another process holds that port"),
     (("Daemon failed to start: 2026/11/25 08:55:33 failed to listen on any addresses: [listen tcp4 "
       "10.254.254.1:0: bind: cannot assign requested address]"), "daemon_start", "not an address of this machine"),
     ("Daemon failed to start: 2026/11/25 08:55:33 failed to connect to bootstrap peers", "bootstrap_unreachable",
      "matches the id"),
     ("DHTNode bootstrap failed: none of the initial_peers responded to a ping.", "bootstrap_unreachable",
      "firewall"),
     ('Daemon failed to start: 2026/11/25 08:55:33 failed to parse multiaddr "hello": must begin with /',
      "bad_maddr", "look like"),
     ("Daemon failed to start in 3.0 seconds", "daemon_start", "silently drops packets"),
     ("Daemon failed to start: something new", "daemon_start", "HIVEMIND_LOGLEVEL=DEBUG")],
)
def test_start_failure_diagnosis(message, kind, hint):
    boot = f"/ip4/127.0.0.1/tcp/9/p2p/{PID}"
    e = diagnose_start_failure(
        RuntimeError(message), host_maddrs=["/ip4/127.0.0.1/tcp/4242"], initial_peers=[boot], timeout_s=3
    )
    assert e.kind == kind and hint in e.diagnosis
    assert "2026/11/25" not in e.problem  # the daemon's timestamp is noise
    if kind == "bootstrap_unreachable":
        assert boot in e.problem
    if kind == "daemon_start":
        assert "/ip4/127.0.0.1/tcp/4242" in e.problem


# ---------------------------------------------------------------- hivemind on loopback


@pytest.fixture
def no_leaked_daemons(monkeypatch):
    """Tag daemons started in the test via their environment, and check none outlive it."""
    marker = uuid.uuid4().hex
    monkeypatch.setenv("BITSWARM_TEST_RUN", marker)
    assert live_p2pd(marker) == set()
    yield marker
    deadline = time.monotonic() + 5
    while live_p2pd(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_p2pd(marker) == set(), "p2pd left running"


@pytest.fixture
def pair(no_leaked_daemons):
    ka, kb = peer_key.generate(), peer_key.generate()
    a = HivemindTransport(ka, start_timeout_s=15)
    try:
        b = HivemindTransport(kb, initial_peers=a.visible_maddrs(), start_timeout_s=15)
    except BaseException:
        a.close()
        raise
    yield (ka, a), (kb, b)
    b.close()
    a.close()


def gather_until(t: HivemindTransport, round: int, n: int, timeout: float = 10) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while len(blobs := t.gather(round)) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    return blobs


@pytest.mark.network
def test_two_peers_exchange_records(pair):
    (ka, a), (kb, b) = pair
    # The daemon runs as our key: its libp2p id is the key's 12D3KooW id.
    assert a.peer_id == peer_key.peer_id(ka) and b.peer_id == peer_key.peer_id(kb)
    assert all(m.endswith(f"/p2p/{a.peer_id}") for m in a.visible_maddrs())
    fa, fb = RecordFilter(), RecordFilter()
    for round in range(2):
        a.publish(round, signed(ka, round))
        b.publish(round, signed(kb, round))
        seen_by_a = [fa.accept(x, round) for x in gather_until(a, round, 1)]
        seen_by_b = [fb.accept(x, round) for x in gather_until(b, round, 1)]
        assert [r.peer for r in seen_by_a] == [b.peer_key]  # the other's, never its own
        assert [r.peer for r in seen_by_b] == [a.peer_key]
        assert seen_by_a[0].round == seen_by_b[0].round == round
    assert fa.accepted == fb.accepted == 2


@pytest.mark.network
def test_dht_refuses_forged_and_unsigned_values(pair):
    (ka, a), (kb, b) = pair
    b.publish(7, signed(kb, 7))
    assert len(gather_until(a, 7, 1)) == 1
    dht, expires = a._dht, a._get_dht_time() + 60
    # a tries to overwrite b's subkey with its own record, to drop junk in, and to replace the round.
    assert not dht.store("bitswarm/rollouts/7", signed(ka, 7, seq=1), expires, subkey=f"{b.peer_key}:0")
    assert not dht.store("bitswarm/rollouts/7", b"junk", expires, subkey=f"{a.peer_key}:1")
    assert not dht.store("bitswarm/rollouts/7", b"junk", expires)
    assert b.gather(7) == [] and a.gather(7) == [signed(kb, 7)]
    with pytest.raises(ValueError, match="signed by this transport"):
        a.publish(7, signed(kb, 7))


@pytest.mark.network
def test_unreachable_bootstrap_is_diagnosed_quickly(no_leaked_daemons):
    with socket.socket() as s:  # a free port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    boot = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_key.peer_id(peer_key.generate())}"
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        HivemindTransport(peer_key.generate(), initial_peers=[boot], start_timeout_s=5)
    assert time.monotonic() - started < 10
    e = info.value
    assert e.kind == "bootstrap_unreachable" and boot in str(e) and "/p2p/<peer id>" in e.diagnosis


@pytest.mark.network
def test_port_in_use_is_diagnosed(no_leaked_daemons):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        host = f"/ip4/127.0.0.1/tcp/{s.getsockname()[1]}"
        with pytest.raises(TransportError) as info:
            HivemindTransport(peer_key.generate(), host_maddrs=[host], start_timeout_s=5)
    e = info.value
    assert e.kind == "daemon_start" and host in e.problem and "address already in use" in e.problem


@pytest.mark.network
def test_no_daemon_outlives_its_transport(no_leaked_daemons):
    marker = no_leaked_daemons
    t = HivemindTransport(peer_key.generate())
    assert len(live_p2pd(marker)) == 1
    t.close()
    t.close()  # idempotent
    assert live_p2pd(marker) == set()


@pytest.mark.network
def test_silent_bootstrap_times_out_with_a_diagnosis(no_leaked_daemons):
    # A peer that accepts TCP and then says nothing, like a firewall that drops packets: start-up
    # can only end by timeout, and the daemon hivemind started must still go away.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        boot = f"/ip4/127.0.0.1/tcp/{s.getsockname()[1]}/p2p/{PID}"
        with pytest.raises(TransportError) as info:
            HivemindTransport(peer_key.generate(), initial_peers=[boot], start_timeout_s=2)
    e = info.value
    assert e.kind == "daemon_start" and "within 2 s" in e.problem and boot in e.problem
    assert "silently drops packets" in e.diagnosis


@pytest.mark.network
def test_a_hosts_manifest_is_read_by_its_peer_id_and_cannot_be_forged(pair):
    from bitswarm.jobs.tasks import TaskMix
    from bitswarm.swarm import manifest
    from bitswarm.swarm.peer import PeerSettings

    (ka, a), (kb, b) = pair

    def man(key) -> bytes:
        m = manifest.build(key, "sha256:" + "ab" * 32, TaskMix(["tiny_sum"]), PeerSettings(),
                           manifest.Schedule(1000.0, 60.0), [])
        return manifest.encode_signed(m, key)

    assert b.manifest(a.peer_id) is None
    assert a.publish_manifest(man(ka))
    deadline = time.monotonic() + 10
    while (got := b.manifest(a.peer_id)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got == man(ka) and manifest.decode_verified(got, host=a.peer_key).host == a.peer_key
    # a cannot speak for b: its own manifest under b's subkey, or junk under its own, is refused by every node.
    key = manifest.MANIFEST_KEY.format(peer_id=b.peer_id)
    expires = a._get_dht_time() + 60
    assert not a._dht.store(key, man(ka), expires, subkey=manifest.SUBKEY_PREFIX + b.peer_key)
    assert not a._dht.store(key, b"junk", expires, subkey=manifest.SUBKEY_PREFIX + a.peer_key)
    assert b.manifest(b.peer_id) is None
    with pytest.raises(manifest.ManifestError, match="not by the host"):
        a.publish_manifest(man(kb))
