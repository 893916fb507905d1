"""Token.vy: ERC-20 behaviour, the single minter, and its revert reasons."""

from __future__ import annotations

import boa

from .conftest import MAX_UINT, MINTED, ZERO, contract_path, events


def test_metadata_and_initial_supply(ledger):
    t = ledger.token
    assert (t.name(), t.symbol(), t.decimals()) == ("bitswarm credits", "BITS", 18)
    assert t.minter() == ledger.deployer
    assert t.totalSupply() == MINTED * len(ledger.actors)


def test_constructor_rejects_zero_minter():
    with boa.reverts("token: zero address"):
        boa.load(contract_path("Token"), "x", "x", ZERO)


def test_transfer_moves_balance_and_logs(ledger):
    t, a, b = ledger.token, ledger.poster, ledger.outsider
    assert t.transfer(b, 7, sender=a) is True
    (ev,) = events(t, "Transfer")  # get_logs() reads the latest call: take it before any view
    assert (ev.sender, ev.receiver, ev.value) == (a, b, 7)
    assert t.balanceOf(a) == MINTED - 7 and t.balanceOf(b) == MINTED + 7


def test_transfer_reverts(ledger):
    t, a = ledger.token, ledger.poster
    with boa.reverts("token: insufficient balance"):
        t.transfer(ledger.outsider, MINTED + 1, sender=a)
    with boa.reverts("token: zero address"):
        t.transfer(ZERO, 1, sender=a)


def test_approve_and_transfer_from(ledger):
    t, owner, spender, to = ledger.token, ledger.outsider, ledger.poster, ledger.solver
    assert t.approve(spender, 10, sender=owner) is True
    (ev,) = events(t, "Approval")
    assert (ev.owner, ev.spender, ev.value) == (owner, spender, 10)
    assert t.transferFrom(owner, to, 4, sender=spender) is True
    assert t.allowance(owner, spender) == 6
    with boa.reverts("token: insufficient allowance"):
        t.transferFrom(owner, to, 7, sender=spender)
    with boa.reverts("token: zero address"):
        t.approve(ZERO, 1, sender=owner)


def test_unlimited_allowance_is_not_spent(ledger):
    t = ledger.token
    # deploy_ledger approved the market for MAX_UINT on every actor's behalf
    t.transferFrom(ledger.poster, ledger.outsider, 5, sender=ledger.market.address)
    assert t.allowance(ledger.poster, ledger.market.address) == MAX_UINT


def test_transfer_from_checks_balance_after_allowance(ledger):
    t = ledger.token
    t.approve(ledger.poster, MAX_UINT, sender=ledger.outsider)
    with boa.reverts("token: insufficient balance"):
        t.transferFrom(ledger.outsider, ledger.poster, MINTED + 1, sender=ledger.poster)


def test_mint_only_minter(ledger):
    t, supply = ledger.token, ledger.token.totalSupply()
    t.mint(ledger.outsider, 3)
    (ev,) = events(t, "Transfer")
    assert (ev.sender, ev.receiver, ev.value) == (ZERO, ledger.outsider, 3)
    assert t.totalSupply() == supply + 3
    with boa.reverts("token: not minter"):
        t.mint(ledger.outsider, 1, sender=ledger.outsider)
    with boa.reverts("token: zero address"):
        t.mint(ZERO, 1)


def test_set_minter(ledger):
    t, new = ledger.token, ledger.outsider
    with boa.reverts("token: not minter"):
        t.set_minter(new, sender=new)
    with boa.reverts("token: zero address"):
        t.set_minter(ZERO)
    t.set_minter(new)
    (ev,) = events(t, "MinterChanged")
    assert (ev.old_minter, ev.new_minter) == (ledger.deployer, new)
    t.mint(new, 1, sender=new)
    with boa.reverts("token: not minter"):
        t.mint(new, 1)
