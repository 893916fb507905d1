"""Simulated humans for the building game, and play_episode, which plays one against an optional assistant.

A simulated human sees the goal and builds it the way a person would: bottom-up, near where it last
built, walking over when a cell is out of reach, now and then slipping (a wrong colour, or the right
colour one cell off) and, more or less promptly, taking wrong blocks down again, its own or the
assistant's. Training and tests stand it in for a person; everything it does follows from its seed.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from bitswarm.assist.episode import outcome_of
from bitswarm.assist.game import COLORS, REACH, SIZE, Action, BuildEnv, check_action, support_mask

FACES = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


class Assistant(Protocol):
    """What play_episode needs of an assistant: it sees each human action, then may act (None passes)."""

    def observe(self, obs: dict, human_action: Action) -> None: ...

    def act(self, obs: dict) -> Action | None: ...


class SimulatedHuman:
    """A scripted builder who sees the goal.

    skill: the chance, each turn that it sees a wrong block, that it turns to removing it (nearest first)
        before building on; with nothing left to build it always does.
    noise: the chance that a placement slips: a wrong colour in the cell, or the right colour in a free
        neighbouring cell where the goal wants something else.
    speed: actions per second of simulated time; callers use it for timestamps.
    """

    def __init__(self, skill: float = 0.9, noise: float = 0.05, speed: float = 1.0, seed: int = 0):
        for name, p in (("skill", skill), ("noise", noise)):
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                raise ValueError(f"SimulatedHuman {name} is a probability in [0, 1], got {p!r}")
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0 < speed < float("inf"):
            raise ValueError(f"SimulatedHuman speed is actions per second, a positive number, got {speed!r}")
        if type(seed) is not int or seed < 0:
            raise ValueError(f"SimulatedHuman seed is a non-negative integer, got {seed!r}")
        self.skill, self.noise, self.speed, self.seed = float(skill), float(noise), float(speed), seed
        self.reset()

    def reset(self, episode: int = 0) -> None:
        """Forget the last episode; what it does from here depends only on (seed, episode)."""
        self.rng = np.random.default_rng([self.seed, episode])
        self._target: tuple[str, tuple[int, int, int]] | None = None  # kept, so a tie is not redrawn every turn
        self._last: tuple[int, int] | None = None  # (x, z) of the block it last placed

    def act(self, view: dict) -> Action:
        """The next action, from the human's view (BuildEnv.human_view: the observation and the goal)."""
        blocks, goal = view["blocks"], view["goal"]
        at = (int(view["human"][0]), int(view["human"][1]))
        wrong = (blocks != 0) & (blocks != goal)
        missing = (blocks == 0) & (goal != 0)
        if not missing.any() and not wrong.any():
            return Action.noop()
        fix = wrong.any() and (not missing.any() or self.rng.random() < self.skill)
        kind, (x, y, z) = self._choose("remove", wrong, at) if fix else self._choose(
            "place", missing & support_mask(blocks), self._last or at)
        if max(abs(x - at[0]), abs(z - at[1])) > REACH:
            dx, dz = x - at[0], z - at[1]
            return Action.move(int(np.sign(dx)), 0) if abs(dx) >= abs(dz) else Action.move(0, int(np.sign(dz)))
        self._target = None
        if kind == "remove":
            return Action.remove(x, y, z)
        self._last = (x, z)
        if self.rng.random() < self.noise:
            return self._slip(blocks, goal, at, (x, y, z))
        return Action.place(x, y, z, int(goal[x, y, z]))

    def _choose(self, kind: str, candidates: np.ndarray, near: tuple[int, int]) -> tuple[str, tuple[int, int, int]]:
        """The kept target if it is still a candidate, else the lowest candidate nearest `near` in x and z."""
        if self._target is not None and self._target[0] == kind and candidates[self._target[1]]:
            return self._target
        cells = np.argwhere(candidates)
        if kind == "place":  # bottom-up: finish a course before starting the one above it
            cells = cells[cells[:, 1] == cells[:, 1].min()]
        dist = np.abs(cells[:, 0] - near[0]) + np.abs(cells[:, 2] - near[1])
        nearest = cells[dist == dist.min()]
        x, y, z = (int(v) for v in nearest[self.rng.integers(len(nearest))])
        self._target = (kind, (x, y, z))
        return self._target

    def _slip(self, blocks: np.ndarray, goal: np.ndarray, at: tuple[int, int], cell: tuple[int, int, int]) -> Action:
        """A legal mistake in place of placing goal[cell] at cell."""
        want = int(goal[cell])
        if self.rng.random() < 0.5:
            off = [Action.place(*n, want) for n in np.add(cell, FACES).tolist()
                   if all(0 <= v < s for v, s in zip(n, SIZE)) and goal[tuple(n)] != want
                   and check_action(blocks, at, Action.place(*n, want)) is None]
            if off:
                return off[self.rng.integers(len(off))]
        other = [c for c in range(1, COLORS + 1) if c != want]
        return Action.place(*cell, other[self.rng.integers(len(other))])


def play_episode(env: BuildEnv, human: SimulatedHuman, assistant: Assistant | None = None, seed: int = 0) -> dict:
    """One episode on the goal for `seed`, turn about: the human acts, then the assistant (if any) observes
    the world and the human's action and may act. An illegal assistant action is counted and skipped (a
    learning assistant proposes some), so the episode goes on. Returns the counts as a dict."""
    env.reset(seed=seed)
    human.reset(seed)
    if hasattr(assistant, "begin_episode"):  # an SDK assistant records the episode
        assistant.begin_episode(env.state())
    counts = {"human_actions": 0, "human_wrong": 0, "assistant_actions": 0, "assistant_correct": 0,
              "assistant_wrong": 0, "assistant_illegal": 0}
    terminated = truncated = False
    while not (terminated or truncated):
        action = human.act(env.human_view())
        obs, reward, terminated, truncated, _ = env.step(action, "human")
        counts["human_actions"] += 1
        counts["human_wrong"] += int(action.kind == "place" and reward < 0)
        if assistant is None:
            continue
        assistant.observe(obs, action)  # the last action too: a recording assistant keeps every step
        if terminated or truncated:
            continue
        help_ = assistant.act(obs)
        if help_ is None:
            continue
        if env.legal(help_, "assistant") is not None:
            counts["assistant_illegal"] += 1
            continue
        obs, reward, terminated, truncated, _ = env.step(help_, "assistant")
        counts["assistant_actions"] += 1
        if help_.kind == "place":
            counts["assistant_correct" if reward > 0 else "assistant_wrong"] += 1
    if hasattr(assistant, "end_episode"):
        assistant.end_episode(outcome_of(env))
    return {"seed": seed, "goal": env.goal.name, "goal_blocks": env.goal.count, "completed": terminated,
            "steps": env.steps, **counts}
