"""Rollout records on a hivemind DHT (the libp2p daemon ships in hivemind's wheel)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import gc
import hashlib
import logging
import os
import re
import signal
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import base58
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bitswarm.swarm import manifest
from bitswarm.swarm.hivemind_import import import_dht_parts, import_hivemind
from bitswarm.swarm.p2p_diagnosis import (
    check_bootstrap_maddr,
    diagnose_p2pd,
    diagnose_start_failure,
    p2pd_path,
    public_key_of_peer_id,
)
from bitswarm.swarm.records import (
    MAX_RECORD_BYTES,
    RecordRejected,
    decode_verified,
    encode_announcement,
    public_key_hex,
    verify_announcement,
)
from bitswarm.swarm.transport import MAX_PUBLISHES_PER_ROUND, TransportError, _forget_old

log = logging.getLogger(__name__)

# A round on the DHT, paged so that no read's answer grows with the swarm:
#   RECORDS_KEY  one publisher's records for the round, subkeys "<key hex>:<n>" (n < 8): one read
#                returns at most MAX_PUBLISHES_PER_ROUND * MAX_RECORD_BYTES (512 KiB);
#   INDEX_KEY    the round's publishers, spread over INDEX_PAGES pages by key hash, subkey
#                "index:<key hex>" holding a ~250-byte signed announcement. All pages are read in
#                one parallel call; a page stays under hivemind's 4 MiB message limit until
#                ~12,000 publishers land on it (~100,000 per round with 8 pages).
RECORDS_KEY = "bitswarm/rollouts/{round}/{peer}"
INDEX_KEY = "bitswarm/rollouts/{round}/index/{page}"
INDEX_PAGES = 8
_SUBKEY = re.compile(r"^([0-9a-f]{64}):(\d{1,6})$")
_INDEX_SUBKEY = re.compile(r"^index:([0-9a-f]{64})$")
_MANIFEST_SUBKEY = re.compile(r"^manifest:([0-9a-f]{64})$")


def index_page(peer: str) -> int:
    """The index page a publisher lists itself on (by its key, so the same one every round)."""
    return hashlib.sha256(peer.encode()).digest()[0] % INDEX_PAGES


def _signed_record_validator(max_bytes: int) -> Any:
    """A hivemind validator that keeps the DHT's round keys to signed records under their author's subkey.

    Without it anyone could overwrite "<victim key>:<n>" (the later expiration wins) or replace
    a whole round with a plain value, censoring others. With it every honest node refuses to
    store, and drops from answers, any value that is not a dictionary entry "<key hex>:<n>"
    (n < MAX_PUBLISHES_PER_ROUND) holding a record signed by that key, or an index entry
    "index:<key hex>" holding an announcement signed by that key. This makes the DHT
    single-purpose: do not run other hivemind features on it.

    The one other shape it admits is a swarm manifest: subkey "manifest:<key hex>" holding a
    manifest signed by that key. Keys reach a validator hashed, so a manifest could sit under a
    round key and a record under a manifest key; readers look only for their own shape, and a
    joiner reads only the manifest whose key is its bootstrap peer's.
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
            if not isinstance(blob, bytes):
                return False
            if not isinstance(subkey, str):
                return False
            listed = _INDEX_SUBKEY.match(subkey)
            if listed is not None:
                try:
                    verify_announcement(blob, peer=listed.group(1))
                    return True
                except RecordRejected:
                    return False
            host = _MANIFEST_SUBKEY.match(subkey)
            if host is not None:
                try:
                    manifest.decode_verified(blob, host=host.group(1))
                    return True
                except manifest.ManifestError:
                    return False
            m = _SUBKEY.match(subkey)
            if m is None or int(m.group(2)) >= MAX_PUBLISHES_PER_ROUND:
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


def stop_dht(dht: Any) -> None:
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


@contextlib.contextmanager
def _daemon_inputs(priv: Ed25519PrivateKey, initial_peers: Sequence[str],
                   host_maddrs: Sequence[str]) -> Iterator[tuple[str, list[Any], list[str]]]:
    """(identity key file, bootstrap multiaddrs, listen addresses) for starting a p2pd, all
    checked first; the key file lives in a private temporary directory for the start only."""
    problem = diagnose_p2pd(p2pd_path())
    if problem is not None:
        raise problem
    peers = [check_bootstrap_maddr(m) for m in initial_peers]
    hosts = [str(m) for m in host_maddrs]
    with tempfile.TemporaryDirectory(prefix="bitswarm-p2p-") as tmp:  # mode 0700
        identity = os.path.join(tmp, "identity.key")
        fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_libp2p_private_key(priv))
        yield identity, peers, hosts


