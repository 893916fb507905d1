"""A real network on one machine: a devnet process and `bitswarm node run` processes on loopback.

Used by `bitswarm demo` and by the node tests. Nothing here is a stand-in: the chain is
`bitswarm devnet --fast` in its own process, every node is `bitswarm node run` in its own process
with its own data directory, identity, libp2p daemon and HTTP API, and callers talk to them as a
person would (the CLI, the API, the chain). Every process starts in a session of its own, so a
Ctrl-C in the terminal reaches only the caller, which then stops them in order.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from web3 import Web3

from bitswarm.errors import BitswarmError
from bitswarm.ledger.client import CREDIT, ROLE_NAMES, Ledger
from bitswarm.ledger.deployment import Deployment
from bitswarm.node import identity

PASS = "correct horse battery"  # every local identity's passphrase: these keys guard devnet credits only
_SCRIPT = Path(sys.executable).with_name("bitswarm")
BIN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bitswarm"]


def _stop_with_parent() -> None:
    """Runs in a node's or the chain's process before exec: Linux sends it SIGTERM when the thread
    that started it dies, so a demo or test killed with SIGKILL leaves no node serving forever (a
    node stops on SIGTERM as on Ctrl-C and reaps its libp2p daemon). Start these from the main
    thread: a worker thread's exit would count as the parent's death."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _PRCTL = None


class NetworkError(BitswarmError):
    """A process of the local network failed, exited or did not answer in time; says which and shows its log."""


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("BITSWARM_")}
    return {**e, "BITSWARM_PASSPHRASE": PASS, "PYTHONUNBUFFERED": "1", "NUMBA_NUM_THREADS": "1"}


def cli(home: Path, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*BIN, "--home", str(home), *args], capture_output=True, text=True, env=env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise NetworkError(f"bitswarm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_json(home: Path, *args: str, **kw) -> dict:
    return json.loads(cli(home, *args, "--json", **kw).stdout)


def wait_for(what: str, fn, timeout: float = 120, every: float = 0.5, tick=None):
    """Poll `fn` until it returns something true (returned); `tick` runs each poll (a progress display)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        try:
            last = fn()
        except (OSError, ValueError, KeyError) as e:  # a node restarting, a file half written
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise NetworkError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class Chain:
    home: Path
    proc: subprocess.Popen
    url: str
    deployment: Deployment

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def fund(self, address: str, credits: int) -> None:
        w3 = Web3(Web3.HTTPProvider(self.url))
        answer = w3.provider.make_request("bitswarm_fund", [address, 10 * 10**18, credits * CREDIT])
        assert "result" in answer, answer


def start_chain(home: Path) -> Chain:
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([*BIN, "--home", str(home), "devnet", "--port", "0", "--fast", "--json"],
                            stdout=subprocess.PIPE, stderr=open(home / "devnet.log", "w"), text=True, env=env(),
                            start_new_session=True, preexec_fn=_stop_with_parent)
    line = proc.stdout.readline()
    if not line:
        raise NetworkError("devnet exited:\n" + (home / "devnet.log").read_text())
    info = json.loads(line)
    w3 = Web3(Web3.HTTPProvider(info["url"]))
    dep = Deployment.from_json(w3.provider.make_request("bitswarm_deployment", [])["result"], "devnet")
    return Chain(home, proc, info["url"], dep)


@dataclass
class NodeProc:
    name: str
    home: Path
    chain: Chain
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    starts: int = 0
    _ledger: Ledger | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return identity.load(self.home).address

    def ledger(self) -> Ledger:
        # One client per node: unlocking the keystore (scrypt) costs ~0.7 s of CPU, and callers
        # poll the chain through this every half second.
        if self._ledger is None:
            self._ledger = Ledger(self.chain.url, self.chain.deployment, identity.unlock(self.home, PASS))
        return self._ledger

    def info(self) -> dict:
        return json.loads((self.home / "node.json").read_text())

    def start(self, *extra: str, wait: bool = True) -> "NodeProc":
        """Start `bitswarm node run`; with `wait`, return once its API serves (else see wait_up)."""
        self.starts += 1
        log = open(self.home / f"node-{self.starts}.log", "w")
        self.proc = subprocess.Popen([*BIN, "--home", str(self.home), "node", "run", "--api-port", "0",
                                      *self.args, *extra], stdout=log, stderr=subprocess.STDOUT, env=env(),
                                     start_new_session=True, preexec_fn=_stop_with_parent)
        if wait:
            self.wait_up()
        return self

    def wait_up(self, timeout: float = 120, tick=None) -> None:
        wait_for(f"{self.name} to serve", lambda: self._up(), timeout=timeout, tick=tick)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise NetworkError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
        return self.info().get("pid") == self.proc.pid

    def log(self) -> str:
        return (self.home / f"node-{self.starts}.log").read_text()

    def api(self, path: str) -> dict:
        with urllib.request.urlopen(self.info()["api_url"] + path, timeout=10) as r:
            return json.loads(r.read())

    def bootstrap_addr(self) -> str:
        info = self.info()
        addr = info["maddrs"][0]
        return addr if "/p2p/" in addr else f"{addr}/p2p/{info['peer_id']}"

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise NetworkError(f"{self.name} did not stop within {timeout} s:\n{self.log()}")

    def leftovers(self) -> list[int]:
        """Processes still alive in the node's process group (its libp2p daemon, say)."""
        if self.proc is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid and fields[0] != "Z":  # pgrp, state
                found.append(int(stat.parent.name))
        return found

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the node and its libp2p daemon, as a crash would
        self.proc.wait(30)


def make_node(root: Path, name: str, chain: Chain, roles: str, stake: int = 200, credits: int = 1000,
              args: list[str] | None = None, sample_rate: float = 0.25, config: str = "") -> NodeProc:
    """A new node's data directory: identity, config (plus `config`'s TOML lines), funds, and on
    chain registered with `roles` (comma-separated) and `stake` credits staked."""
    home = root / name
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f'rpc_url = "{chain.url}"\npoll_seconds = 0.5\nverify_sample_rate = {sample_rate}\n'
                                      + config)
    ident = identity.create(home, PASS)
    chain.fund(ident.address, credits)
    node = NodeProc(name, home, chain, args or [])
    if roles:
        lg = node.ledger()
        bits = 0
        for r in roles.split(","):
            bits |= ROLE_NAMES[r]
        lg.register(ident.peer_id, bits)
        lg.stake(stake * CREDIT)
        node.args = ["--roles", roles, *node.args]
    else:
        node.args = ["--roles", "", *node.args]
    return node
