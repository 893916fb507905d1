"""The building game's world and rules: an 8x6x8 grid of blocks, two players, and what each may do.

After BlockAssist / AssistanceZero (arXiv 2504.07091): a human builds a goal structure that only the human
sees, and an assistant in the same world learns to help. The world is small on purpose: every block stays
visible in an isometric browser view and a policy reads only 8*6*8 = 384 cells, while a 6x6 house with a
pitched roof still fits. BuildEnv.legal is the referee for a UI or server: it says in words why an action
is not allowed, and step raises GameRuleError with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated

import numpy as np
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from bitswarm.errors import BitswarmError

if TYPE_CHECKING:
    from bitswarm.assist.goals import Goal

SIZE = (8, 6, 8)  # (x, y = height, z)
SX, SY, SZ = SIZE
CELLS = SX * SY * SZ
COLORS = 6  # block types 1..COLORS; 0 is air
REACH = 3  # cells in x and z (Chebyshev) from the acting player's floor position, at any height
PLAYERS = ("human", "assistant")
START = {"human": (0, 0), "assistant": (SX - 1, SZ - 1)}  # (x, z): opposite corners of the floor
KINDS = ("place", "remove", "move", "noop")
MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))  # (dx, dz), in their encoding order
# Colour-major, so the first CELLS * (COLORS + 1) logits of a policy are a (COLORS + 1, SX, SY, SZ) volume:
# channels 0..COLORS-1 place block 1..COLORS, channel COLORS removes; then the moves, then noop.
N_ACTIONS = CELLS * COLORS + CELLS + len(MOVES) + 1
WORLD = f"the {SX}x{SY}x{SZ} world (x 0-{SX - 1}, y 0-{SY - 1}, z 0-{SZ - 1})"
NOT_STARTED, ENDED = "no episode yet; call reset()", "the episode has ended; call reset()"


class GameRuleError(BitswarmError):
    """An action or state the rules do not allow; the message names the rule and what is allowed."""


@dataclass(frozen=True)
class Action:
    """One player's action. place/remove: the cell (x, y, z); move: (dx, 0, dz), one cell along x or z.
    Built unchecked, so that a UI can be told why an action is not allowed (check_shape, BuildEnv.legal)."""

    kind: str
    x: int = 0
    y: int = 0
    z: int = 0
    block: int = 0  # 1..COLORS for place, 0 otherwise

    def __post_init__(self):
        for f in fields(self):  # numpy integers (from argwhere, say) become ints, so to_json stays JSON
            if isinstance(v := getattr(self, f.name), np.integer):
                object.__setattr__(self, f.name, int(v))

    @classmethod
    def place(cls, x: int, y: int, z: int, block: int) -> Action:
        return cls("place", x, y, z, block)

    @classmethod
    def remove(cls, x: int, y: int, z: int) -> Action:
        return cls("remove", x, y, z)

    @classmethod
    def move(cls, dx: int, dz: int) -> Action:
        return cls("move", dx, 0, dz)

    @classmethod
    def noop(cls) -> Action:
        return cls("noop")

    def to_json(self) -> dict:
        return {"kind": self.kind, "x": self.x, "y": self.y, "z": self.z, "block": self.block}

    @classmethod
    def from_json(cls, data: object) -> Action:
        """An action from a client; missing coordinates are 0, anything malformed is a GameRuleError."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or "kind" not in data or not set(data) <= names:
            raise GameRuleError(f"an action is a JSON object with a kind and any of x, y, z, block; got {data!r}")
        action = cls(**data)
        if (reason := check_shape(action)) is not None:
            raise GameRuleError(reason)
        return action


def _what(a: Action) -> str:
    return f"{a.kind} ({a.x}, {a.y}, {a.z})" if a.kind == "move" else f"{a.kind} at ({a.x}, {a.y}, {a.z})"


def check_shape(a: Action) -> str | None:
    """Why an action is malformed whatever the world holds (kind, types, block id, move size, bounds), or None."""
    if not isinstance(a.kind, str) or not all(type(v) is int for v in (a.x, a.y, a.z, a.block)):
        return f"action {a!r}: the kind is a string and x, y, z, block are integers"
    if a.kind not in KINDS:
        return f"unknown action kind {a.kind!r} (kinds: {', '.join(KINDS)})"
    if a.kind == "noop":
        return None if (a.x, a.y, a.z, a.block) == (0, 0, 0, 0) else "noop takes x = y = z = block = 0"
    if a.kind == "move":
        if (abs(a.x), a.y, abs(a.z), a.block) in ((1, 0, 0, 0), (0, 0, 1, 0)):
            return None
        return f"{_what(a)}: a move is one cell along x or z, (±1, 0, 0) or (0, 0, ±1), with block 0"
    if a.kind == "place" and not 1 <= a.block <= COLORS:
        return f"{_what(a)}: block {a.block} is not a block type (1-{COLORS})"
    if a.kind == "remove" and a.block != 0:
        return f"{_what(a)}: remove takes block 0, got {a.block}"
    if not (0 <= a.x < SX and 0 <= a.y < SY and 0 <= a.z < SZ):
        return f"{_what(a)}: outside {WORLD}"
    return None