def start_dht(
    priv: Ed25519PrivateKey,
    *,
    initial_peers: Sequence[str],
    host_maddrs: Sequence[str],
    start_timeout_s: float,
    record_validators: Sequence[Any],
    dht_options: Mapping[str, Any] | None = None,
) -> Any:
    """A running hivemind.DHT whose p2pd has `priv` as its libp2p identity, or a TransportError.

    Shared by every bitswarm service on hivemind (rollout records, blob exchange), so each start
    is checked and diagnosed the same way. The caller checks the daemon's peer id and stops the
    DHT with stop_dht().
    """
    with _daemon_inputs(priv, initial_peers, host_maddrs) as (identity, peers, hosts):
        dht = import_hivemind().DHT(
            initial_peers=peers or None,
            start=False,
            host_maddrs=hosts,
            identity_path=identity,
            # hivemind's "is this identity taken" probe parses the key file as RSA and
            # fails on Ed25519; it also starts a second daemon. Our key is ours alone.
            check_if_identity_free=False,
            startup_timeout=start_timeout_s,
            record_validators=list(record_validators),
            **dict(dht_options or {}),
        )
        try:
            # The DHT process is forked here and keeps these filters: hivemind's P2P.create
            # calls the deprecated importlib.resources.path, warning on every start.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                # Objects made so far stay out of the cyclic GC, so the forked DHT process does
                # not copy every page of the parent by touching their GC headers.
                gc.collect()
                gc.freeze()
                # P2P gives up at start_timeout_s; the margin covers the DHT's bootstrap pings.
                dht.run_in_background(await_ready=True, timeout=start_timeout_s + 15)
        except BaseException as e:
            stop_dht(dht)
            if not isinstance(e, Exception):
                raise
            raise diagnose_start_failure(
                e, host_maddrs=hosts, initial_peers=peers, timeout_s=start_timeout_s
            ) from e
    return dht


async def start_dht_node(
    priv: Ed25519PrivateKey,
    *,
    initial_peers: Sequence[str],
    host_maddrs: Sequence[str],
    start_timeout_s: float,
    record_validators: Sequence[Any],
) -> Any:
    """A hivemind DHTNode on the running event loop, with its own p2pd whose identity is `priv`.

    The node's variant of start_dht: no DHT process and no torch (see hivemind_import), checked
    and diagnosed the same way. Stop it with `await node.shutdown()`, which stops the daemon.
    """
    hm = import_dht_parts()
    with _daemon_inputs(priv, initial_peers, host_maddrs) as (identity, peers, hosts):
        try:
            with warnings.catch_warnings():  # P2P.create calls the deprecated importlib.resources.path
                warnings.simplefilter("ignore", DeprecationWarning)
                return await asyncio.wait_for(hm.DHTNode.create(
                    initial_peers=peers or None,
                    record_validator=hm.CompositeValidator(list(record_validators)),
                    host_maddrs=hosts,
                    identity_path=identity,
                    check_if_identity_free=False,  # see start_dht
                    startup_timeout=start_timeout_s,
                ), start_timeout_s + 15)  # the margin covers the DHT's bootstrap pings
        except Exception as e:
            raise diagnose_start_failure(e, host_maddrs=hosts, initial_peers=peers, timeout_s=start_timeout_s) from e


_LIVE: weakref.WeakSet[HivemindTransport] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Registered after multiprocessing's own exit hook, so it runs first: the DHT process is
    # shut down cleanly (taking p2pd with it) instead of being SIGTERMed as a daemonic child.
    for transport in list(_LIVE):
        transport.close()


