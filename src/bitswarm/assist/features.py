"""What the assistant's policy reads and predicts, one row per cell: local features and two heads.

A row describes one cell of the world as the assistant sees it, the same way wherever the cell is
(the goals are placed and turned at random, so a rule learnt about a wall at one spot holds at every
spot: one episode teaches hundreds of rows instead of one). Feature ids (repro.policy one-hot):
    patch    the block in each cell of the 5 x 4 x 5 box around it (x, z +-2; y -2..+1): air, a
             colour, or outside the world
    height   the cell's y
    recent   the human's last HISTORY placements and removals, as offsets from the cell (|d| <= 3 per
             axis, else "far"): where the human is building now is the evidence for the goal
    colours  the colours standing in the world
    layers   how full the layer below and the cell's own layer are (bucketed block counts)
Heads per row:
    goal    the goal's block in this cell (COLORS + 1 classes: AssistanceZero's goal prediction)
    next    the human's next action at this cell: none, place colour 1..COLORS, or remove
            (behaviour cloning, factored over cells)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bitswarm.assist.game import COLORS, SIZE, SX, SY, SZ, Action
from bitswarm.repro.policy import Head, PolicyConfig

HISTORY = 4
DX, DY_LOW, DY_HIGH = 2, 2, 1
OFFSETS = np.array([(dx, dy, dz) for dx in range(-DX, DX + 1) for dy in range(-DY_LOW, DY_HIGH + 1)
                    for dz in range(-DX, DX + 1)])
STATES = COLORS + 2                    # air, colours 1..COLORS, outside
NEAR = 3                               # recent actions within +-NEAR per axis get an offset id
REL = (2 * NEAR + 1) ** 3 + 1          # offset ids, then "far"
BUCKETS = (0, 1, 5, 10, 20)            # block counts of a layer: 0, 1-4, 5-9, 10-19, 20+ (and "no layer")

_PATCH = 0
_HEIGHT = _PATCH + len(OFFSETS) * STATES
_RECENT = _HEIGHT + SY
_COLOURS = _RECENT + 2 * REL
_BELOW = _COLOURS + COLORS
_LAYER = _BELOW + len(BUCKETS) + 1
FEATURES = _LAYER + len(BUCKETS)
ACTIVE = len(OFFSETS) + 1 + HISTORY + COLORS + 2
NEXT_NONE, NEXT_REMOVE = 0, COLORS + 1
HEADS = (Head("goal", 1, COLORS + 1), Head("next", 1, COLORS + 2, 0.5))
HIDDEN = 128


def policy_config(hidden: int = HIDDEN) -> PolicyConfig:
    return PolicyConfig(features=FEATURES, active=ACTIVE, hidden=hidden, heads=HEADS)


def _bucket(counts: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.array(BUCKETS[1:]), counts, side="right")


def recent_edits(history: Sequence[Action]) -> list[Action]:
    """The human's last HISTORY placements and removals, newest first."""
    return [a for a in history if a.kind in ("place", "remove")][-HISTORY:][::-1]


def cell_features(blocks: np.ndarray, cells: np.ndarray, history: Sequence[Action]) -> np.ndarray:
    """(k, ACTIVE) feature ids of `cells` (k, 3) in the world `blocks`, after the human's `history`."""
    blocks = np.asarray(blocks, np.int64)
    cells = np.asarray(cells, np.int64).reshape(-1, 3)
    k = len(cells)
    ids = np.full((k, ACTIVE), -1, np.int64)
    padded = np.full((SX + 2 * DX, SY + DY_LOW + DY_HIGH, SZ + 2 * DX), STATES - 1, np.int64)
    padded[DX:DX + SX, DY_LOW:DY_LOW + SY, DX:DX + SZ] = blocks
    at = cells[:, None, :] + OFFSETS[None] + np.array([DX, DY_LOW, DX])
    patch = padded[at[..., 0], at[..., 1], at[..., 2]]  # (k, offsets)
    ids[:, : len(OFFSETS)] = _PATCH + np.arange(len(OFFSETS)) * STATES + patch
    col = len(OFFSETS)
    ids[:, col] = _HEIGHT + cells[:, 1]
    col += 1
    for j, a in enumerate(recent_edits(history)):
        d = np.array([a.x, a.y, a.z]) - cells
        far = np.abs(d).max(axis=1) > NEAR
        rel = np.where(far, REL - 1, (((d[:, 0] + NEAR) * (2 * NEAR + 1) + d[:, 1] + NEAR) * (2 * NEAR + 1)
                                      + d[:, 2] + NEAR))
        ids[:, col + j] = _RECENT + (a.kind == "remove") * REL + rel
    col += HISTORY
    present = [c for c in range(1, COLORS + 1) if (blocks == c).any()]
    for j, c in enumerate(present):
        ids[:, col + j] = _COLOURS + c - 1
    col += COLORS
    per_layer = np.count_nonzero(blocks, axis=(0, 2))
    y = cells[:, 1]
    below = np.where(y > 0, _bucket(per_layer[np.maximum(y - 1, 0)]), len(BUCKETS))
    ids[:, col] = _BELOW + below
    ids[:, col + 1] = _LAYER + _bucket(per_layer[y])
    return ids


def next_target(cells: np.ndarray, action: Action) -> np.ndarray:
    """The `next` head's class per cell for the human's action `action`."""
    cells = np.asarray(cells).reshape(-1, 3)
    t = np.full(len(cells), NEXT_NONE, np.int64)
    if action.kind in ("place", "remove"):
        hit = (cells == np.array([action.x, action.y, action.z])).all(axis=1)
        t[hit] = action.block if action.kind == "place" else NEXT_REMOVE
    return t


def all_cells() -> np.ndarray:
    return np.argwhere(np.ones(SIZE, bool))
