"""Goal structures drawn from a seed: houses, towers, walls, pyramids, steps, arches, bridges, L-shapes, pergolas.

Each kind has a builder that draws its sizes and colours from the seeded generator and returns the
structure in its own small box (x, y, z); Goal.generate keeps drawing until the block count is in
[MIN_BLOCKS, MAX_BLOCKS], then turns the box a random quarter-turn about y and sets it down at a random
spot on the floor. Every goal is checked buildable under the support rule (build_order), so a simulated
or real human can always finish it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bitswarm.assist.game import COLORS, SIZE, SX, SY, SZ, GameRuleError, support_mask

MIN_BLOCKS = 12  # fewer and an episode is over before an assistant can show anything
MAX_BLOCKS = 80  # more and a 400-step episode has little room for moves and fixes
TRIES = 200  # every builder lands in range far more often than 1 in 200; running out is a bug


@dataclass(frozen=True, eq=False)
class Goal:
    """A named target structure: blocks[x, y, z] is the block type wanted there (0 = air)."""

    name: str
    blocks: np.ndarray  # int8, shape SIZE, read-only

    def __post_init__(self):
        arr = np.asarray(self.blocks)
        if not isinstance(self.name, str) or not self.name:
            raise GameRuleError(f"a goal needs a name (a non-empty string), got {self.name!r}")
        if arr.shape != SIZE or arr.dtype.kind not in "iu":
            raise GameRuleError(f"goal {self.name!r}: blocks must be integers of shape {SIZE}, "
                                f"got {arr.dtype} {arr.shape}")
        if not arr.any() or arr.min() < 0 or arr.max() > COLORS:
            raise GameRuleError(f"goal {self.name!r}: needs at least one block, and block types 1-{COLORS} (0 = air)")
        arr = arr.astype(np.int8)  # a copy, read-only: the goal cannot change under an env that holds it
        arr.flags.writeable = False
        build_order(arr)
        object.__setattr__(self, "blocks", arr)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Goal) and self.name == other.name and np.array_equal(self.blocks, other.blocks)

    def __hash__(self) -> int:
        return hash((self.name, self.blocks.tobytes()))

    @property
    def kind(self) -> str:
        return self.name.split()[0]

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.blocks))

    @classmethod
    def generate(cls, seed: int) -> Goal:
        """The goal for `seed`: the same seed gives the same goal, byte for byte."""
        if type(seed) is not int or seed < 0:
            raise GameRuleError(f"a goal seed is a non-negative integer, got {seed!r}")
        rng = np.random.default_rng(seed)
        kind = KINDS[int(rng.integers(len(KINDS)))]
        for _ in range(TRIES):
            name, box = BUILDERS[kind](rng)
            if MIN_BLOCKS <= np.count_nonzero(box) <= MAX_BLOCKS:
                return cls(f"{kind} {name}", _set_down(box, rng))
        raise AssertionError(f"goal builder {kind!r} drew no size in range in {TRIES} tries (seed {seed})")


def build_order(goal_blocks: np.ndarray) -> list[tuple[int, int, int]]:
    """An order in which every goal block is supported when placed: waves up from the floor, each wave the
    goal cells the blocks so far support (bottom-up, then x, then z). Raises GameRuleError if none exists."""
    want = np.asarray(goal_blocks) != 0
    placed = np.zeros(SIZE, bool)
    order: list[tuple[int, int, int]] = []
    while len(wave := np.argwhere(want & ~placed & support_mask(placed))):
        wave = wave[np.lexsort((wave[:, 2], wave[:, 0], wave[:, 1]))]  # by y, then x, then z
        order += [(int(x), int(y), int(z)) for x, y, z in wave]
        placed[tuple(wave.T)] = True
    if len(order) < np.count_nonzero(want):
        stuck = [tuple(map(int, c)) for c in np.argwhere(want & ~placed)[:3]]
        raise GameRuleError(f"no order can build this goal: the blocks at {stuck}... rest on nothing "
                            "(each needs a chain of face neighbours down to the floor)")
    return order


def _set_down(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The box turned a random quarter-turn about y, at a random spot on the floor of the world."""
    box = np.rot90(box, int(rng.integers(4)), axes=(0, 2))
    bx, by, bz = box.shape
    ox, oz = int(rng.integers(SX - bx + 1)), int(rng.integers(SZ - bz + 1))
    world = np.zeros(SIZE, np.int8)
    world[ox:ox + bx, :by, oz:oz + bz] = box
    return world


def _colors(rng: np.random.Generator, n: int = 2) -> list[int]:
    """n distinct block types; the second equals the first half the time, so one-colour goals stay common."""
    picked = [int(c) + 1 for c in rng.choice(COLORS, size=n, replace=False)]
    return picked if rng.random() < 0.5 else [picked[0]] * n


