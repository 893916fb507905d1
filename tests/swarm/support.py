"""Helpers for driving `bitswarm swarm` as a person does: the CLI in-process, a model in the
home's store, a published record with right and wrong answers, and `swarm join` over memory."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from bitswarm import peer_key
from bitswarm.cli.main import app
from bitswarm.jobs.tasks import TaskMix
from bitswarm.swarm.records import Rollout, RolloutRecord, encode_signed, public_key_hex
from bitswarm.swarm.transport import MemoryHub, MemoryTransport

runner = CliRunner()

# The smallest round the CLI runs: one tiny task, two 4-token completions (seconds on a laptop).
TINY_ROUND = ["--local", "1", "--external", "1", "--group-size", "2", "--max-new-tokens", "4", "--tasks", "tiny"]


def live_p2pd(marker: str) -> set[int]:
    """Live (not zombie) p2pd processes started with BITSWARM_TEST_RUN=marker in their environment."""
    out = subprocess.run(["pgrep", "-f", "p2pd"], check=False, capture_output=True, text=True).stdout.split()
    pids = set()
    for pid in map(int, out):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, IndexError):
            continue  # gone already
        if state != "Z" and f"BITSWARM_TEST_RUN={marker}".encode() in env:
            pids.add(pid)
    return pids


def invoke(args: list[str], env: dict | None = None) -> Result:
    return runner.invoke(app, args, env=env)


def cli_json(args: list[str], ok: bool = True, env: dict | None = None) -> dict:
    """The last JSON line the command printed; asserts the exit status first (0, or 1 when not ok)."""
    res = invoke(args, env)
    assert res.exit_code == (0 if ok else 1), res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def model_in_home(seed: int = 0) -> str:
    return cli_json(["model", "init", "tiny", "--seed", str(seed), "--json"])["cid"]


def answer_record(key: Ed25519PrivateKey, round_: int, groups: int, seq: int = 0) -> bytes:
    """A signed record of `groups` informative groups (one right, one wrong answer each), so a
    peer that gathers it has something to learn from even with an untrained policy."""
    mix = TaskMix(["tiny_sum"])
    rollouts = []
    for gi, ref in enumerate(mix.sample(0, round_, "host", groups)):
        right = f"<answer>{mix.reference_answer(ref)}</answer>"
        for completion, reward in [(right, 1.0), ("<answer>nope</answer>", 0.0)]:
            rollouts.append(Rollout(dataset=ref.dataset, seed=ref.seed, index=ref.index, completion=completion,
                                    claimed_reward=reward, group=gi))
    return encode_signed(RolloutRecord(round=round_, peer=public_key_hex(key), seq=seq, rollouts=rollouts), key)


@pytest.fixture
def memory_join(monkeypatch) -> MemoryHub:
    """`swarm join` over a MemoryHub instead of libp2p: everything of the command but the p2p
    daemon (its own tests are marked network), so state and ledger behaviour test in seconds.
    A host peer has published an answer record for rounds 0-3 on the returned hub."""
    import bitswarm.swarm.hivemind_transport as ht

    hub = MemoryHub()

    class MemoryJoin(MemoryTransport):
        def __init__(self, key, initial_peers=(), host_maddrs=()):
            super().__init__(hub, key)

        def visible_maddrs(self) -> list[str]:
            return ["/memory"]

    monkeypatch.setattr(ht, "HivemindTransport", MemoryJoin)
    host = HOST_KEY
    for r in range(4):
        hub.put(public_key_hex(host), r, 0, answer_record(host, r, groups=1, seq=r))
    return hub


JOIN = ["swarm", "join", "--bootstrap", "/memory", "--rounds", "1", *TINY_ROUND]

# The host of the memory swarm: its records are on the hub; `host_manifest` puts up its manifest.
HOST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
HOST_BOOTSTRAP = f"/ip4/127.0.0.1/tcp/9/p2p/{peer_key.peer_id(HOST_KEY)}"


def host_manifest(hub: MemoryHub, model: str, round_seconds: float = 3600.0, **settings) -> bytes:
    """Publish HOST_KEY's manifest on `hub`: `model`, the tiny task and TINY_ROUND's settings
    (overridden by `settings`), round 0 beginning now; returns the signed bytes."""
    from bitswarm.swarm import manifest
    from bitswarm.swarm.peer import PeerSettings

    ps = PeerSettings(**{"local": 1, "external": 1, "group_size": 2, "max_new_tokens": 4, **settings})
    man = manifest.build(HOST_KEY, model, TaskMix(["tiny_sum"]), ps, manifest.Schedule(time.time(), round_seconds), [])
    blob = manifest.encode_signed(man, HOST_KEY)
    hub.manifests[peer_key.peer_id(HOST_KEY)] = blob
    return blob
