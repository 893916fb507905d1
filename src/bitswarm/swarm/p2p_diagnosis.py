"""Diagnosing the p2p daemon and bootstrap addresses: what swarm users hit most.

Every start-up failure of the libp2p daemon becomes a TransportError that says what was tried
and what to check; the helpers are separate so each diagnosis is testable on its own.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

import base58

from bitswarm.swarm.transport import TransportError

EXAMPLE_MADDR = "/ip4/1.2.3.4/tcp/31337/p2p/12D3KooW..."


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
    from bitswarm.swarm.hivemind_import import import_dht_parts

    import_dht_parts()  # hivemind.proto without the torch that `import hivemind` brings
    from hivemind.proto import crypto_pb2

    if len(peer_id) < 2 or peer_id[0] != 0x00 or peer_id[1] != len(peer_id) - 2:
        return None
    try:
        key = crypto_pb2.PublicKey.FromString(peer_id[2:])
    except Exception:  # noqa: BLE001  (protobuf's DecodeError, not importable by one stable name)
        return None
    return key.data if key.key_type == crypto_pb2.KeyType.Ed25519 and len(key.data) == 32 else None
