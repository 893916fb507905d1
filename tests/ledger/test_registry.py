"""NodeRegistry.vy: registration, staking, unbonding, the slashers' lock/unlock/slash, and the
one-time appointment of the slashers."""

from __future__ import annotations

import boa
import pytest

from .conftest import (
    MAX_UINT,
    MINTED,
    REFEREE,
    SOLVER,
    STAKED,
    SWARM,
    UNBOND_DELAY,
    VERIFIER,
    ZERO,
    contract_path,
    events,
    false_token,
)


@pytest.fixture
def slashers(ledger):
    """A registry of its own whose two slashers are plain accounts the test signs for, with the
    solver registered and staked in it; returns (registry, slasher, other slasher)."""
    r = boa.load(contract_path("NodeRegistry"), ledger.token.address, UNBOND_DELAY)
    who, other = boa.env.generate_address("slasher"), boa.env.generate_address("other-slasher")
    r.set_slashers(who, other)
    ledger.token.approve(r.address, MAX_UINT, sender=ledger.solver)
    r.register("peer-1", SOLVER, sender=ledger.solver)
    r.stake(STAKED, sender=ledger.solver)
    return r, who, other


def test_deployment_wiring(ledger):
    r = ledger.registry
    assert r.owner() == ledger.deployer
    assert r.token() == ledger.token.address
    assert r.unbond_delay() == UNBOND_DELAY
    assert r.slashers(ledger.market.address) and r.slashers(ledger.swarm.address)
    assert not r.slashers(ledger.outsider) and not r.slashers(ledger.deployer)
    assert r.slashers_set()


def test_slashers_are_set_once_by_the_owner(ledger):
    r = boa.load(contract_path("NodeRegistry"), ledger.token.address, UNBOND_DELAY)
    market, swarm = ledger.market.address, ledger.swarm.address
    assert not r.slashers_set()
    with boa.reverts("registry: not owner"):
        r.set_slashers(market, swarm, sender=ledger.outsider)
    with boa.reverts("registry: empty slasher address"):
        r.set_slashers(ZERO, swarm)
    with boa.reverts("registry: empty slasher address"):
        r.set_slashers(market, ZERO)
    r.set_slashers(market, swarm)
    assert [(e.who, e.allowed) for e in events(r, "SlasherSet")] == [(market, True), (swarm, True)]
    assert r.slashers(market) and r.slashers(swarm) and r.slashers_set()


def test_the_owner_cannot_make_itself_a_slasher(ledger):
    """Adversary (d): once the slashers are set, the owner has no way left to appoint one (not
    itself, not a replacement) and so no way to take anyone's stake."""
    r, owner = ledger.registry, ledger.deployer
    with boa.reverts("registry: slashers already set"):
        r.set_slashers(owner, owner, sender=owner)
    with boa.reverts("registry: slashers already set"):
        r.set_slashers(ledger.market.address, ledger.swarm.address, sender=owner)
    # No other function writes the slasher set: the old set_slasher is gone from the ABI.
    writers = {fn["name"] for fn in r.abi if fn["type"] == "function" and fn["stateMutability"] == "nonpayable"}
    assert writers == {"set_slashers", "register", "stake", "request_unbond", "withdraw", "lock", "unlock", "slash"}
    assert not r.slashers(owner)
    with boa.reverts("registry: not slasher"):
        r.lock(ledger.solver, 1, sender=owner)
    with boa.reverts("registry: not slasher"):
        r.slash(ledger.solver, 0, owner, sender=owner)


def test_register_and_views(ledger):
    r, who = ledger.registry, ledger.outsider
    assert not r.is_registered(who)
    r.register("peer-x", SOLVER | REFEREE, sender=who)
    (ev,) = events(r, "NodeRegistered")
    assert (ev.node, ev.peer_id, ev.roles) == (who, "peer-x", SOLVER | REFEREE)
    node = r.get_node(who)
    assert (node.peer_id, node.roles, node.staked, node.registered) == ("peer-x", 5, 0, True)
    assert r.is_registered(who) and r.peer_owner("peer-x") == who
    assert r.has_role(who, SOLVER) and r.has_role(who, SOLVER | REFEREE)
    assert not r.has_role(who, VERIFIER) and not r.has_role(who, SOLVER | VERIFIER)
    assert not r.has_role(who, 0)
    assert not r.has_role(ledger.poster, SOLVER)  # never registered


@pytest.mark.parametrize("roles", [0, 16, 2**255])
def test_register_rejects_bad_roles(ledger, roles):
    with boa.reverts("registry: bad roles"):
        ledger.registry.register("peer-x", roles, sender=ledger.outsider)


def test_register_rejects_empty_and_taken_peer_ids(ledger):
    r = ledger.registry
    with boa.reverts("registry: empty peer id"):
        r.register("", SOLVER, sender=ledger.outsider)
    with boa.reverts("registry: peer id taken"):
        r.register("peer-1", SOLVER, sender=ledger.outsider)  # the solver's


