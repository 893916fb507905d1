"""Episodes -> a tensor dataset -> an ordinary repro training job -> a stored assistant model.

Every link is a CID: the dataset's header lists the episodes it was built from, the job's spec names
the dataset and the base model, and the trained model's provenance names the spec, the dataset (with
its episodes) and the final state hash — so anyone can see which data trained which assistant, and
re-run the job (or dispute it) to the bit.

Examples are cells (assist.features): per human placement or removal, the cell it edited and a sample
of the other cells, each with the episode's goal block there (goal prediction) and what the human did
there next (behaviour cloning) as targets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from bitswarm.assist.episode import EpisodeError, parse
from bitswarm.assist.features import ACTIVE, cell_features, next_target, policy_config
from bitswarm.assist.game import SIZE, support_mask
from bitswarm.store.jsonl import append_line
from bitswarm.errors import BitswarmError
from bitswarm.home import Home
from bitswarm.models.policy import dataset_metadata
from bitswarm.store import BlobStore

DATASET_FORMAT = "bitswarm-assist-dataset-v1"


class TrainAssistError(BitswarmError, ValueError):
    pass


EMPTY_ROWS = 24  # empty, supported cells per human action: the decisions the assistant faces
FULL_ROWS = 6    # occupied cells: so that doubt about a standing block is learnt too


def episode_examples(ep, salt: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, goal targets, next targets) of one checked episode: per human edit, rows for the
    cell it edited and for cells drawn (seeded by `salt` and the step) from the empty supported
    cells and the occupied ones, each seen before the edit."""
    goal = np.asarray(ep.initial["goal"], np.int64).reshape(SIZE)
    rows, goals, nexts, history = [], [], [], []
    for n, (_env, obs, player, action) in enumerate(ep.replay()):
        if player != "human" or action.kind not in ("place", "remove"):
            continue
        blocks = obs["blocks"]
        rng = np.random.default_rng([salt, n])
        empty = np.argwhere((blocks == 0) & support_mask(blocks))
        full = np.argwhere(blocks != 0)
        pick = [empty[rng.permutation(len(empty))[:EMPTY_ROWS]], full[rng.permutation(len(full))[:FULL_ROWS]],
                np.array([[action.x, action.y, action.z]])]
        cells = np.unique(np.concatenate(pick), axis=0)
        rows.append(cell_features(blocks, cells, history))
        goals.append(goal[cells[:, 0], cells[:, 1], cells[:, 2]])
        nexts.append(next_target(cells, action))
        history.append(action)
    if not rows:
        return np.zeros((0, ACTIVE), np.int64), np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64)
    return np.concatenate(rows), np.concatenate(goals)[:, None], np.concatenate(nexts)[:, None]


def build_dataset(store: BlobStore, episodes: Sequence[str]) -> tuple[str, int]:
    """Store the tensor dataset of these episode CIDs (in the order given); (its CID, examples)."""
    if not episodes:
        raise TrainAssistError("no episodes given: share some first (`bitswarm assist simulate --share` or play)")
    parts = []
    for i, cid in enumerate(episodes):
        if not store.has(cid):
            raise TrainAssistError(f"episode {cid} is not in the store")
        try:
            parts.append(episode_examples(parse(store.read_bytes(cid), f"episode {cid}"), salt=i))
        except EpisodeError as e:
            raise TrainAssistError(str(e)) from None
    x, goal, nxt = (np.concatenate([p[i] for p in parts]) for i in range(3))
    if not len(x):
        raise TrainAssistError("the episodes hold no human placements or removals to learn from")
    blob = save({"inputs": x.astype(np.int32), "targets.goal": goal.astype(np.int32), "targets.next": nxt.astype(np.int32)},
                metadata=dataset_metadata({"format": DATASET_FORMAT, "episodes": list(episodes)}))
    return store.put_bytes(blob, label="assist-dataset"), len(x)


def train_assistant(
    store: BlobStore, home: Home, episodes: Sequence[str], *, steps: int = 400, global_batch: int = 512,
    lr: float = 3e-3, seed: int = 0, base_model: str | None = None, backend: str = "numba",
    threads: int | None = None, micro_batch: int | None = None, out: Path | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> dict:
    """Train an assistant policy on shared episodes as a repro job; {"model": CID, ...links}."""
    from bitswarm.jobs.spec import parse_spec
    from bitswarm.jobs.train_job import model_from_run, run_training
    from bitswarm.models.policy import init_policy

    dataset, examples = build_dataset(store, episodes)
    if base_model is None:
        base_model = init_policy(store, policy_config(), seed)
    spec = parse_spec({
        "model_kind": "policy", "model": base_model, "loss": "bc", "steps": steps, "global_batch": global_batch,
        "dataset": {"kind": "tensors", "cid": dataset}, "seed": seed,
        "lr": {"peak": lr, "warmup_steps": min(20, steps // 10), "schedule": "linear", "min_lr": lr / 10},
        "optimizer": {"weight_decay": 0.01}, "checkpoint_every": max(1, steps // 3),
    })
    spec_json = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    spec_id = hashlib.sha256(spec_json.encode()).hexdigest()
    run_dir = Path(out) if out is not None else home.assist / "runs" / spec_id[:16]
    resume = (run_dir / "result.json").exists() or (run_dir / "spec.json").exists()
    result = run_training(store, spec, run_dir, backend=backend, threads=threads, micro_batch=micro_batch,
                          resume=resume, on_step=on_step)
    made = model_from_run(store, run_dir, label=f"assistant-{result['final_state_hash'][:16]}")
    record = {"model": made["model"], "base_model": base_model, "dataset": dataset, "episodes": list(episodes),
              "examples": examples, "spec": spec_id, "steps": result["steps"],
              "final_state_hash": result["final_state_hash"], "step_hashes_root": result["step_hashes_root"],
              "run": str(run_dir)}
    append_line(home.assist_models, record)
    return record
