"""Helpers for driving `bitswarm swarm` as a person does: the CLI in-process, a model in the
home's store, a published record with right and wrong answers, and `swarm join` over memory."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from bitswarm.cli.main import app
from bitswarm.jobs.tasks import TaskMix
from bitswarm.swarm.records import Rollout, RolloutRecord, encode_signed, public_key_hex
from bitswarm.swarm.transport import MemoryHub, MemoryTransport

runner = CliRunner()

# The smallest round the CLI runs: one tiny task, two 4-token completions (seconds on a laptop).
TINY_ROUND = ["--local", "1", "--external", "1", "--group-size", "2", "--max-new-tokens", "4", "--tasks", "tiny"]


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
        peer_id = "12D3KooWmemory"

        def __init__(self, key, initial_peers=(), host_maddrs=()):
            super().__init__(hub, key)

        def visible_maddrs(self) -> list[str]:
            return ["/memory"]

    monkeypatch.setattr(ht, "HivemindTransport", MemoryJoin)
    host = Ed25519PrivateKey.generate()
    for r in range(4):
        hub.put(public_key_hex(host), r, 0, answer_record(host, r, groups=1, seq=r))
    return hub


JOIN = ["swarm", "join", "--bootstrap", "/memory", "--rounds", "1", *TINY_ROUND]