def support_mask(blocks: np.ndarray) -> np.ndarray:
    """The support rule, for every cell at once: a block may rest on the floor (y = 0) or on a block
    across one of its six faces. True where a block placed now would be supported (occupied or not)."""
    solid = blocks != 0
    mask = np.zeros(SIZE, bool)
    mask[:, 0, :] = True
    mask[1:] |= solid[:-1]
    mask[:-1] |= solid[1:]
    mask[:, 1:] |= solid[:, :-1]
    mask[:, :-1] |= solid[:, 1:]
    mask[:, :, 1:] |= solid[:, :, :-1]
    mask[:, :, :-1] |= solid[:, :, 1:]
    return mask


def check_action(blocks: np.ndarray, at: tuple[int, int], a: Action, player: str = "human") -> str | None:
    """Why `player`, standing at `at` = (x, z), may not take action `a` in this world, or None if it may.
    The one statement of the rules: BuildEnv.legal and the simulated humans both ask it."""
    if (reason := check_shape(a)) is not None or a.kind == "noop":
        return reason
    who = f"by {player} standing at ({at[0]}, {at[1]})"
    if a.kind == "move":
        if 0 <= at[0] + a.x < SX and 0 <= at[1] + a.z < SZ:
            return None
        return f"{_what(a)} {who}: would leave the floor (x 0-{SX - 1}, z 0-{SZ - 1})"
    if max(abs(a.x - at[0]), abs(a.z - at[1])) > REACH:
        return f"{_what(a)} {who}: out of reach (reach is {REACH} cells in x and z)"
    held = int(blocks[a.x, a.y, a.z])
    if a.kind == "remove":
        return None if held else f"{_what(a)}: the cell is air (there is nothing to remove)"
    if held:
        return f"{_what(a)}: the cell already holds block {held} (blocks go only into air)"
    if not support_mask(blocks)[a.x, a.y, a.z]:
        return f"{_what(a)}: nothing to rest on (a block needs the floor, y = 0, or a block on one of its faces)"
    return None


def score(blocks: np.ndarray, goal: np.ndarray) -> int:
    """Blocks that match the goal minus blocks that do not; a step's reward is the change in it."""
    filled = blocks != 0
    right = int(np.count_nonzero(filled & (blocks == goal)))
    return right - (int(np.count_nonzero(filled)) - right)


def _cell_score(block: int, want: int) -> int:
    return 0 if block == 0 else 1 if block == want else -1


def encode_action(a: Action) -> int:
    """The action's index in 0..N_ACTIONS-1 (layout at N_ACTIONS); a malformed action is a GameRuleError."""
    if (reason := check_shape(a)) is not None:
        raise GameRuleError(reason)
    cell = (a.x * SY + a.y) * SZ + a.z
    if a.kind == "place":
        return (a.block - 1) * CELLS + cell
    if a.kind == "remove":
        return COLORS * CELLS + cell
    if a.kind == "move":
        return (COLORS + 1) * CELLS + MOVES.index((a.x, a.z))
    return N_ACTIONS - 1


def decode_action(i: int) -> Action:
    """The action with index i; the inverse of encode_action."""
    if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not 0 <= i < N_ACTIONS:
        raise GameRuleError(f"action index {i!r}: not an integer in 0-{N_ACTIONS - 1}")
    channel, cell = divmod(int(i), CELLS)
    if channel > COLORS:
        return Action.move(*MOVES[cell]) if cell < len(MOVES) else Action.noop()
    x, rest = divmod(cell, SY * SZ)
    y, z = divmod(rest, SZ)
    return Action.remove(x, y, z) if channel == COLORS else Action.place(x, y, z, channel + 1)


Cells = Annotated[list[Annotated[StrictInt, Field(ge=0, le=COLORS)]], Field(min_length=CELLS, max_length=CELLS)]
Spot = tuple[Annotated[StrictInt, Field(ge=0, lt=SX)], Annotated[StrictInt, Field(ge=0, lt=SZ)]]


class _State(BaseModel):
    """BuildEnv.state()'s layout; grids are flat in (x, y, z) order, the order of encode_action's cells."""

    model_config = ConfigDict(extra="forbid")
    goal_name: StrictStr
    goal: Cells
    blocks: Cells
    human: Spot
    assistant: Spot
    step: Annotated[StrictInt, Field(ge=0)]
    max_steps: Annotated[StrictInt, Field(ge=1)]


