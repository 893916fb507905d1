"""One peer's GRPO update on a round's rollouts, as an ordinary verifiable training job.

The rollouts become a stored JSONL dataset ({"prompt", "completion", "advantage"}) and the
update a jobs TrainSpec with loss "grpo" (clipped ratio 0.2/0.28, no KL, AdamW from repro's
kernels), so each round leaves a run directory whose transcript `bitswarm verify replay`
re-executes bit for bit. Rollouts are used on-policy (no recorded old log-probs: ratio 1 at the
first step), which is what SAPO does with external rollouts too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from bitswarm.jobs.spec import parse_spec
from bitswarm.jobs.train_job import run_training, store_optimizer_state
from bitswarm.models.importer import store_trained
from bitswarm.repro.train import TrainState, latest_checkpoint
from bitswarm.store import BlobStore
from bitswarm.verify.transcript import build as build_transcript

ADV_EPS = 1e-6


def group_advantages(rewards: list[float]) -> list[float]:
    """GRPO's group-normalised advantages: (r - mean) / (std + eps); all zero when rewards tie."""
    n = len(rewards)
    if n == 0:
        return []
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    if std == 0.0:
        return [0.0] * n
    return [(r - mean) / (std + ADV_EPS) for r in rewards]


@dataclass(frozen=True)
class Row:
    prompt: str
    completion: str
    advantage: float
    # The token ids as the policy saw and sampled them (end of turn included), for a peer's own
    # rollouts; None for a rollout another peer generated, which only comes as text.
    prompt_ids: tuple[int, ...] | None = None
    completion_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Update:
    model: str            # CID of the updated policy
    run_dir: Path         # the training run (spec, steps.jsonl, checkpoints)
    transcript: str       # CID of its transcript
    step_root: str        # Merkle root over its per-step state hashes
    dataset: str          # CID of the rollout JSONL it trained on
    steps: int
    optimizer_state: str | None = None  # CID of the AdamW state after it: the next round starts there


def rows_jsonl(rows: list[Row]) -> bytes:
    return b"".join(json.dumps(_record(r), sort_keys=True).encode() + b"\n" for r in rows)


def _record(r: Row) -> dict:
    if r.prompt_ids is not None and r.completion_ids is not None:
        return {"prompt_ids": list(r.prompt_ids), "completion_ids": list(r.completion_ids), "advantage": r.advantage}
    return {"prompt": r.prompt, "completion": r.completion, "advantage": r.advantage}


def train_and_store(
    store: BlobStore, model: str, rows: list[Row], out: Path, fields: dict, *, order: str, label: str,
    micro_batch: int | None = None, backend: str = "numba", keep_optimizer: bool = False,
) -> tuple[str, dict, str, str | None]:
    """Train `model` on `rows` as a `grpo` job with these other spec fields, and store the
    trained policy; returns (its CID, the run's result, the rollout dataset's CID, and with
    `keep_optimizer` the CID of the final AdamW state, else None)."""
    dataset = store.put_bytes(rows_jsonl(rows), label=label)
    spec = parse_spec({"model": model, "dataset": {"kind": "cid", "cid": dataset, "order": order}, "loss": "grpo",
                       **fields})
    result = run_training(store, spec, out, backend=backend, micro_batch=micro_batch)
    state = TrainState.load(latest_checkpoint(out))
    moments = store_optimizer_state(store, state) if keep_optimizer else None
    return store_trained(store, model, state.params, label=label), result, dataset, moments


def update(
    store: BlobStore,
    model: str,
    rows: list[Row],
    out: Path,
    *,
    seq_len: int,
    lr: float,
    micro_batch: int = 8,
    seed: int = 0,
    backend: str = "numba",
    optimizer_state: str | None = None,
) -> Update:
    """One optimizer step of `model` on all `rows` (micro-batches of at most `micro_batch` rows,
    which never changes the bits) and store the result.

    The step starts from `optimizer_state` (the previous round's AdamW moments and powers; None:
    zeros, a peer's first round), and the update returns the new one, so a peer's AdamW runs
    on across rounds as in one long training run. One step per round, not one per micro-batch:
    the whole round's rollouts make one gradient."""
    if not rows:
        raise ValueError("a GRPO update needs at least one rollout")
    mb = next(d for d in range(min(micro_batch, len(rows)), 0, -1) if len(rows) % d == 0)
    new_model, result, dataset, moments = train_and_store(store, model, rows, out, {
        "seq_len": seq_len,
        "steps": 1,
        "global_batch": len(rows),
        "lr": {"peak": lr, "schedule": "constant"},
        "optimizer": {"weight_decay": 0.0, "grad_clip": 1.0},
        "seed": seed % 2**64,
        "checkpoint_every": 10_000,
        "optimizer_state": optimizer_state,
    }, order="sequential", label="swarm-policy", micro_batch=mb, backend=backend, keep_optimizer=True)
    transcript, _ = build_transcript(store, out)
    return Update(new_model, out, transcript, result["step_hashes_root"], dataset, 1, moments)
