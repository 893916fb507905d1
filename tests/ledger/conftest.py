"""Shared ledger fixtures: the four contracts deployed once per session, each test isolated in a
boa anchor, plus helpers that build Merkle trees and play the dispute game honestly."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract

from bitswarm.ledger.compile import CONTRACTS_DIR
from bitswarm.verify.merkle import merkle_root, proof

E18 = 10**18
MAX_UINT = 2**256 - 1
ZERO = "0x" + "00" * 20

COMMIT_TIMEOUT = 3600
ROUND_TIMEOUT = 600
VOTE_TIMEOUT = 1800
REFEREE_MIN_STAKE = 100 * E18
MIN_STAKE = 10 * E18  # the market's floor on a job's solver stake
SWARM_STAKE = 10 * E18
UNBOND_DELAY = 7 * 86400
ROUND_DURATION = 900
CHALLENGE_WINDOW = 86400

MINTED = 10_000 * E18  # per actor
STAKED = 1_000 * E18  # per registered actor
BOUNTY = 50 * E18
JOB_STAKE = 20 * E18
OPS_PER_LEAF = 5  # post_job's default: the op traces the tests build have this many ops

SOLVER, VERIFIER, REFEREE, SWARM = 1, 2, 4, 8
OPEN, CLAIMED, COMMITTED, DISPUTED, DONE, FAILED, CANCELLED = range(1, 8)  # 8 (draw) is retired
NONE, STEP, TRACE, OP, VOTE, SETTLED = range(6)


# titanoboa 0.2.8 decodes every memory local of a reverting frame for its stack trace; a String
# local not yet assigned at the revert point holds stale bytes and the decode raises
# UnicodeDecodeError instead of the revert. Drop the frame detail in that case.
_debug_frame = VyperContract.debug_frame


def _tolerant_debug_frame(self, computation=None):
    try:
        return _debug_frame(self, computation)
    except UnicodeDecodeError:
        return None


VyperContract.debug_frame = _tolerant_debug_frame


def contract_path(name: str) -> str:
    return str(CONTRACTS_DIR / f"{name}.vy")


@dataclass
class Ledger:
    token: object
    registry: object
    market: object
    swarm: object
    deployer: str
    poster: str
    solver: str
    challenger: str
    referees: list
    outsider: str  # holds tokens but never registers
    actors: list = field(default_factory=list)


def deploy_ledger() -> Ledger:
    """Deploy and wire the contracts, then fund, register and stake the cast of actors."""
    deployer = boa.env.eoa
    token = boa.load(contract_path("Token"), "bitswarm credits", "BITS", deployer)
    registry = boa.load(contract_path("NodeRegistry"), token.address, UNBOND_DELAY)
    market = boa.load(
        contract_path("JobMarket"),
        token.address,
        registry.address,
        COMMIT_TIMEOUT,
        ROUND_TIMEOUT,
        VOTE_TIMEOUT,
        REFEREE_MIN_STAKE,
        MIN_STAKE,
    )
    swarm = boa.load(
        contract_path("SwarmCoordinator"), registry.address, ROUND_DURATION, SWARM_STAKE, VOTE_TIMEOUT, REFEREE_MIN_STAKE
    )
    registry.set_slashers(market.address, swarm.address)

    g = boa.env.generate_address
    cast = {
        "poster": (g("poster"), 0),
        "solver": (g("solver"), SOLVER | VERIFIER),
        "challenger": (g("challenger"), SOLVER | VERIFIER),
        "referee0": (g("referee0"), REFEREE),
        "referee1": (g("referee1"), REFEREE),
        "referee2": (g("referee2"), REFEREE | SWARM),
        "outsider": (g("outsider"), 0),
    }
    for i, (who, roles) in enumerate(cast.values()):
        token.mint(who, MINTED)
        token.approve(registry.address, MAX_UINT, sender=who)
        token.approve(market.address, MAX_UINT, sender=who)
        if roles:
            registry.register(f"peer-{i}", roles, sender=who)
            registry.stake(STAKED, sender=who)
    c = {k: v[0] for k, v in cast.items()}
    return Ledger(
        token=token,
        registry=registry,
        market=market,
        swarm=swarm,
        deployer=deployer,
        poster=c["poster"],
        solver=c["solver"],
        challenger=c["challenger"],
        referees=[c["referee0"], c["referee1"], c["referee2"]],
        outsider=c["outsider"],
        actors=list(c.values()),
    )


@pytest.fixture(scope="session")
def ledger_base() -> Ledger:
    return deploy_ledger()


@pytest.fixture
def ledger(ledger_base) -> Ledger:
    # Every test starts from the freshly deployed state and leaves no trace behind.
    with boa.env.anchor():
        yield ledger_base


# ---------------------------------------------------------------- Merkle helpers


def proof_bytes(leaves_hex: list[str], index: int) -> list[bytes]:
    """The reference proof for leaf `index`, as the contract takes it: sibling hashes only."""
    return [bytes.fromhex(sib) for _side, sib in proof(leaves_hex, index)]


def root_bytes(leaves_hex: list[str]) -> bytes:
    return bytes.fromhex(merkle_root(leaves_hex))


def random_leaves(rng: random.Random, n: int) -> list[str]:
    return [rng.randbytes(32).hex() for _ in range(n)]


def diverge(rng: random.Random, leaves: list[str], k: int) -> list[str]:
    """Equal to `leaves` before index k, different at k and after (a computation that went wrong
    at step k never comes back on track)."""
    return leaves[:k] + random_leaves(rng, len(leaves) - k)


# ---------------------------------------------------------------- market helpers


def post_job(
    lg: Ledger, num_leaves=4, bounty=BOUNTY, stake=JOB_STAKE, window=CHALLENGE_WINDOW, ops_per_leaf=OPS_PER_LEAF,
    verify_fee=0,
) -> int:
    return lg.market.post_job(
        b"\x11" * 32, 0, num_leaves, ops_per_leaf, bounty, stake, window, verify_fee, sender=lg.poster
    )


def last_leaf(leaves_hex: list[str]) -> tuple[bytes, list[bytes]]:
    """A tree's last leaf (the result: leaves are cumulative) and its proof, as commit_result and
    challenge take them."""
    n = len(leaves_hex)
    return bytes.fromhex(leaves_hex[-1]), proof_bytes(leaves_hex, n - 1)


def commit(lg: Ledger, job_id: int, leaves: list[str], cid: bytes = b"\x22" * 32, sender: str | None = None):
    """The solver commits `leaves`: their root, and the last leaf with its proof."""
    return lg.market.commit_result(job_id, root_bytes(leaves), cid, *last_leaf(leaves), sender=sender or lg.solver)


def challenge(lg: Ledger, job_id: int, leaves: list[str], sender: str | None = None):
    """A verifier challenges with `leaves`: their root, and the last leaf with its proof."""
    return lg.market.challenge(job_id, root_bytes(leaves), *last_leaf(leaves), sender=sender or lg.challenger)


def committed_job(lg: Ledger, leaves: list[str], **kw) -> int:
    job_id = post_job(lg, num_leaves=len(leaves), **kw)
    lg.market.claim_job(job_id, sender=lg.solver)
    commit(lg, job_id, leaves)
    return job_id


def disputed_job(lg: Ledger, solver_leaves: list[str], challenger_leaves: list[str], **kw) -> int:
    """A job committed from `solver_leaves` and challenged from `challenger_leaves` (whose last
    leaves must differ); the contract's latest logs are the challenge's."""
    job_id = committed_job(lg, solver_leaves, **kw)
    challenge(lg, job_id, challenger_leaves)
    return job_id


def answer_step(lg: Ledger, job_id: int, who: str, leaves: list[str]) -> list:
    """`who` answers the current step query from its own leaves; returns the call's logs."""
    i = lg.market.get_dispute(job_id).index
    lg.market.respond_step(job_id, bytes.fromhex(leaves[i]), proof_bytes(leaves, i), sender=who)
    return lg.market.get_logs()