class BuildEnv:
    """The game as a gymnasium-style environment. Both players act through step, in whatever turns the
    caller keeps; every action of either counts one step. The episode ends when the grid equals the goal
    (terminated) or after max_steps actions (truncated; not both: finishing on the last step is a success)."""

    def __init__(self, max_steps: int = 400):
        if type(max_steps) is not int or max_steps < 1:
            raise GameRuleError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.max_steps = max_steps
        floor = spaces.Box(0, np.array([SX - 1, SZ - 1]), (2,), np.int64)
        self.observation_space = spaces.Dict({"blocks": spaces.Box(0, COLORS, SIZE, np.int8), "human": floor,
                                              "assistant": floor, "step": spaces.Discrete(max_steps + 1)})
        self.action_space = spaces.Discrete(N_ACTIONS)  # step also takes these indices
        self.goal: Goal | None = None
        self.blocks: np.ndarray | None = None
        self.positions: dict[str, tuple[int, int]] = dict(START)
        self.steps = 0
        self._next_seed = 0  # reset() without a seed takes 0, 1, 2, ...: runs repeat

    def reset(self, seed: int | None = None, goal: Goal | None = None) -> tuple[dict, dict]:
        """An empty world and a goal: `goal` if given, else Goal.generate(seed)."""
        if goal is None:
            from bitswarm.assist.goals import Goal  # goals builds on this module's rules; imported on use

            goal = Goal.generate(self._next_seed if seed is None else seed)
        if seed is not None:
            self._next_seed = seed
        self._next_seed += 1
        self.goal, self.blocks, self.positions, self.steps = goal, np.zeros(SIZE, np.int8), dict(START), 0
        return self._obs(), {"goal_name": goal.name, "score": 0}

    @property
    def complete(self) -> bool:
        return self.blocks is not None and np.array_equal(self.blocks, self.goal.blocks)

    @property
    def done(self) -> bool:
        return self.complete or self.steps >= self.max_steps

    @property
    def score(self) -> int:
        return score(self.blocks, self.goal.blocks)

    def legal(self, action: Action, player: str = "human") -> str | None:
        """None if `player` may take `action` now, else why not (the message step would raise)."""
        if player not in PLAYERS:
            return f"unknown player {player!r} (players: {', '.join(PLAYERS)})"
        if self.blocks is None or self.done:
            return NOT_STARTED if self.blocks is None else ENDED
        return check_action(self.blocks, self.positions[player], action, player)

    def step(self, action: Action | int, player: str = "human") -> tuple[dict, int, bool, bool, dict]:
        if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
            action = decode_action(action)
        if (reason := self.legal(action, player)) is not None:
            raise GameRuleError(reason)
        reward = 0
        if action.kind == "move":
            x, z = self.positions[player]
            self.positions[player] = (x + action.x, z + action.z)
        elif action.kind != "noop":
            cell = (action.x, action.y, action.z)
            want = int(self.goal.blocks[cell])
            reward = _cell_score(action.block, want) - _cell_score(int(self.blocks[cell]), want)
            self.blocks[cell] = action.block
        self.steps += 1
        terminated = self.complete
        return self._obs(), reward, terminated, not terminated and self.done, {"score": self.score}

    def observation(self) -> dict:
        """What both players see now (the goal aside)."""
        return self._obs()

    def _obs(self) -> dict:
        if self.blocks is None:
            raise GameRuleError(NOT_STARTED)
        return {"blocks": self.blocks.copy(), "human": np.array(self.positions["human"], np.int64),
                "assistant": np.array(self.positions["assistant"], np.int64), "step": self.steps}

    def human_view(self) -> dict:
        """What the human sees: the observation and the goal (which the assistant never gets)."""
        return {**self._obs(), "goal": self.goal.blocks.copy()}

    def state(self) -> dict:
        """A JSON-able snapshot; from_state restores it."""
        self._obs()  # refuses before reset
        return {"goal_name": self.goal.name, "goal": self.goal.blocks.ravel().tolist(),
                "blocks": self.blocks.ravel().tolist(), "human": list(self.positions["human"]),
                "assistant": list(self.positions["assistant"]), "step": self.steps, "max_steps": self.max_steps}

    @classmethod
    def from_state(cls, data: dict) -> BuildEnv:
        """The env a state() snapshot describes; anything malformed, or a goal no order can build, is refused."""
        from bitswarm.assist.goals import Goal  # goals builds on this module's rules; imported on use

        try:
            s = _State.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "state"
            raise GameRuleError(f"not a game state: {where}: {first['msg']} "
                                f"({exc.error_count()} problem(s) in all)") from None
        if s.step > s.max_steps:
            raise GameRuleError(f"not a game state: step {s.step} is past max_steps {s.max_steps}")
        env = cls(s.max_steps)
        env.goal = Goal(s.goal_name, np.array(s.goal, np.int8).reshape(SIZE))
        env.blocks = np.array(s.blocks, np.int8).reshape(SIZE)
        env.positions, env.steps = {"human": s.human, "assistant": s.assistant}, s.step
        return env