class HivemindTransport:
    """Records on a hivemind DHT: a publisher's blobs for round r are subkeys "<key hex>:<n>" of
    key "bitswarm/rollouts/<r>/<key hex>", and it lists itself once per round on the round's
    index (INDEX_KEY); all stored with an expiration of `expiration_s`.

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
        self._priv = priv  # signs this peer's announcements on the round index
        self.expiration_s = expiration_s
        self.op_timeout_s = op_timeout_s
        self.max_record_bytes = max_record_bytes
        self.failed_publishes = 0
        self._seq: dict[int, int] = {}
        self._announced: dict[int, int] = {}  # rounds this peer is listed on the index of
        self._lock = threading.Lock()  # DHT calls go down one pipe; keep threads from interleaving
        self._dht: Any = None

        dht = start_dht(
            priv,
            initial_peers=initial_peers,
            host_maddrs=host_maddrs,
            start_timeout_s=start_timeout_s,
            record_validators=[_signed_record_validator(max_record_bytes)],
            dht_options=dht_options,
        )
        self._get_dht_time = import_hivemind().utils.get_dht_time
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
            expires = self._get_dht_time() + self.expiration_s
            ok = self._store(RECORDS_KEY.format(round=round, peer=self.peer_key), f"{self.peer_key}:{n}",
                             bytes(blob), expires)
            # Listed only after a record is up, so a reader that finds us on the index finds records.
            if ok and round not in self._announced:
                ok = self._store(INDEX_KEY.format(round=round, page=index_page(self.peer_key)),
                                 f"index:{self.peer_key}", encode_announcement(round, self._priv), expires)
                if ok:
                    self._announced[round] = 1
                    _forget_old(self._announced)
        if not ok:  # no node (not even ours) took it; the swarm goes on without this record
            self.failed_publishes += 1
            log.warning("DHT store for round %d failed (%d failed so far)", round, self.failed_publishes)

    def _store(self, key: str, subkey: str, value: bytes, expires: float) -> bool:
        """DHT.store, with a big value handed over in pieces (caller holds the lock).

        Protocol hazard: the DHT process reads its end of our pipe non-blocking, and Python
        writes a message over 16 KiB as a header and then the body; a read that lands between
        the two fails, the message is lost and the DHT process dies. So no message we send may
        exceed 16 KiB: a record (up to 64 KiB) goes over in _PIPE_PIECE pieces staged in the DHT
        process, then is stored from there.
        """
        if len(value) <= _PIPE_PIECE:
            return bool(self._call(self._dht.store, key=key, subkey=subkey, value=value, expiration_time=expires))
        token = os.urandom(8).hex()
        for start in range(0, len(value), _PIPE_PIECE):
            self._call(self._dht.run_coroutine, functools.partial(
                _stage_piece, token=token, piece=value[start:start + _PIPE_PIECE]))
        return bool(self._call(self._dht.run_coroutine, functools.partial(
            _store_staged, token=token, key=key, subkey=subkey, expires=expires)))

    def publishers(self, round: int) -> list[str]:
        keys = [INDEX_KEY.format(round=round, page=page) for page in range(INDEX_PAGES)]
        with self._lock:
            found = self._call(self._dht.run_coroutine, functools.partial(_get_each, keys=keys))
        listed = set()
        for entries in found.values():
            for subkey in entries:
                m = _INDEX_SUBKEY.match(subkey) if isinstance(subkey, str) else None
                if m and m.group(1) != self.peer_key:
                    listed.add(m.group(1))
        return sorted(listed)

    def fetch(self, round: int, publishers: Sequence[str]) -> dict[str, list[bytes]]:
        keys = {RECORDS_KEY.format(round=round, peer=p): p for p in publishers}
        with self._lock:  # one parallel read, one publisher (at most 512 KiB) per answer
            found = self._call(self._dht.run_coroutine, functools.partial(_get_each, keys=list(keys)))
        out: dict[str, list[bytes]] = {p: [] for p in publishers}
        for key, entries in found.items():
            peer, blobs = keys[key], []
            for subkey, value in entries.items():
                m = _SUBKEY.match(subkey) if isinstance(subkey, str) else None
                if m and m.group(1) == peer and int(m.group(2)) < MAX_PUBLISHES_PER_ROUND and isinstance(value, bytes):
                    blobs.append((int(m.group(2)), value))
            out[peer] = [b for _, b in sorted(blobs)]
        return out

    def gather(self, round: int) -> list[bytes]:
        found = self.fetch(round, self.publishers(round))
        return [b for p in sorted(found) for b in found[p]]

    def publish_manifest(self, blob: bytes) -> bool:
        """Put this host's signed manifest up under bitswarm/swarm/<our peer id>, for
        `expiration_s` (the host re-publishes it every round). False if no DHT node took it."""
        manifest.decode_verified(bytes(blob), host=self.peer_key)  # what every node would refuse
        with self._lock:
            return bool(self._call(
                self._dht.store, key=manifest.MANIFEST_KEY.format(peer_id=self.peer_id),
                subkey=manifest.SUBKEY_PREFIX + self.peer_key, value=bytes(blob),
                expiration_time=self._get_dht_time() + self.expiration_s,
            ))

    def manifest(self, peer_id: str) -> bytes | None:
        """The manifest the host `peer_id` published, still to be checked (decode_verified
        with its key), or None when it published none that reached us."""
        key = public_key_of_peer_id(base58.b58decode(peer_id))
        if key is None:
            return None
        with self._lock:
            found = self._call(self._dht.get, manifest.MANIFEST_KEY.format(peer_id=peer_id), latest=True)
        if found is None or not isinstance(found.value, dict):
            return None
        item = found.value.get(manifest.SUBKEY_PREFIX + key.hex())
        return item.value if item is not None and isinstance(item.value, bytes) else None

    def close(self) -> None:
        dht, self._dht = self._dht, None
        if dht is not None:
            _LIVE.discard(self)
            stop_dht(dht)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_dht", None) is not None:
            self.close()


_PIPE_PIECE = 12 * 1024  # bytes of a value per pipe message: well under 16 KiB with the call around it
_STAGED: dict[str, list[bytes]] = {}  # in the DHT process: pieces of values being handed over


async def _stage_piece(_dht: Any, _node: Any, token: str, piece: bytes) -> None:
    _STAGED.setdefault(token, []).append(piece)


async def _store_staged(_dht: Any, node: Any, token: str, key: str, subkey: str, expires: float) -> bool:
    value = b"".join(_STAGED.pop(token, []))
    return await node.store(key, value, expires, subkey=subkey)


async def _get_each(_dht: Any, node: Any, keys: list[str]) -> dict[str, dict[Any, Any]]:
    """Each key's newest dictionary value ({subkey: value}; {} if none), read in parallel: one
    DHT search per key, so one answer never carries two keys' values."""
    async def one(key: str) -> dict[Any, Any]:
        found = await node.get(key, latest=True)
        if found is None or not isinstance(found.value, dict):
            return {}
        return {subkey: item.value for subkey, item in found.value.items()}

    return dict(zip(keys, await asyncio.gather(*(one(k) for k in keys))))


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