def test_reregister_moves_peer_id_and_frees_the_old_one(ledger):
    r, who, other = ledger.registry, ledger.outsider, ledger.poster
    r.register("old", SOLVER, sender=who)
    r.register("old", SWARM, sender=who)  # same id again: only the roles change
    assert r.get_node(who).roles == SWARM and r.peer_owner("old") == who
    r.register("new", SWARM, sender=who)
    assert r.peer_owner("old") == ZERO
    assert r.peer_owner("new") == who and r.get_node(who).peer_id == "new"
    r.register("old", SOLVER, sender=other)
    assert r.peer_owner("old") == other


def test_stake(ledger):
    r, t, who = ledger.registry, ledger.token, ledger.solver
    r.stake(5, sender=who)
    (ev,) = events(r, "Staked")
    assert (ev.node, ev.amount, ev.total_staked) == (who, 5, STAKED + 5)
    assert t.balanceOf(r.address) == STAKED * 5 + 5  # five registered actors staked
    with boa.reverts("registry: zero amount"):
        r.stake(0, sender=who)
    with boa.reverts("registry: not registered"):
        r.stake(1, sender=ledger.outsider)
    with boa.reverts("token: insufficient balance"):
        r.stake(MINTED, sender=who)


def test_unbond_and_withdraw(ledger):
    r, t, who = ledger.registry, ledger.token, ledger.solver
    with boa.reverts("registry: nothing unbonding"):
        r.withdraw(sender=who)
    with boa.reverts("registry: zero amount"):
        r.request_unbond(0, sender=who)
    with boa.reverts("registry: insufficient free stake"):
        r.request_unbond(STAKED + 1, sender=who)
    r.request_unbond(100, sender=who)
    (ev,) = events(r, "UnbondRequested")
    release = boa.env.timestamp + UNBOND_DELAY
    assert (ev.node, ev.amount, ev.release_time) == (who, 100, release)
    node = r.get_node(who)
    assert (node.staked, node.unbonding, node.unbond_release) == (STAKED - 100, 100, release)

    boa.env.time_travel(seconds=UNBOND_DELAY // 2)
    r.request_unbond(50, sender=who)  # restarts the timer for the whole 150
    boa.env.time_travel(seconds=UNBOND_DELAY // 2 + 1)
    with boa.reverts("registry: still unbonding"):
        r.withdraw(sender=who)
    boa.env.time_travel(seconds=UNBOND_DELAY // 2)
    before = t.balanceOf(who)
    r.withdraw(sender=who)
    (ev,) = events(r, "Withdrawn")
    assert (ev.node, ev.amount) == (who, 150)
    assert t.balanceOf(who) == before + 150
    assert r.get_node(who).unbonding == 0


def test_lock_unlock_slash(ledger, slashers):
    (r, slasher, _), t, node, to = slashers, ledger.token, ledger.solver, ledger.outsider
    with boa.reverts("registry: not slasher"):
        r.lock(node, 1, sender=ledger.outsider)
    with boa.reverts("registry: insufficient free stake"):
        r.lock(node, STAKED + 1, sender=slasher)
    r.lock(node, 300, sender=slasher)
    (ev,) = events(r, "StakeLocked")
    assert (ev.node, ev.amount, ev.by) == (node, 300, slasher)
    assert r.free_stake(node) == STAKED - 300 and r.locked_by(node, slasher) == 300

    # Locked stake cannot leave through unbonding.
    with boa.reverts("registry: insufficient free stake"):
        r.request_unbond(STAKED - 299, sender=node)

    with boa.reverts("registry: not slasher"):
        r.unlock(node, 1, sender=ledger.outsider)
    with boa.reverts("registry: exceeds locked"):
        r.unlock(node, 301, sender=slasher)
    r.unlock(node, 100, sender=slasher)
    (ev,) = events(r, "StakeUnlocked")
    assert (ev.node, ev.amount, ev.by) == (node, 100, slasher)

    with boa.reverts("registry: not slasher"):
        r.slash(node, 1, to, sender=ledger.outsider)
    with boa.reverts("registry: exceeds locked"):
        r.slash(node, 201, to, sender=slasher)
    before = t.balanceOf(to)
    r.slash(node, 150, to, sender=slasher)
    (ev,) = [e for e in r.get_logs() if type(e).__name__ == "Slashed"]
    assert (ev.node, ev.amount, ev.to, ev.by) == (node, 150, to, slasher)
    assert t.balanceOf(to) == before + 150
    n = r.get_node(node)
    assert (n.staked, n.locked) == (STAKED - 150, 50)
    assert r.locked_by(node, slasher) == 50


def test_a_slasher_cannot_touch_another_slashers_lock(ledger, slashers):
    r, slasher, other = slashers
    node = ledger.solver
    r.lock(node, 10, sender=slasher)
    with boa.reverts("registry: exceeds locked"):
        r.unlock(node, 1, sender=other)
    with boa.reverts("registry: exceeds locked"):
        r.slash(node, 1, ledger.outsider, sender=other)


def test_token_returning_false_is_a_revert():
    token = false_token()
    r = boa.load(contract_path("NodeRegistry"), token.address, 0)
    who = boa.env.generate_address("node")
    r.register("p", SOLVER, sender=who)
    r.stake(10, sender=who)  # this token moves nothing but says it did
    r.request_unbond(10, sender=who)
    token.set_fail(True)
    with boa.reverts("registry: transfer failed"):
        r.withdraw(sender=who)
    with boa.reverts("registry: transfer failed"):
        r.stake(1, sender=who)
