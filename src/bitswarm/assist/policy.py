"""The assistant's decision: infer the goal from what the human builds, then place only what it is sure of.

Better than imitation: a behaviour-cloned policy copies the human's next move, mistakes and all, and
plays wherever the human was going to play. This one acts on the goal head instead: for every empty,
supported cell it predicts the goal's block, and it places a block only where that prediction is at
least `confidence` likely and the human is not about to edit that cell (the `next` head; taking the
same cell would only race the human). Among
those it takes the surest, within reach, else walks one cell toward it. It removes only blocks it
placed itself that it has since come to doubt (below 1 - confidence): it never undoes the human's work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bitswarm.assist.features import NEXT_NONE, NEXT_REMOVE, cell_features
from bitswarm.assist.game import REACH, Action, check_action, support_mask
from bitswarm.repro.policy import PolicyNet

CONFIDENCE = 0.8


class AssistantPolicy:
    def __init__(self, net: PolicyNet, confidence: float = CONFIDENCE, imitate: bool = False):
        """`imitate`: the behaviour-cloning baseline instead (do the human's likeliest next edit)."""
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must lie in [0.5, 1), got {confidence}")
        self.net, self.confidence, self.imitate = net, confidence, imitate

    def beliefs(self, blocks: np.ndarray, cells: np.ndarray, history: Sequence[Action]) -> tuple[np.ndarray, np.ndarray]:
        """Per cell: (goal-block probabilities (k, COLORS + 1), the human's next action there (k, COLORS + 2))."""
        p = self.net.probabilities(cell_features(blocks, cells, history))
        return p["goal"][:, 0], p["next"][:, 0]

    def choose(self, obs: dict, history: Sequence[Action], own: set[tuple[int, int, int]],
               refused: set[tuple[int, int, int]] = frozenset()) -> Action | None:
        """The next action: `own` are the cells holding blocks it placed, `refused` the cells where the
        human took its block down (evidence stronger than any belief: it never places there again)."""
        blocks = np.asarray(obs["blocks"])
        at = (int(obs["assistant"][0]), int(obs["assistant"][1]))
        empty = (blocks == 0) & support_mask(blocks)
        for cell in refused:
            empty[cell] = False
        mine = sorted(c for c in own if blocks[c])
        cells = np.concatenate([np.array(mine, np.int64).reshape(-1, 3), np.argwhere(empty)])
        if not len(cells):
            return None
        goal, human_next = self.beliefs(blocks, cells, history)
        for (x, y, z), p in zip(cells[: len(mine)], goal[: len(mine)]):
            # its own doubted blocks first: a wrong block costs the human a removal
            a = Action.remove(x, y, z)
            if p[blocks[x, y, z]] < 1 - self.confidence and check_action(blocks, at, a, "assistant") is None:
                return a
        cells, goal, human_next = cells[len(mine):], goal[len(mine):], human_next[len(mine):]
        if self.imitate:
            return self._imitate(cells, human_next, at)
        colour = goal[:, 1:].argmax(1) + 1
        sure = goal[np.arange(len(cells)), colour]
        racing = 1 - human_next[:, NEXT_NONE] > 0.5  # the human's likely next cell is left to the human
        ok = (sure >= self.confidence) & ~racing
        if not ok.any():
            return None
        idx = np.flatnonzero(ok)
        idx = idx[np.lexsort((cells[idx, 2], cells[idx, 1], cells[idx, 0], -sure[idx]))]  # surest; ties by cell
        for i in idx:
            x, y, z = cells[i]
            if max(abs(x - at[0]), abs(z - at[1])) <= REACH:
                return Action.place(x, y, z, colour[i])
        x, _, z = cells[idx[0]]
        dx, dz = x - at[0], z - at[1]
        return Action.move(int(np.sign(dx)), 0) if abs(dx) >= abs(dz) else Action.move(0, int(np.sign(dz)))

    @staticmethod
    def _imitate(cells: np.ndarray, human_next: np.ndarray, at: tuple[int, int]) -> Action | None:
        """Behaviour cloning alone: place what the human would most likely place next, in reach."""
        near = np.maximum(np.abs(cells[:, 0] - at[0]), np.abs(cells[:, 2] - at[1])) <= REACH
        if not near.any():
            return None
        place = human_next[:, 1:NEXT_REMOVE]
        i = int(np.argmax(np.where(near, place.max(1), -1)))
        x, y, z = cells[i]
        return Action.place(x, y, z, int(place[i].argmax()) + 1)
