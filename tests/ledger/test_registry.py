"""NodeRegistry.vy: registration, staking, unbonding, and the slashers' lock/unlock/slash."""

from __future__ import annotations

import boa
import pytest

from .conftest import (
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
def slasher(ledger):
    who = boa.env.generate_address("slasher")
    ledger.registry.set_slasher(who, True)
    return who


def test_deployment_wiring(ledger):
    r = ledger.registry
    assert r.owner() == ledger.deployer
    assert r.token() == ledger.token.address
    assert r.unbond_delay() == UNBOND_DELAY
    assert r.slashers(ledger.market.address) and r.slashers(ledger.swarm.address)
    assert not r.slashers(ledger.outsider)


def test_set_slasher_owner_only(ledger):
    r, who = ledger.registry, ledger.outsider
    with boa.reverts("registry: not owner"):
        r.set_slasher(who, True, sender=who)
    r.set_slasher(who, True)
    (ev,) = events(r, "SlasherSet")
    assert (ev.who, ev.allowed) == (who, True)
    r.set_slasher(who, False)
    assert not r.slashers(who)


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


def test_lock_unlock_slash(ledger, slasher):
    r, t, node, to = ledger.registry, ledger.token, ledger.solver, ledger.outsider
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


def test_a_slasher_cannot_touch_another_slashers_lock(ledger, slasher):
    r, node = ledger.registry, ledger.solver
    r.lock(node, 10, sender=slasher)
    other = ledger.market.address
    with boa.reverts("registry: exceeds locked"):
        r.unlock(node, 1, sender=other)
    with boa.reverts("registry: exceeds locked"):
        r.slash(node, 1, ledger.outsider, sender=other)


def test_removed_slasher_loses_its_powers(ledger, slasher):
    ledger.registry.lock(ledger.solver, 10, sender=slasher)
    ledger.registry.set_slasher(slasher, False)
    with boa.reverts("registry: not slasher"):
        ledger.registry.unlock(ledger.solver, 10, sender=slasher)


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
