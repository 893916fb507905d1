"""How peers share signed rollout records each round: in memory (simulation) or over a hivemind DHT.

There is no barrier: `publish` puts this peer's blobs up for a round and `gather` returns
whatever other peers have put up so far. Transports move opaque bytes; checking them is the
job of records.RecordFilter, which also dedups the repeats `gather` is allowed to return.

Most of the hivemind half is about failing well: the p2p daemon not starting or not finding a
bootstrap peer is what swarm users hit most, so every start-up failure is turned into a
TransportError that says what was tried and what to check (see the diagnose_* helpers).
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import re
import signal
import tempfile
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import base58
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.swarm.records import (
    MAX_RECORD_BYTES,
    RecordRejected,
    decode_verified,
    public_key_hex,
)

log = logging.getLogger(__name__)

ROUND_KEY = "bitswarm/rollouts/{round}"
# Subkeys one peer may use per round key. Peers admit only a few records per peer and round
# (RecordFilter), so this only bounds what a peer can make every other peer download.
MAX_PUBLISHES_PER_ROUND = 64
EXAMPLE_MADDR = "/ip4/1.2.3.4/tcp/31337/p2p/12D3KooW..."
_SUBKEY = re.compile(r"^([0-9a-f]{64}):(\d{1,6})$")


class TransportError(RuntimeError):
    """A transport failure with what went wrong (`problem`) and what to check (`diagnosis`).

    `kind` is a stable tag: "p2pd_missing", "daemon_start", "bad_maddr",
    "bootstrap_unreachable", "identity", "dht_dead", "publish_limit".
    """

    def __init__(self, kind: str, problem: str, diagnosis: str):
        super().__init__(f"{problem}\nDiagnosis: {diagnosis}")
        self.kind = kind
        self.problem = problem
        self.diagnosis = diagnosis


@runtime_checkable
class Transport(Protocol):
    peer_key: str  # own raw Ed25519 public key, hex: how records name their author

    def publish(self, round: int, blob: bytes) -> None: ...

    def gather(self, round: int) -> list[bytes]:
        """Every blob now visible for `round` from other peers; may repeat earlier ones."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- in memory


class MemoryHub:
    """The shared board of an in-process swarm (one hub, many MemoryTransports). Thread-safe.

    Memory is bounded by round and by publisher: only rounds in [newest - round_window, newest]
    are kept (older ones are dropped as soon as a newer round is published), and one publisher's
    blobs in one round total at most max_bytes_per_peer_round. The hub trusts round numbers and
    keys, as a simulator should; adversarial peers are the filter's business.
    """

    def __init__(self, round_window: int = 4, max_bytes_per_peer_round: int = 1 << 20):
        self.round_window = round_window
        self.max_bytes_per_peer_round = max_bytes_per_peer_round
        self.refused: dict[str, int] = {}
        self._lock = threading.Lock()
        self._rounds: dict[int, dict[tuple[str, int], bytes]] = {}
        self._used: dict[tuple[int, str], int] = {}
        self._newest = -1

    def put(self, peer: str, round: int, seq: int, blob: bytes) -> bool:
        """Store a blob under (peer, seq) for `round`; False (and counted) if refused."""
        with self._lock:
            if round < self._newest - self.round_window:
                return self._refuse("expired_round")
            if round > self._newest:
                self._newest = round
                for old in [r for r in self._rounds if r < round - self.round_window]:
                    del self._rounds[old]
                self._used = {k: v for k, v in self._used.items() if k[0] >= round - self.round_window}
            slot = self._rounds.setdefault(round, {})
            previous = slot.get((peer, seq), b"")
            used = self._used.get((round, peer), 0) + len(blob) - len(previous)
            if used > self.max_bytes_per_peer_round:
                return self._refuse("over_byte_cap")
            slot[(peer, seq)] = bytes(blob)
            self._used[(round, peer)] = used
            return True

    def _refuse(self, reason: str) -> bool:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return False

    def get(self, round: int, *, exclude_peer: str) -> list[bytes]:
        with self._lock:
            slot = self._rounds.get(round, {})
            return [blob for (peer, _), blob in sorted(slot.items()) if peer != exclude_peer]

    @property
    def bytes_held(self) -> int:
        with self._lock:
            return sum(self._used.values())

    @property
    def rounds_held(self) -> list[int]:
        with self._lock:
            return sorted(self._rounds)


