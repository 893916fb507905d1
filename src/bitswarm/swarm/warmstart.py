"""Supervised warm start: teach a base model the task's prompt and answer format before RL.

GRPO learns only from groups whose rewards differ. A randomly initialised test model never
writes `<answer>…</answer>`, so every group ties at zero and nothing is learned; a few
supervised steps on (prompt, reference answer) pairs give it the format and a little accuracy,
which is where RL has something to improve. The run is an ordinary verifiable training job
(on a stored JSONL), and the result is stored as a new model.
"""

from __future__ import annotations

from pathlib import Path

from bitswarm.models.generate import load_tokenizer, render_prompt
from bitswarm.store import BlobStore
from bitswarm.swarm.grpo import Row, train_and_store
from bitswarm.jobs.tasks import TaskMix


def sft_rows(store: BlobStore, model: str, mix: TaskMix, n: int, seed: int) -> tuple[list[Row], int]:
    """n (chat-rendered prompt, answer) pairs as positive-advantage rollouts, and the longest's token count.

    Trained with the GRPO loss at advantage 1 and ratio 1 (no old log-probs), which is plain
    supervised learning on the answer tokens alone: the long shared prompt costs no capacity."""
    tok = load_tokenizer(store, model)
    end = tok.eos_token or ""
    rows = [
        Row(render_prompt(tok, mix.prompt(ref), chat=True), f"<answer>{mix.reference_answer(ref)}</answer>{end}", 1.0)
        for ref in mix.sample(seed, -1, "warm-start", n)
    ]
    longest = max(len(tok(r.prompt + r.completion, add_special_tokens=False)["input_ids"]) for r in rows)
    return rows, longest


def warm_start(
    store: BlobStore, model: str, mix: TaskMix, out: Path, *, steps: int = 60, batch: int = 8,
    lr: float = 3e-3, seed: int = 0, examples: int = 512,
) -> str:
    """The CID of `model` after `steps` supervised steps on the mix's prompts and answers."""
    rows, longest = sft_rows(store, model, mix, examples, seed)
    trained, _, _, _ = train_and_store(store, model, rows, out, {
        "seq_len": max(2, longest - 1),
        "steps": steps,
        "global_batch": batch,
        "lr": {"peak": lr, "warmup_steps": min(5, steps - 1), "schedule": "linear", "min_lr": lr / 10},
        "seed": seed,
        "checkpoint_every": steps,
    }, order="sampled", label="warm-start")
    return trained
