"""The building game's rules (bitswarm.assist.game): what each player may do, the rewards, the episode's
end, the action encoding and the state snapshot; and a property test that random play keeps them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitswarm.assist.game import (
    CELLS, COLORS, ENDED, N_ACTIONS, NOT_STARTED, PLAYERS, SIZE, Action, BuildEnv, GameRuleError, decode_action,
    encode_action,
)
from bitswarm.assist.goals import Goal, build_order


def small_goal() -> Goal:
    """A column of two (colour 2) at x = z = 1 and a block of colour 3 beside it."""
    blocks = np.zeros(SIZE, np.int8)
    blocks[1, 0:2, 1] = 2
    blocks[2, 0, 1] = 3
    return Goal("test column", blocks)


@pytest.fixture
def env() -> BuildEnv:
    e = BuildEnv()
    e.reset(goal=small_goal())
    return e


def refused(env: BuildEnv, action: Action, player: str, message: str) -> None:
    """legal() gives a reason that says `message`, and step raises that reason and changes nothing."""
    reason = env.legal(action, player)
    assert reason is not None and message in reason, reason
    before = env.state()
    with pytest.raises(GameRuleError) as raised:
        env.step(action, player)
    assert str(raised.value) == reason and env.state() == before


def test_the_world_is_small_and_the_players_start_in_opposite_corners(env):
    assert SIZE == (8, 6, 8) and COLORS == 6 and CELLS == 384
    assert N_ACTIONS == CELLS * COLORS + CELLS + 4 + 1
    obs = env._obs()
    assert obs["human"].tolist() == [0, 0] and obs["assistant"].tolist() == [7, 7] and obs["step"] == 0
    assert obs["blocks"].dtype == np.int8 and obs["blocks"].shape == SIZE and not obs["blocks"].any()


def test_placements_the_rules_refuse(env):
    refused(env, Action.place(9, 0, 1, 1), "human", "place at (9, 0, 1): outside the 8x6x8 world (x 0-7, y 0-5, z 0-7)")
    refused(env, Action.place(1, 6, 1, 1), "human", "place at (1, 6, 1): outside the 8x6x8 world")
    refused(env, Action.place(1, 0, -1, 1), "human", "place at (1, 0, -1): outside the 8x6x8 world")
    refused(env, Action.place(1, 0, 1, 7), "human", "place at (1, 0, 1): block 7 is not a block type (1-6)")
    refused(env, Action.place(1, 0, 1, 0), "human", "place at (1, 0, 1): block 0 is not a block type (1-6)")
    refused(env, Action.place(5, 0, 5, 1), "human",
            "place at (5, 0, 5) by human standing at (0, 0): out of reach (reach is 3 cells in x and z)")
    refused(env, Action.place(1, 1, 1, 2), "human",
            "place at (1, 1, 1): nothing to rest on (a block needs the floor, y = 0, or a block on one of its faces)")
    env.step(Action.place(1, 0, 1, 2))
    refused(env, Action.place(1, 0, 1, 2), "human",
            "place at (1, 0, 1): the cell already holds block 2 (blocks go only into air)")
    refused(env, Action.place(1, 0, 1, 2), "assistant",
            "place at (1, 0, 1) by assistant standing at (7, 7): out of reach")


def test_placements_the_rules_allow(env):
    assert env.legal(Action.place(3, 5, 3, 1), "human") is not None  # in reach, but in the air
    assert env.legal(Action.place(3, 0, 3, 1), "human") is None  # reach is Chebyshev: 3 in x and 3 in z
    assert env.legal(Action.place(5, 0, 5, 1), "assistant") is None
    env.step(Action.place(1, 0, 1, 2))
    env.step(Action.place(1, 1, 1, 2))
    assert env.legal(Action.place(2, 1, 1, 4), "human") is None  # rests on its side neighbour
    assert env.legal(Action.place(1, 2, 1, 4), "human") is None  # on top
    env.step(Action.remove(1, 0, 1))  # blocks do not fall: (1, 1, 1) floats, and supports from above
    assert env.legal(Action.place(1, 0, 1, 2), "human") is None
    assert env.legal(Action.place(1, 2, 1, 2), "human") is None


def test_removals_moves_and_malformed_actions(env):
    refused(env, Action.remove(1, 0, 1), "human", "remove at (1, 0, 1): the cell is air (there is nothing to remove)")
    refused(env, Action.remove(1, 0, 1), "assistant",
            "remove at (1, 0, 1) by assistant standing at (7, 7): out of reach")
    refused(env, Action("remove", 1, 0, 1, 2), "human", "remove at (1, 0, 1): remove takes block 0, got 2")
    refused(env, Action.move(-1, 0), "human", "move (-1, 0, 0) by human standing at (0, 0): would leave the floor "
            "(x 0-7, z 0-7)")
    refused(env, Action.move(0, 1), "assistant",
            "move (0, 0, 1) by assistant standing at (7, 7): would leave the floor")
    refused(env, Action("move", 1, 0, 1), "human", "move (1, 0, 1): a move is one cell along x or z")
    refused(env, Action("move", 2, 0, 0), "human", "move (2, 0, 0): a move is one cell along x or z")
    refused(env, Action("noop", 1), "human", "noop takes x = y = z = block = 0")
    refused(env, Action("jump"), "human", "unknown action kind 'jump' (kinds: place, remove, move, noop)")
    refused(env, Action("place", 1.0, 0, 1, 1), "human", "the kind is a string and x, y, z, block are integers")
    refused(env, Action("place", True, 0, 1, 1), "human", "the kind is a string and x, y, z, block are integers")
    refused(env, Action.noop(), "robot", "unknown player 'robot' (players: human, assistant)")
    env.step(Action.move(1, 0), "human")
    env.step(Action.move(0, -1), "assistant")
    assert env.positions == {"human": (1, 0), "assistant": (7, 6)}


def test_rewards_are_the_change_in_score(env):
    steps = [(Action.place(1, 0, 1, 2), +1),  # the goal's block
             (Action.place(2, 0, 1, 5), -1),  # a goal cell, the wrong colour
             (Action.place(0, 0, 0, 1), -1),  # a cell the goal leaves empty
             (Action.remove(2, 0, 1), +1),  # a wrong block gone
             (Action.remove(1, 0, 1), -1),  # a right block gone
             (Action.move(1, 0), 0), (Action.noop(), 0)]
    total = 0
    for action, expected in steps:
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        assert reward == expected and info["score"] == env.score == total
        assert not terminated and not truncated
    assert env.score == -1  # the stray block at (0, 0, 0)


def test_the_episode_ends_when_the_goal_is_built_and_then_refuses_steps(env):
    order = build_order(env.goal.blocks)
    for i, cell in enumerate(order):
        _, reward, terminated, truncated, _ = env.step(Action.place(*cell, int(env.goal.blocks[cell])))
        assert reward == 1 and terminated == (i == len(order) - 1) and not truncated
    refused(env, Action.noop(), "human", ENDED)
    refused(env, Action.noop(), "assistant", ENDED)
    env.reset(goal=small_goal())
    assert env.legal(Action.noop()) is None and env.steps == 0 and not env.blocks.any()


def test_max_steps_truncates_and_a_finish_on_the_last_step_counts_as_success():
    env = BuildEnv(max_steps=3)
    env.reset(goal=small_goal())
    assert [env.step(Action.noop(), p)[2:4] for p in ("human", "assistant", "human")] == [
        (False, False), (False, False), (False, True)]
    refused(env, Action.noop(), "human", ENDED)
    env.reset(goal=small_goal())
    results = [env.step(Action.place(*c, int(env.goal.blocks[c]))) for c in build_order(env.goal.blocks)]
    assert results[-1][2:4] == (True, False)
    with pytest.raises(GameRuleError, match="max_steps must be a positive integer"):
        BuildEnv(max_steps=0)


def test_nothing_happens_before_reset():
    env = BuildEnv()
    with pytest.raises(GameRuleError, match=re.escape(NOT_STARTED)):
        env.step(Action.noop())
    with pytest.raises(GameRuleError, match=re.escape(NOT_STARTED)):
        env.state()


def test_reset_draws_the_goal_from_the_seed():
    env = BuildEnv()
    _, info = env.reset(seed=7)
    assert env.goal == Goal.generate(7) and info["goal_name"] == Goal.generate(7).name
    env.reset()
    assert env.goal == Goal.generate(8)  # no seed: the one after the last
    assert [BuildEnv().reset()[1]["goal_name"] for _ in range(2)] == [Goal.generate(0).name] * 2


def test_every_action_index_round_trips():
    actions = [decode_action(i) for i in range(N_ACTIONS)]
    assert [encode_action(a) for a in actions] == list(range(N_ACTIONS))
    assert len(set(actions)) == N_ACTIONS
    assert actions[0] == Action.place(0, 0, 0, 1) and actions[CELLS - 1] == Action.place(7, 5, 7, 1)
    assert actions[CELLS] == Action.place(0, 0, 0, 2)  # colour-major: (COLORS + 1, SX, SY, SZ) logits
    assert actions[COLORS * CELLS + (3 * 6 + 2) * 8 + 5] == Action.remove(3, 2, 5)
    assert actions[-5:] == [Action.move(1, 0), Action.move(-1, 0), Action.move(0, 1), Action.move(0, -1),
                            Action.noop()]
    for bad in (-1, N_ACTIONS, 1.0, True):
        with pytest.raises(GameRuleError, match=f"not an integer in 0-{N_ACTIONS - 1}"):
            decode_action(bad)
    with pytest.raises(GameRuleError, match="outside the 8x6x8 world"):
        encode_action(Action.place(8, 0, 0, 1))


def test_step_takes_an_index_and_observations_fit_the_spaces(env):
    assert env.action_space.n == N_ACTIONS
    obs, reward, *_ = env.step(encode_action(Action.place(1, 0, 1, 2)))
    assert reward == 1 and obs in env.observation_space
    assert "goal" not in obs and np.array_equal(env.human_view()["goal"], env.goal.blocks)
    obs["blocks"][:] = 5  # observations are copies
    assert env.score == 1
    assert decode_action(int(env.action_space.sample())) in [decode_action(i) for i in range(N_ACTIONS)]


def test_actions_travel_as_json():
    for a in (Action.place(1, 2, 3, 4), Action.remove(7, 5, 7), Action.move(0, -1), Action.noop(),
              Action.place(*np.array([1, 0, 2]), np.int64(3))):
        assert Action.from_json(json.loads(json.dumps(a.to_json()))) == a
    assert Action.from_json({"kind": "noop"}) == Action.noop()
    for bad, needle in [([], "a JSON object with a kind"), ({"x": 1}, "a JSON object with a kind"),
                        ({"kind": "noop", "colour": 1}, "a JSON object with a kind"),
                        ({"kind": "place", "x": "1", "block": 1}, "are integers"),
                        ({"kind": "place", "x": False, "block": 1}, "are integers"),
                        ({"kind": 3}, "the kind is a string"),
                        ({"kind": "place", "x": 8, "block": 1}, "outside the 8x6x8 world"),
                        ({"kind": "place", "block": 9}, "block 9 is not a block type"),
                        ({"kind": "move", "x": 1, "z": 1}, "a move is one cell along x or z")]:
        with pytest.raises(GameRuleError, match=re.escape(needle)):
            Action.from_json(bad)


def test_state_round_trips_and_bad_states_are_refused(env):
    for action, player in [(Action.place(1, 0, 1, 2), "human"), (Action.move(-1, 0), "assistant"),
                           (Action.place(0, 0, 0, 4), "human")]:
        env.step(action, player)
    snapshot = json.loads(json.dumps(env.state()))
    back = BuildEnv.from_state(snapshot)
    assert back.state() == env.state() and back.goal == env.goal and back.positions == env.positions
    assert back.step(Action.remove(0, 0, 0))[1:] == env.step(Action.remove(0, 0, 0))[1:]

    def broken(**change) -> dict:
        return {**snapshot, **change}

    floating = [0] * CELLS
    floating[(1 * 6 + 3) * 8 + 1] = 1
    for bad, needle in [({k: v for k, v in snapshot.items() if k != "step"}, "step: Field required"),
                        (broken(extra=1), "extra: Extra inputs are not permitted"),
                        (broken(blocks=snapshot["blocks"][:-1]), "blocks: List should have at least 384 items"),
                        (broken(blocks=[9] + snapshot["blocks"][1:]),
                         "blocks.0: Input should be less than or equal to 6"),
                        (broken(human=[8, 0]), "human.0: Input should be less than 8"),
                        (broken(assistant=[1]), "assistant.1: Field required"),
                        (broken(step=True), "step: Input should be a valid integer"),
                        (broken(step=401), "step 401 is past max_steps 400"),
                        (broken(goal=[0] * CELLS), "needs at least one block"),
                        (broken(goal=floating), "no order can build this goal"),
                        ("state", "not a game state")]:
        with pytest.raises(GameRuleError, match=re.escape(needle)):
            BuildEnv.from_state(bad)


def some_action(data, env: BuildEnv) -> Action:
    """Any decoded index; mixed in, so that blocks do get placed, refused, scored and taken away: moves and
    noop, goal cells in either their goal colour or any other, and removals of blocks in the world."""
    choices = [st.integers(0, N_ACTIONS - 1), st.integers(N_ACTIONS - 5, N_ACTIONS - 1),
               st.tuples(st.sampled_from(build_order(env.goal.blocks)), st.integers(0, COLORS)).map(
                   lambda cb: encode_action(Action.place(*cb[0], cb[1] or int(env.goal.blocks[cb[0]]))))]
    if env.blocks.any():
        choices.append(st.sampled_from(np.argwhere(env.blocks).tolist()).map(
            lambda c: encode_action(Action.remove(*c))))
    return decode_action(data.draw(st.one_of(choices)))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 1000), data=st.data())
def test_random_play_keeps_the_invariants(seed, data):
    env = BuildEnv(max_steps=12)  # short, so that some runs end and are refused after
    env.reset(seed=seed)
    total = 0
    for _ in range(data.draw(st.integers(0, 50))):
        player, action = data.draw(st.sampled_from(PLAYERS)), some_action(data, env)
        reason = env.legal(action, player)
        if reason is None:
            obs, reward, terminated, truncated, info = env.step(action, player)
            total += reward
            assert obs in env.observation_space and info["score"] == total
            assert terminated == np.array_equal(env.blocks, env.goal.blocks)
            assert truncated == (not terminated and env.steps == env.max_steps)
        else:
            before = env.state()
            with pytest.raises(GameRuleError) as raised:
                env.step(action, player)
            assert str(raised.value) == reason and env.state() == before
        assert env.score == total
        assert env.blocks.dtype == np.int8 and 0 <= env.blocks.min() and env.blocks.max() <= COLORS