class MemoryTransport:
    """One simulated peer on a MemoryHub. Blobs are not checked here, so a test can publish junk."""

    def __init__(self, hub: MemoryHub, priv: Ed25519PrivateKey):
        self.hub = hub
        self.peer_key = public_key_hex(priv)
        self._seq: dict[int, int] = {}
        self._closed = False

    def publish(self, round: int, blob: bytes) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")
        seq = self._seq[round] = self._seq.get(round, -1) + 1
        _forget_old(self._seq)
        if not self.hub.put(self.peer_key, round, seq, blob):
            log.warning("memory hub refused a %d-byte blob for round %d (%s)", len(blob), round, self.hub.refused)

    def gather(self, round: int) -> list[bytes]:
        if self._closed:
            raise RuntimeError("transport is closed")
        return self.hub.get(round, exclude_peer=self.peer_key)

    def close(self) -> None:
        self._closed = True  # what it published stays up until the hub expires the round

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _forget_old(counters: dict[int, int], keep: int = 16) -> None:
    """Publish counters for rounds long past are dead weight; keep the newest few."""
    while len(counters) > keep:
        del counters[min(counters)]


# ---------------------------------------------------------------- diagnosis


def p2pd_path() -> Path:
    """Where hivemind runs its libp2p daemon from: hivemind/hivemind_cli/p2pd in its package."""
    spec = find_spec("hivemind")  # locates without importing (hivemind's import pulls in torch)
    if spec is None or not spec.submodule_search_locations:
        return Path("<hivemind is not installed>") / "hivemind_cli" / "p2pd"
    return Path(next(iter(spec.submodule_search_locations))) / "hivemind_cli" / "p2pd"


def diagnose_p2pd(path: Path) -> TransportError | None:
    """None if `path` looks like a runnable daemon, else the error to raise."""
    fix = (
        "hivemind ships p2pd inside its wheel; reinstall it (pip install --force-reinstall hivemind==1.1.12), "
        "or build the daemon from source with Go installed: HIVEMIND_BUILDGO=1 pip install hivemind==1.1.12"
    )
    if not path.exists():
        problem = f"the p2p daemon binary is missing: hivemind expects it at {path}"
        return TransportError("p2pd_missing", problem, fix)
    if not path.is_file():
        return TransportError("p2pd_missing", f"the p2p daemon path {path} is not a file", fix)
    if not os.access(path, os.X_OK):
        return TransportError(
            "p2pd_missing",
            f"the p2p daemon binary at {path} is not executable",
            f"make it executable (chmod +x {path}) or, if the file system is mounted noexec, install "
            f"the environment elsewhere. {fix}",
        )
    with open(path, "rb") as f:
        magic = f.read(4)
    if os.uname().sysname == "Linux" and magic != b"\x7fELF":
        return TransportError(
            "p2pd_missing",
            f"the p2p daemon at {path} is not a Linux executable (starts with {magic!r})",
            f"the file is damaged or built for another platform. {fix}",
        )
    return None


def _bad_maddr(maddr: object, why: str) -> TransportError:
    return TransportError(
        "bad_maddr",
        f"bootstrap multiaddr {maddr!r} is malformed: {why}",
        f"a bootstrap address names the host, port and peer id of a running node, e.g. {EXAMPLE_MADDR}. "
        "Every node logs its own on start (HivemindTransport.visible_maddrs()); copy one whole, "
        "including the /p2p/<peer id> part.",
    )


def _check_peer_id(maddr: str, text: str) -> None:
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raise _bad_maddr(maddr, f"peer id {text!r} is not base58") from None
    identity = len(raw) >= 2 and raw[0] == 0x00 and raw[1] == len(raw) - 2
    sha256 = len(raw) == 34 and raw[:2] == b"\x12\x20"
    if not (identity or sha256):
        raise _bad_maddr(maddr, f"{text!r} is not a libp2p peer id (they look like 12D3KooW... or Qm...)")


