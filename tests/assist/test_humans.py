"""Simulated humans (bitswarm.assist.humans): they finish every goal, fix their own and the assistant's
mistakes, and take fewer actions with a helpful assistant and more with a harmful one."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bitswarm.assist.game import COLORS, REACH, SIZE, Action, BuildEnv, check_action, support_mask
from bitswarm.assist.goals import Goal
from bitswarm.assist.humans import SimulatedHuman, play_episode


class ScriptedAssistant:
    """Knows the goal (a test may cheat). Each turn it places one block within its reach, walking toward
    the goal otherwise: the goal's colour if `helpful`, else a wrong one, for its first `turns` turns."""

    def __init__(self, env: BuildEnv, helpful: bool = True, turns: int = 10**9):
        self.env, self.helpful, self.turns, self.seen = env, helpful, turns, []

    def observe(self, obs: dict, human_action: Action) -> None:
        self.seen.append(human_action)

    def act(self, obs: dict) -> Action | None:
        if len(self.seen) > self.turns:
            return None
        goal, blocks, at = self.env.goal.blocks, obs["blocks"], tuple(obs["assistant"].tolist())
        cells = np.argwhere((blocks == 0) & (goal != 0) & support_mask(blocks))
        for x, y, z in cells.tolist():
            block = int(goal[x, y, z]) if self.helpful else int(goal[x, y, z]) % COLORS + 1
            if check_action(blocks, at, Action.place(x, y, z, block), "assistant") is None:
                return Action.place(x, y, z, block)
        if not len(cells):
            return None
        x, _, z = cells[0]
        dx, dz = int(np.sign(x - at[0])), int(np.sign(z - at[1]))
        return Action.move(dx, 0) if dx else Action.move(0, dz)


def test_settings_are_checked():
    for kwargs, needle in [({"skill": 1.5}, "skill is a probability"), ({"noise": -0.1}, "noise is a probability"),
                           ({"speed": 0}, "speed is actions per second"), ({"seed": -1}, "seed is a non-negative"),
                           ({"skill": "high"}, "skill is a probability")]:
        with pytest.raises(ValueError, match=needle):
            SimulatedHuman(**kwargs)


def test_a_perfect_human_finishes_every_goal_without_a_mistake():
    env, human = BuildEnv(), SimulatedHuman(skill=1.0, noise=0.0)
    for seed in range(30):
        result = play_episode(env, human, seed=seed)
        assert result["completed"] and result["human_wrong"] == 0, result
        assert Goal.generate(seed).count <= result["human_actions"] == result["steps"] < env.max_steps
        assert human.act(env.human_view()) == Action.noop()


def test_a_noisy_human_still_finishes_most_goals_and_fixes_its_mistakes():
    env, human = BuildEnv(), SimulatedHuman(skill=0.7, noise=0.15, seed=3)
    results = [play_episode(env, human, seed=seed) for seed in range(30)]
    assert sum(r["human_wrong"] for r in results) >= 30  # it did slip
    assert sum(r["completed"] for r in results) >= 27  # and finishing means every slip was taken down


def test_the_human_takes_down_wrong_blocks_and_leaves_right_ones():
    env, human = BuildEnv(), SimulatedHuman(skill=1.0, noise=0.0)
    env.reset(seed=4)
    goal = env.goal.blocks
    cell = tuple(np.argwhere(goal[:, 0, :])[0].tolist())
    first = (cell[0], 0, cell[1])
    env.positions["assistant"] = (cell[0], cell[1])
    env.step(Action.place(*first, int(goal[first]) % COLORS + 1), "assistant")  # wrong colour in a goal cell
    actions = []
    while env.blocks[first] != goal[first]:
        actions.append(human.act(env.human_view()))
        env.step(actions[-1])
    assert Action.remove(*first) in actions and actions[-1] == Action.place(*first, int(goal[first]))
    env.reset(seed=4)
    human.reset(4)
    env.positions["assistant"] = (cell[0], cell[1])
    env.step(Action.place(*first, int(goal[first])), "assistant")  # the right block: the human builds on
    for _ in range(goal.astype(bool).sum() * 3):
        if env.done:
            break
        action = human.act(env.human_view())
        assert (action.x, action.y, action.z) != first or action.kind == "move"
        env.step(action)
    assert env.complete


def test_a_helpful_assistant_saves_the_human_work_and_a_harmful_one_costs_it():
    env, human = BuildEnv(), SimulatedHuman(skill=1.0, noise=0.0)
    alone, helped, harmed = [], [], []
    for seed in range(20):
        alone.append(play_episode(env, human, seed=seed))
        helped.append(play_episode(env, human, ScriptedAssistant(env), seed=seed))
        harmed.append(play_episode(env, human, ScriptedAssistant(env, helpful=False, turns=5), seed=seed))
    for a, h, w in zip(alone, helped, harmed):
        assert h["completed"] and w["completed"]
        assert h["human_actions"] <= a["human_actions"] and h["assistant_correct"] > 0 and h["assistant_wrong"] == 0
        assert w["human_actions"] >= a["human_actions"] + w["assistant_wrong"] - REACH
    assert sum(h["human_actions"] for h in helped) < 0.7 * sum(a["human_actions"] for a in alone)
    assert sum(w["assistant_wrong"] for w in harmed) >= 20
    assert sum(w["human_actions"] for w in harmed) > sum(a["human_actions"] for a in alone) + 20


def test_episodes_repeat_and_run_fast():
    env = BuildEnv()
    first = [play_episode(env, SimulatedHuman(seed=9), seed=s) for s in range(10)]
    assert [play_episode(env, SimulatedHuman(seed=9), seed=s) for s in range(10)] == first
    biggest = max(range(200), key=lambda s: Goal.generate(s).count)
    assert Goal.generate(biggest).count >= 70
    start = time.perf_counter()
    result = play_episode(env, SimulatedHuman(skill=0.9, noise=0.05), seed=biggest)
    assert result["completed"] and time.perf_counter() - start < 0.2
    assert SIZE == env.blocks.shape
