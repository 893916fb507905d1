"""What a peer's round submission claims, and how anyone checks it.

A submission names a rollout batch by CID and claims a reward for it. The batch is one
canonical JSON object (v1, sorted keys, no spaces, UTF-8):

    {"groups": [{"completions": [...], "dataset": str, "index": int, "seed": int}, ...],
     "peer": "<publisher key hex>", "round": int, "v": 1}

holding the peer's I local groups, in the order it generated them. The claimed reward is
`batch_reward` of the scores of those completions: the mean over every completion, summed
group by group in that order. Scoring is a pure function of (task, completion), so anyone
holding the batch recomputes the claim exactly; `claim_holds` compares it in the contract's
fixed-point units, where equal scores give equal units and anything else is a false claim.

What this does not check: that the completions are the ones the peer's policy sampled (a
batch could be written by hand). The seeds make that checkable by regeneration; it is not
done here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bitswarm.store import BlobStore
from bitswarm.swarm.records import canonical_json
from bitswarm.jobs.tasks import TaskMix, TaskRef, score

VERSION = 1
MAX_BATCH_BYTES = 4 * 1024 * 1024  # I groups of group_size completions of at most 4 KiB each, with room


class _Group(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    dataset: str = Field(max_length=64)
    seed: int = Field(ge=0, lt=2**64)
    index: int = Field(ge=0, lt=2**31)
    completions: list[str] = Field(min_length=1, max_length=1024)


class _Batch(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    v: int
    round: int = Field(ge=0)
    peer: str = Field(pattern=r"^[0-9a-f]{64}$")
    groups: list[_Group] = Field(min_length=1, max_length=1024)


def encode_batch(round_: int, peer: str, groups: Sequence[tuple[TaskRef, Sequence[str]]]) -> bytes:
    body = _Batch(v=VERSION, round=round_, peer=peer, groups=[
        _Group(dataset=ref.dataset, seed=ref.seed, index=ref.index, completions=list(completions))
        for ref, completions in groups
    ])
    return canonical_json(body.model_dump(mode="json"))


def batch_reward(scores: Sequence[Sequence[float]]) -> float:
    """The reward a peer claims: the mean score over every completion, summed group by group."""
    total = sum(sum(group) for group in scores)
    return total / max(1, sum(len(group) for group in scores))


def rescore(blob: bytes, mix: TaskMix) -> float:
    """The reward a batch really earns; ValueError if it is not a valid v1 batch."""
    if len(blob) > MAX_BATCH_BYTES:
        raise ValueError(f"batch is {len(blob)} bytes, over {MAX_BATCH_BYTES}")
    try:
        batch = _Batch.model_validate(json.loads(blob))
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"not a rollout batch: {exc}") from None
    if batch.v != VERSION or canonical_json(batch.model_dump(mode="json")) != blob:
        raise ValueError("not a canonical v1 rollout batch")
    return batch_reward([
        [score(TaskRef(g.dataset, g.seed, g.index), c, mix) for c in g.completions] for g in batch.groups
    ])


def reward_units(reward: float) -> int | None:
    """A reward in the contract's fixed point (1e6 = 1.0), None if it is not in [0, 1]."""
    from bitswarm.ledger.client import Ledger  # web3 is heavy; only claim checkers pay for it
    from bitswarm.ledger.errors import LedgerError

    try:
        return Ledger.swarm_reward_units(reward)
    except LedgerError:
        return None


def claim_holds(store: BlobStore, mix: TaskMix, rollout_cid: str, claimed_units: int) -> bool:
    """Does the batch behind `rollout_cid` earn exactly the claimed reward (fixed point)? A batch
    that cannot be found, read or scored backs no claim at all."""
    if not store.has(rollout_cid):
        return False
    try:
        return reward_units(rescore(store.read_bytes(rollout_cid), mix)) == claimed_units
    except ValueError:  # not a batch, or a task this mix cannot score: the claim is unsupported
        return False