def check_bootstrap_maddr(maddr: str) -> str:
    """`maddr` if it is a dialable libp2p address ending in /p2p/<peer id>; else TransportError.

    Accepted: /ip4|ip6|dns|dns4|dns6/<host> /tcp/<port> or /udp/<port>/quic|quic-v1, then
    /p2p/<id>, optionally followed by /p2p-circuit/p2p/<id> (a peer reached through a relay).
    """
    if not isinstance(maddr, str) or not maddr.startswith("/"):
        raise _bad_maddr(maddr, "a multiaddr is a string that starts with '/'")
    parts = maddr[1:].split("/")
    if "" in parts:
        raise _bad_maddr(maddr, "it has an empty component ('//' or a trailing '/')")
    if len(parts) < 4:
        raise _bad_maddr(maddr, "it needs at least a host, a port and a peer id")
    proto, host, rest = parts[0], parts[1], parts[2:]
    try:
        if proto == "ip4":
            ipaddress.IPv4Address(host)
        elif proto == "ip6":
            ipaddress.IPv6Address(host)
        elif proto in ("dns", "dns4", "dns6"):
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
                raise ValueError(host)
        else:
            raise _bad_maddr(maddr, f"it must start with /ip4, /ip6 or /dns, not /{proto}")
    except ValueError:
        raise _bad_maddr(maddr, f"{host!r} is not a valid /{proto} host") from None
    if rest[0] not in ("tcp", "udp") or len(rest) < 2:
        raise _bad_maddr(maddr, "the host must be followed by /tcp/<port> (or /udp/<port>/quic-v1)")
    if not rest[1].isdigit() or not 0 < int(rest[1]) < 65536:
        raise _bad_maddr(maddr, f"port {rest[1]!r} is not 1-65535 (port 0 only means 'any' when listening)")
    rest = rest[2:]
    if parts[2] == "udp":
        if not rest or rest[0] not in ("quic", "quic-v1"):
            raise _bad_maddr(maddr, "a /udp address must continue with /quic-v1")
        rest = rest[1:]
    if not rest or rest[0] != "p2p" or len(rest) < 2:
        raise _bad_maddr(maddr, "it does not end in /p2p/<peer id>; the peer id is needed to authenticate the node")
    _check_peer_id(maddr, rest[1])
    tail = rest[2:]
    if tail:
        if len(tail) != 3 or tail[0] != "p2p-circuit" or tail[1] != "p2p":
            raise _bad_maddr(maddr, f"unexpected components after the peer id: /{'/'.join(tail)}")
        _check_peer_id(maddr, tail[2])
    return maddr


def _daemon_said(message: str) -> str:
    """The daemon's own last line from hivemind's error, without Go's log timestamp."""
    said = message.split("Daemon failed to start:", 1)[-1].strip()
    return re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(\.\d+)? ", "", said)


