"""Real chains for lifecycle tests: the embedded devnet, and hardhat 2 as an outside node client."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from web3 import Web3

from bitswarm.ledger.client import CREDIT, Ledger
from bitswarm.ledger.deployment import DeployParams, Deployment, deploy

ROOT = Path(__file__).resolve().parents[2]
HARDHAT_DIR = ROOT / "tools" / "hardhat"
HARDHAT_BIN = HARDHAT_DIR / "node_modules" / ".bin" / "hardhat"

# Short deadlines so tests move the clock a little instead of a day.
FAST = DeployParams(
    unbond_delay=100, commit_timeout=600, round_timeout=300, vote_timeout=300,
    referee_min_stake=10 * CREDIT, swarm_round_duration=60,
)


@dataclass
class Chain:
    name: str
    url: str
    deployment: Deployment
    keys: list[str]  # funded accounts (ETH and credits); keys[0] deployed the contracts
    stop: object = field(repr=False, default=None)

    def ledger(self, i: int) -> Ledger:
        return Ledger(self.url, self.deployment, Account.from_key(self.keys[i]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_devnet(data_dir: Path) -> Chain:
    from bitswarm.ledger.devnet import Devnet
    from bitswarm.ledger.faucet import setup_devnet

    net = Devnet(data_dir, port=0, setup=lambda n: setup_devnet(n, FAST))
    net.start()
    dep = Deployment.from_json(net.deployment, "devnet")
    return Chain("devnet", net.url, dep, [k for _, k in net.dev_accounts], stop=net.stop)


def hardhat_missing() -> str | None:
    if shutil.which("npm") is None:
        return "npm is not installed, so hardhat 2 (the outside node client) is not available"
    if not HARDHAT_BIN.exists():
        return f"hardhat is not installed in {HARDHAT_DIR}: run `make setup` (it runs npm ci there)"
    return None


def start_hardhat() -> Chain:
    port = free_port()
    proc = subprocess.Popen(
        [str(HARDHAT_BIN), "node", "--hostname", "127.0.0.1", "--port", str(port)],
        cwd=HARDHAT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"},
    )
    keys, lines = [], []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("hardhat node exited:\n" + "".join(lines))
        lines.append(line)
        m = re.search(r"Private Key: (0x[0-9a-fA-F]{64})", line)
        if m:
            keys.append(m.group(1))
        if len(keys) >= 10:
            break
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError("hardhat node did not start within 90 s:\n" + "".join(lines))
    # Drain its log so the pipe never fills and blocks the node.
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    w3 = Web3(Web3.HTTPProvider(url))
    dep = deploy(w3, Account.from_key(keys[0]), FAST)
    minter = Ledger(url, dep, Account.from_key(keys[0]))
    for k in keys:
        minter.mint(Account.from_key(k).address, 1_000_000 * CREDIT)

    def stop():
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    return Chain("hardhat", url, dep, keys, stop=stop)