def _ints(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer in [low, high], both ends included."""
    return int(rng.integers(low, high + 1))


def _house(rng):
    w, d, h = _ints(rng, 4, 6), _ints(rng, 4, 6), _ints(rng, 2, 3)
    roof = ("no", "flat", "pitched")[_ints(rng, 0, 2)]
    wall, top = _colors(rng)
    box = np.zeros((w, SY, d), np.int8)
    box[:, :h, :] = wall
    box[1:-1, :h, 1:-1] = 0  # hollow inside
    box[_ints(rng, 1, w - 2), 0:2, 0] = 0  # a door, two high, in the front wall
    for _ in range(_ints(rng, 0, 2)):  # windows at y = 1, never in a corner
        if rng.random() < 0.5:
            box[(0, w - 1)[_ints(rng, 0, 1)], 1, _ints(rng, 1, d - 2)] = 0
        else:
            box[_ints(rng, 1, w - 2), 1, d - 1] = 0
    if roof == "flat":
        box[:, h, :] = top
    for k in range((d + 1) // 2) if roof == "pitched" else ():
        box[(0, w - 1), h + k, k:d - k] = wall  # the gables carry each course of the roof
        box[:, h + k, (k, d - 1 - k)] = top
    return f"{w}x{d} {roof} roof", box


def _tower(rng):
    side, h = _ints(rng, 2, 4), _ints(rng, 3, SY)
    body, band = _colors(rng)
    box = np.full((side, h, side), body, np.int8)
    box[:, h - 1] = band
    if side > 2:
        box[1:-1, :, 1:-1] = 0  # hollow
        if rng.random() < 0.5:  # battlements: every other block of the top course, corners kept
            x, z = np.indices((side, side))
            box[:, h - 1][(x + z) % 2 == 1] = 0
    return f"{side}x{side} h{h}", box


def _wall(rng):
    length, h, thick = _ints(rng, 4, 8), _ints(rng, 2, 5), _ints(rng, 1, 2)
    body, top = _colors(rng)
    box = np.full((length, h, thick), body, np.int8)
    box[:, h - 1] = top
    if h >= 3 and rng.random() < 0.5:
        box[1::2, h - 1] = 0  # crenellated
    return f"{length} long h{h}", box


def _pyramid(rng):
    base = _ints(rng, 4, 6)
    colors = _colors(rng)
    box = np.zeros((base, SY, base), np.int8)
    for k in range((base + 1) // 2):
        box[k:base - k, k, k:base - k] = colors[k % 2]
    return f"base {base}", box


def _steps(rng):
    width, length = _ints(rng, 1, 3), _ints(rng, 3, SY)
    box = np.zeros((length, SY, width), np.int8)
    color = _colors(rng, 1)[0]
    for i in range(length):
        box[i, :i + 1] = color
    return f"{length} up {width} wide", box


def _arch(rng):
    pillar, span, h, depth = _ints(rng, 1, 2), _ints(rng, 2, 4), _ints(rng, 2, 4), _ints(rng, 1, 2)
    legs, beam = _colors(rng)
    box = np.zeros((2 * pillar + span, h + 1, depth), np.int8)
    box[:pillar, :h] = box[pillar + span:, :h] = legs
    box[:, h] = beam
    return f"span {span} h{h}", box


def _bridge(rng):
    rise, width = _ints(rng, 1, 3), _ints(rng, 1, 2)
    span = _ints(rng, 1, min(4, SX - 2 * rise))
    ramps, deck = _colors(rng)
    length = 2 * rise + span
    box = np.zeros((length, rise + 1, width), np.int8)
    for i in range(rise):  # solid stairs up at both ends; the deck between rests on their tops
        box[i, :i + 1] = box[length - 1 - i, :i + 1] = ramps
    box[rise - 1:length - rise + 1, rise] = deck
    return f"span {span} rise {rise}", box


def _l_shape(rng):
    a, b, h = _ints(rng, 3, 8), _ints(rng, 3, 8), _ints(rng, 1, 4)
    color = _colors(rng, 1)[0]
    box = np.zeros((a, h, b), np.int8)
    box[:, :, 0] = box[0, :, :] = color
    return f"{a}x{b} h{h}", box


def _pergola(rng):
    w, d, h = _ints(rng, 3, 8), _ints(rng, 3, 8), _ints(rng, 2, 4)
    posts, beams = _colors(rng)
    box = np.zeros((w, h + 1, d), np.int8)
    xs = [0, w - 1] + ([w // 2] if w >= 7 else [])  # a middle row of posts under a long span
    for x in xs:
        box[x, :h, (0, d - 1)] = posts
    box[:, h, (0, d - 1)] = beams
    box[xs, h, :] = beams  # cross beams over each pair of posts
    return f"{len(xs) * 2} posts {w}x{d} h{h}", box


BUILDERS: dict[str, Callable[[np.random.Generator], tuple[str, np.ndarray]]] = {
    "house": _house, "tower": _tower, "wall": _wall, "pyramid": _pyramid, "steps": _steps, "arch": _arch,
    "bridge": _bridge, "l-shape": _l_shape, "pergola": _pergola,
}
KINDS = tuple(BUILDERS)