def diagnose_start_failure(
    exc: BaseException,
    *,
    host_maddrs: Sequence[str],
    initial_peers: Sequence[str],
    timeout_s: float,
) -> TransportError:
    """Turn whatever hivemind raised while starting a DHT into a TransportError that says what to do."""
    if isinstance(exc, TransportError):
        return exc
    message = str(exc) or type(exc).__name__
    low = message.lower()
    said = _daemon_said(message)
    hosts = ", ".join(host_maddrs) or "(none)"
    peers = ", ".join(initial_peers) or "(none)"
    if "p2pd binary" in low or "exec format" in low or "cannot execute" in low:
        found = diagnose_p2pd(p2pd_path())
        return found or TransportError(
            "p2pd_missing", f"the p2p daemon could not be run: {message}",
            "reinstall hivemind (pip install --force-reinstall hivemind==1.1.12)"
        )
    if "failed to connect to bootstrap peers" in low or "bootstrap failed" in low or "initial_peers responded" in low:
        return TransportError(
            "bootstrap_unreachable",
            f"no bootstrap peer could be reached; tried: {peers} (daemon said: {said})",
            "check that (1) the host and port are right and the other node is running and listening "
            "there, (2) no firewall or NAT between you blocks TCP to that port, and (3) the /p2p/<peer id> "
            "part matches the id that node prints now: a node restarted with another identity key has "
            "another id and refuses connections addressed to the old one.",
        )
    if "failed to parse multiaddr" in low or "invalid p2p multiaddr" in low or "invalid multiaddr" in low:
        return TransportError(
            "bad_maddr",
            f"the p2p daemon rejected an address: {said}; host_maddrs: {hosts}; bootstrap: {peers}",
            f"listen addresses look like /ip4/0.0.0.0/tcp/31337 (tcp/0 picks a free port); "
            f"bootstrap addresses look like {EXAMPLE_MADDR}",
        )
    if "address already in use" in low:
        return TransportError(
            "daemon_start",
            f"the p2p daemon could not listen on {hosts}: {said}",
            "another process holds that port (often an earlier node still running: `ss -ltnp` shows "
            "who); stop it, pick another port, or use tcp/0 for any free port.",
        )
    if "cannot assign requested address" in low:
        return TransportError(
            "daemon_start",
            f"the p2p daemon could not listen on {hosts}: {said}",
            "that IP is not an address of this machine; listen on /ip4/0.0.0.0 (all interfaces) and, "
            "behind NAT, pass the public address as announce_maddrs instead.",
        )
    if isinstance(exc, TimeoutError) or "failed to start in" in low:
        hint = (
            "A bootstrap peer that silently drops packets (a firewall, a wrong IP) stalls start-up "
            "until the timeout: check that the addresses are right and reachable, e.g. `nc -vz HOST PORT`. "
            if initial_peers
            else ""
        )
        return TransportError(
            "daemon_start",
            f"the p2p daemon did not come up within {timeout_s:g} s; host_maddrs: {hosts}; bootstrap: {peers}",
            hint + "On a slow or overloaded machine raise start_timeout_s. "
            "HIVEMIND_LOGLEVEL=DEBUG shows the daemon's log.",
        )
    return TransportError(
        "daemon_start",
        f"the p2p daemon failed to start: {said}; host_maddrs: {hosts}; bootstrap: {peers}",
        "a port in use or blocked by a firewall is the usual cause; HIVEMIND_LOGLEVEL=DEBUG shows the daemon's log.",
    )


def public_key_of_peer_id(peer_id: bytes) -> bytes | None:
    """The raw Ed25519 key inside an identity-multihash peer id (12D3KooW...), else None.

    Parsing, not deriving: it lets us check the daemon runs with our key without the node layer.
    The multihash is (0x00 = identity, length, libp2p protobuf PublicKey).
    """
    from hivemind.proto import crypto_pb2

    if len(peer_id) < 2 or peer_id[0] != 0x00 or peer_id[1] != len(peer_id) - 2:
        return None
    try:
        key = crypto_pb2.PublicKey.FromString(peer_id[2:])
    except Exception:  # noqa: BLE001  (protobuf's DecodeError, not importable by one stable name)
        return None
    return key.data if key.key_type == crypto_pb2.KeyType.Ed25519 and len(key.data) == 32 else None


# ---------------------------------------------------------------- hivemind


def _import_hivemind() -> Any:
    # hivemind's import runs torch.jit.script, which warns about its own deprecation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import hivemind

    return hivemind


def _signed_record_validator(max_bytes: int) -> Any:
    """A hivemind validator that keeps the DHT's round keys to signed records under their author's subkey.

    Without it anyone could overwrite "<victim key>:<n>" (the later expiration wins) or replace
    a whole round with a plain value, censoring others. With it every honest node refuses to
    store, and drops from answers, any value that is not a dictionary entry "<key hex>:<n>"
    (n < MAX_PUBLISHES_PER_ROUND) holding a record signed by that key. This makes the DHT
    single-purpose: do not run other hivemind features on it.
    """
    from hivemind.dht.validation import DHTRecord, RecordValidatorBase
    from hivemind.utils.serializer import MSGPackSerializer

    class SignedRecordValidator(RecordValidatorBase):
        def validate(self, record: DHTRecord) -> bool:
            try:
                subkey = MSGPackSerializer.loads(record.subkey)
                blob = MSGPackSerializer.loads(record.value)
            except Exception:  # noqa: BLE001  (any undecodable value is just invalid)
                return False
            m = _SUBKEY.match(subkey) if isinstance(subkey, str) else None
            if m is None or int(m.group(2)) >= MAX_PUBLISHES_PER_ROUND or not isinstance(blob, bytes):
                return False
            try:
                return decode_verified(blob, max_bytes=max_bytes).peer == m.group(1)
            except RecordRejected:
                return False

    return SignedRecordValidator()


