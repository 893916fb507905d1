"""The contracts' numeric codes, importable without web3 (the CLI's help and light commands use them)."""

from __future__ import annotations

# Role bits of NodeRegistry.
ROLE_SOLVER, ROLE_VERIFIER, ROLE_REFEREE, ROLE_SWARM = 1, 2, 4, 8
ROLE_NAMES = {"solver": ROLE_SOLVER, "verifier": ROLE_VERIFIER, "referee": ROLE_REFEREE, "swarm": ROLE_SWARM}
KINDS = {"train": 0, "infer": 1, "eval": 2}
# Status 8 was "draw": a referee vote now runs on until it has a majority, so none is issued.
JOB_STATUS = {1: "open", 2: "claimed", 3: "committed", 4: "disputed", 5: "done", 6: "failed", 7: "cancelled"}
DISPUTE_PHASE = {0: "none", 1: "step", 2: "trace", 3: "op", 4: "vote", 5: "settled"}
