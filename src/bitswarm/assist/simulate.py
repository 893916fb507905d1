"""Simulated humans play alone and with the assistant, on the same goals: what the assistant is worth.

Each episode seed gives one goal; the human plays it twice with the same seed, so the two arms differ
only by the assistant. Episodes are recorded through the SDK like a real user's, and can be shared
(stored, CIDs returned) to train the next assistant.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bitswarm.assist.game import BuildEnv
from bitswarm.assist.humans import SimulatedHuman, play_episode
from bitswarm.assist.sdk import Assistant
from bitswarm.store.jsonl import append_line


def simulate(
    episodes: int, *, model: str | None = None, home=None, store=None, seed: int = 0, skill: float = 0.9,
    noise: float = 0.05, share: bool = False, alone: bool = True, confidence: float | None = None,
    imitate: bool = False,
    on_episode: Callable[[int], None] | None = None,
) -> dict:
    """Play `episodes` goals (seeds seed, seed+1, ...) alone and, with a model, with the assistant."""
    if episodes < 1:
        raise ValueError("episodes must be at least 1")
    kw = ({} if confidence is None else {"confidence": confidence}) | {"imitate": imitate}
    recorder = Assistant(None, home=home, store=store)
    helper = Assistant(model, home=home, store=store, **kw) if model is not None else None
    alone_rows, with_rows, shared = [], [], []
    for k in range(episodes):
        s = seed + k
        if alone or helper is None:
            row = play_episode(BuildEnv(), SimulatedHuman(skill, noise, seed=s), recorder, seed=s)
            alone_rows.append(row)
            if share:
                shared.append(recorder.share().cid)
        if helper is not None:
            row = play_episode(BuildEnv(), SimulatedHuman(skill, noise, seed=s), helper, seed=s)
            with_rows.append(row)
            if share:
                shared.append(helper.share().cid)
        if on_episode:
            on_episode(k + 1)
    out = {"episodes": episodes, "model": model}

    def mean(rows, key):
        return round(sum(r[key] for r in rows) / len(rows), 3) if rows else None

    if alone_rows:
        out["human_actions_alone"] = mean(alone_rows, "human_actions")
        out["goal_completion_rate_alone"] = mean(alone_rows, "completed")
    if with_rows:
        goal_blocks = sum(r["goal_blocks"] for r in with_rows)
        out |= {
            "human_actions_with_assistant": mean(with_rows, "human_actions"),
            "assistant_share_of_goal_blocks": round(sum(r["assistant_correct"] for r in with_rows) / goal_blocks, 4),
            "assistant_wrong_blocks": mean(with_rows, "assistant_wrong"),
            "goal_completion_rate": mean(with_rows, "completed"),
        }
    else:
        out["goal_completion_rate"] = out["goal_completion_rate_alone"]
    if share:
        out["shared"] = shared
    # Logged in the home (the dashboard's assistant statistics read it), without the CIDs shared.
    append_line(recorder.home.assist_simulations, {k: v for k, v in out.items() if k != "shared"} | {
        "shared": len(shared), "seed": seed, "skill": skill, "noise": noise, "time": time.time()})
    return out