def _child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc); [] elsewhere."""
    out = []
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else []:
        try:
            stat = entry.read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.parent.name))
    return out


def _kill_if_live_p2pd(pid: int) -> None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if cmd.endswith(b"p2pd") and state != "Z":
            os.kill(pid, signal.SIGTERM)
    except (OSError, IndexError):
        pass


def _stop_dht(dht: Any) -> None:
    """Shut a DHT down and make sure its p2pd went with it.

    A DHT killed mid-start-up (our timeout) dies by SIGTERM without running hivemind's cleanup,
    which would orphan its daemon; we collect the daemon's pid first and end it ourselves.
    """
    children = _child_pids(dht.pid) if dht.pid else []
    try:
        dht.shutdown()
    except Exception as e:  # noqa: BLE001  (dead already, or its pipe is gone: the sweep below still runs)
        log.debug("DHT shutdown: %r", e)
    for pid in children:
        _kill_if_live_p2pd(pid)


_LIVE: weakref.WeakSet[HivemindTransport] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Registered after multiprocessing's own exit hook, so it runs first: the DHT process is
    # shut down cleanly (taking p2pd with it) instead of being SIGTERMed as a daemonic child.
    for transport in list(_LIVE):
        transport.close()


class HivemindTransport:
    """Records on a hivemind DHT: round r's blobs are subkeys "<peer key hex>:<n>" of key
    "bitswarm/rollouts/<r>", stored with an expiration of `expiration_s`.

    The libp2p identity is `priv` itself: hivemind's identity_path takes a libp2p protobuf
    private key, and an Ed25519 one works, so the daemon's peer id is the 12D3KooW... id of our
    key (checked at start). The key file lives in a private temporary directory only until the
    daemon has read it.

    `dht_options` go to hivemind.DHT / DHTNode / P2P as they are (e.g. announce_maddrs).
    """

    def __init__(
        self,
        priv: Ed25519PrivateKey,
        *,
        initial_peers: Sequence[str] = (),
        host_maddrs: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        expiration_s: float = 600,
        start_timeout_s: float = 30,
        op_timeout_s: float = 60,
        max_record_bytes: int = MAX_RECORD_BYTES,
        dht_options: Mapping[str, Any] | None = None,
    ):
        self.peer_key = public_key_hex(priv)
        self.expiration_s = expiration_s
        self.op_timeout_s = op_timeout_s
        self.max_record_bytes = max_record_bytes
        self.failed_publishes = 0
        self._seq: dict[int, int] = {}
        self._lock = threading.Lock()  # DHT calls go down one pipe; keep threads from interleaving
        self._dht: Any = None

        problem = diagnose_p2pd(p2pd_path())
        if problem is not None:
            raise problem
        peers = [check_bootstrap_maddr(m) for m in initial_peers]
        hosts = [str(m) for m in host_maddrs]
        hivemind = _import_hivemind()
        self._get_dht_time = hivemind.utils.get_dht_time

        with tempfile.TemporaryDirectory(prefix="bitswarm-p2p-") as tmp:  # mode 0700
            identity = os.path.join(tmp, "identity.key")
            fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(_libp2p_private_key(priv))
            dht = hivemind.DHT(
                initial_peers=peers or None,
                start=False,
                host_maddrs=hosts,
                identity_path=identity,
                # hivemind's "is this identity taken" probe parses the key file as RSA and
                # fails on Ed25519; it also starts a second daemon. Our key is ours alone.
                check_if_identity_free=False,
                startup_timeout=start_timeout_s,
                record_validators=[_signed_record_validator(max_record_bytes)],
                **dict(dht_options or {}),
            )
            try:
                # The DHT process is forked here and keeps these filters: hivemind's P2P.create
                # calls the deprecated importlib.resources.path, warning on every start.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    # P2P gives up at start_timeout_s; the margin covers the DHT's bootstrap pings.
                    dht.run_in_background(await_ready=True, timeout=start_timeout_s + 15)
            except BaseException as e:
                _stop_dht(dht)
                if not isinstance(e, Exception):
                    raise
                raise diagnose_start_failure(
                    e, host_maddrs=hosts, initial_peers=peers, timeout_s=start_timeout_s
                ) from e
        self._dht = dht
        _LIVE.add(self)

        peer_id = self._call(dht.run_coroutine, _daemon_peer_id)
        if public_key_of_peer_id(peer_id) != bytes.fromhex(self.peer_key):
            self.close()
            raise TransportError(
                "identity",
                f"the p2p daemon runs as {base58.b58encode(peer_id).decode()}, not as our key {self.peer_key}",
                "hivemind did not load the identity file; check that this hivemind version accepts "
                "Ed25519 libp2p keys in identity_path.",
            )
        self.peer_id = base58.b58encode(peer_id).decode()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """A DHT call with a deadline: a dead DHT process would otherwise block us forever."""
        if self._dht is None:
            raise RuntimeError("transport is closed")
        if not self._dht.is_alive():
            raise TransportError("dht_dead", "the DHT process is no longer running", "restart the node")
        future = method(*args, return_future=True, **kwargs)
        try:
            return future.result(timeout=self.op_timeout_s)
        except TimeoutError:
            future.cancel()
            raise TransportError(
                "dht_dead",
                f"the DHT did not answer within {self.op_timeout_s:g} s",
                "the DHT process is stuck or overloaded; restart the node, or raise op_timeout_s",
            ) from None

    def visible_maddrs(self) -> list[str]:
        """Addresses other peers can bootstrap from, each ending in /p2p/<our peer id>."""
        with self._lock:
            return [str(m) for m in self._call(self._dht.run_coroutine, _visible_maddrs)]

    def publish(self, round: int, blob: bytes) -> None:
        # Fail here, loudly, on what every DHT node (ourselves included) would silently refuse.
        record = decode_verified(bytes(blob), max_bytes=self.max_record_bytes)
        if record.peer != self.peer_key:
            raise ValueError("can only publish records signed by this transport's key")
        with self._lock:
            n = self._seq.get(round, 0)
            if n >= MAX_PUBLISHES_PER_ROUND:
                raise TransportError(
                    "publish_limit",
                    f"already published {n} blobs for round {round}",
                    f"DHT nodes accept at most {MAX_PUBLISHES_PER_ROUND} per peer and round; "
                    "batch rollouts into fewer records",
                )
            self._seq[round] = n + 1
            _forget_old(self._seq)
            ok = self._call(
                self._dht.store,
                key=ROUND_KEY.format(round=round),
                subkey=f"{self.peer_key}:{n}",
                value=bytes(blob),
                expiration_time=self._get_dht_time() + self.expiration_s,
            )
        if not ok:  # no node (not even ours) took it; the swarm goes on without this record
            self.failed_publishes += 1
            log.warning("DHT store for round %d failed (%d failed so far)", round, self.failed_publishes)

    def gather(self, round: int) -> list[bytes]:
        with self._lock:
            found = self._call(self._dht.get, ROUND_KEY.format(round=round), latest=True)
        if found is None or not isinstance(found.value, dict):
            return []
        blobs = []
        for subkey, item in sorted(found.value.items(), key=lambda kv: str(kv[0])):
            m = _SUBKEY.match(subkey) if isinstance(subkey, str) else None
            if m and m.group(1) != self.peer_key and isinstance(item.value, bytes):
                blobs.append(item.value)
        return blobs

    def close(self) -> None:
        dht, self._dht = self._dht, None
        if dht is not None:
            _LIVE.discard(self)
            _stop_dht(dht)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_dht", None) is not None:
            self.close()


async def _daemon_peer_id(_dht: Any, node: Any) -> bytes:
    return node.peer_id.to_bytes()


async def _visible_maddrs(_dht: Any, node: Any) -> list[Any]:
    return await node.get_visible_maddrs()


def _libp2p_private_key(priv: Ed25519PrivateKey) -> bytes:
    """The key as p2pd loads it: libp2p's protobuf PrivateKey, Ed25519 data = seed || public key."""
    from cryptography.hazmat.primitives import serialization
    from hivemind.proto import crypto_pb2

    seed = priv.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    data = seed + bytes.fromhex(public_key_hex(priv))
    return crypto_pb2.PrivateKey(key_type=crypto_pb2.KeyType.Ed25519, data=data).SerializeToString()