def answer_op(lg: Ledger, job_id: int, who: str, ops: list[str]) -> list:
    i = lg.market.get_dispute(job_id).index
    lg.market.respond_op(job_id, bytes.fromhex(ops[i]), proof_bytes(ops, i), sender=who)
    return lg.market.get_logs()


def commit_trace(lg: Ledger, job_id: int, who: str, ops: list[str]) -> list:
    lg.market.commit_trace(job_id, root_bytes(ops), len(ops), sender=who)
    return lg.market.get_logs()


def bisect_steps(lg: Ledger, job_id: int, solver_leaves: list[str], challenger_leaves: list[str]) -> list:
    """Both parties answer every step query honestly; returns the logs of all the calls."""
    logs = []
    while lg.market.get_dispute(job_id).phase == STEP:
        logs += answer_step(lg, job_id, lg.solver, solver_leaves)
        logs += answer_step(lg, job_id, lg.challenger, challenger_leaves)
    return logs


def bisect_ops(lg: Ledger, job_id: int, solver_ops: list[str], challenger_ops: list[str]) -> list:
    """Both commit their op traces of the disputed step and answer every op query honestly."""
    logs = commit_trace(lg, job_id, lg.solver, solver_ops) + commit_trace(lg, job_id, lg.challenger, challenger_ops)
    while lg.market.get_dispute(job_id).phase == OP:
        logs += answer_op(lg, job_id, lg.solver, solver_ops)
        logs += answer_op(lg, job_id, lg.challenger, challenger_ops)
    return logs


def new_referee(lg: Ledger, name: str, stake: int) -> str:
    """A fresh account with the referee role and `stake` staked (a sybil, or one more judge)."""
    who = boa.env.generate_address(name)
    lg.token.mint(who, stake, sender=lg.deployer)
    lg.token.approve(lg.registry.address, MAX_UINT, sender=who)
    lg.registry.register(f"peer-{name}", REFEREE, sender=who)
    lg.registry.stake(stake, sender=who)
    return who


def new_verifier(lg: Ledger, name: str, stake: int = STAKED) -> str:
    """A fresh account with the verifier role and `stake` staked (an attester, honest or not)."""
    who = boa.env.generate_address(name)
    lg.token.mint(who, stake, sender=lg.deployer)
    lg.token.approve(lg.registry.address, MAX_UINT, sender=who)
    lg.registry.register(f"peer-{name}", VERIFIER, sender=who)
    lg.registry.stake(stake, sender=who)
    return who


def balances(lg: Ledger, *who: str) -> list[int]:
    return [lg.token.balanceOf(w) for w in who]


def events(source, name: str) -> list:
    """The `name` events among a list of logs, or among a contract's latest call's logs (boa
    keeps only the latest call's, so read them before the next call, views included)."""
    logs = source if isinstance(source, list) else source.get_logs()
    return [e for e in logs if type(e).__name__ == name]


# An ERC-20 that reports failure by returning False instead of reverting (some real tokens
# do), so the contracts' checks on transfer return values can be exercised.
FALSE_TOKEN = """
#pragma version ~=0.4.3
fail: public(bool)

@external
def set_fail(fail: bool):
    self.fail = fail

@external
def transfer(to: address, amount: uint256) -> bool:
    return not self.fail

@external
def transferFrom(sender: address, to: address, amount: uint256) -> bool:
    return not self.fail
"""


def false_token():
    return boa.loads(FALSE_TOKEN, name="FalseToken")
