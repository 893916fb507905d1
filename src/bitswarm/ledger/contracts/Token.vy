#pragma version ~=0.4.3
"""
@title bitswarm credits
@notice A plain ERC-20 with a single minter. Bounties and stakes are paid in it.
"""

from ethereum.ercs import IERC20

implements: IERC20

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

event MinterChanged:
    old_minter: indexed(address)
    new_minter: indexed(address)

name: public(String[32])
symbol: public(String[8])
decimals: public(constant(uint8)) = 18
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
minter: public(address)


@deploy
def __init__(name: String[32], symbol: String[8], minter: address):
    assert minter != empty(address), "token: zero address"
    self.name = name
    self.symbol = symbol
    self.minter = minter
    log MinterChanged(old_minter=empty(address), new_minter=minter)


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    # Burning is not a feature: tokens sent to 0x0 would silently leave the supply accounting.
    assert receiver != empty(address), "token: zero address"
    assert self.balanceOf[sender] >= amount, "token: insufficient balance"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[sender][msg.sender]
    assert allowed >= amount, "token: insufficient allowance"
    # An allowance of max_value(uint256) is an unlimited approval and is never spent down.
    if allowed != max_value(uint256):
        self.allowance[sender][msg.sender] = allowed - amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    assert spender != empty(address), "token: zero address"
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def mint(to: address, amount: uint256):
    assert msg.sender == self.minter, "token: not minter"
    assert to != empty(address), "token: zero address"
    self.totalSupply += amount
    self.balanceOf[to] += amount
    log Transfer(sender=empty(address), receiver=to, value=amount)


@external
def set_minter(new_minter: address):
    assert msg.sender == self.minter, "token: not minter"
    # Refusing 0x0 keeps a typo from freezing the supply forever.
    assert new_minter != empty(address), "token: zero address"
    old: address = self.minter
    self.minter = new_minter
    log MinterChanged(old_minter=old, new_minter=new_minter)
