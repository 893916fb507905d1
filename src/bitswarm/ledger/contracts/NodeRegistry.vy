#pragma version ~=0.4.3
"""
@title bitswarm node registry
@notice Nodes register a libp2p peer id and roles, and stake credits. Contracts allowed as
        slashers (the JobMarket, the SwarmCoordinator) lock stake while a node has work at
        risk and slash it when the node loses; only locked stake can be slashed, and locked
        stake cannot be unbonded, so a node cannot run away from a dispute. The owner names
        the two slashers once, at deployment, and has no power over stake after that: no
        key can appoint another slasher and take anyone's stake.
"""

from ethereum.ercs import IERC20
from . import INodeRegistry

implements: INodeRegistry

# Role bits.
SOLVER: constant(uint256) = 1
VERIFIER: constant(uint256) = 2
REFEREE: constant(uint256) = 4
SWARM: constant(uint256) = 8
ALL_ROLES: constant(uint256) = 15

event SlasherSet:
    who: indexed(address)
    allowed: bool

event NodeRegistered:
    node: indexed(address)
    peer_id: String[64]
    roles: uint256

event Staked:
    node: indexed(address)
    amount: uint256
    total_staked: uint256

event UnbondRequested:
    node: indexed(address)
    amount: uint256
    release_time: uint256

event Withdrawn:
    node: indexed(address)
    amount: uint256

event StakeLocked:
    node: indexed(address)
    amount: uint256
    by: indexed(address)

event StakeUnlocked:
    node: indexed(address)
    amount: uint256
    by: indexed(address)

event Slashed:
    node: indexed(address)
    amount: uint256
    to: indexed(address)
    by: address

owner: public(address)
token: public(IERC20)
unbond_delay: public(uint256)
slashers: public(HashMap[address, bool])
slashers_set: public(bool)
locked_by: public(HashMap[address, HashMap[address, uint256]])
peer_owner: public(HashMap[String[64], address])
nodes: HashMap[address, INodeRegistry.Node]


@deploy
def __init__(token: address, unbond_delay: uint256):
    self.owner = msg.sender
    self.token = IERC20(token)
    self.unbond_delay = unbond_delay


@external
def set_slashers(market: address, swarm: address):
    # Once only: a slasher can take any stake it locks, so the set of slashers is fixed
    # for the registry's lifetime.
    assert msg.sender == self.owner, "registry: not owner"
    assert not self.slashers_set, "registry: slashers already set"
    assert market != empty(address) and swarm != empty(address), "registry: empty slasher address"
    self.slashers_set = True
    self.slashers[market] = True
    self.slashers[swarm] = True
    log SlasherSet(who=market, allowed=True)
    log SlasherSet(who=swarm, allowed=True)


@external
def register(peer_id: String[64], roles: uint256):
    assert len(peer_id) > 0, "registry: empty peer id"
    assert roles >= 1 and roles <= ALL_ROLES, "registry: bad roles"
    holder: address = self.peer_owner[peer_id]
    assert holder == empty(address) or holder == msg.sender, "registry: peer id taken"
    node: INodeRegistry.Node = self.nodes[msg.sender]
    # Re-registering moves the node to the new peer id; the old one becomes free for others.
    if node.registered and node.peer_id != peer_id:
        self.peer_owner[node.peer_id] = empty(address)
    node.peer_id = peer_id
    node.roles = roles
    node.registered = True
    self.nodes[msg.sender] = node
    self.peer_owner[peer_id] = msg.sender
    log NodeRegistered(node=msg.sender, peer_id=peer_id, roles=roles)


@external
def stake(amount: uint256):
    assert self.nodes[msg.sender].registered, "registry: not registered"
    assert amount > 0, "registry: zero amount"
    total: uint256 = self.nodes[msg.sender].staked + amount
    self.nodes[msg.sender].staked = total
    log Staked(node=msg.sender, amount=amount, total_staked=total)
    assert extcall self.token.transferFrom(msg.sender, self, amount), "registry: transfer failed"


@external
def request_unbond(amount: uint256):
    assert amount > 0, "registry: zero amount"
    assert amount <= self._free_stake(msg.sender), "registry: insufficient free stake"
    release: uint256 = block.timestamp + self.unbond_delay
    self.nodes[msg.sender].staked -= amount
    self.nodes[msg.sender].unbonding += amount
    # One timer for the whole unbonding sum: topping it up restarts the wait.
    self.nodes[msg.sender].unbond_release = release
    log UnbondRequested(node=msg.sender, amount=amount, release_time=release)


@external
def withdraw():
    amount: uint256 = self.nodes[msg.sender].unbonding
    assert amount > 0, "registry: nothing unbonding"
    assert block.timestamp >= self.nodes[msg.sender].unbond_release, "registry: still unbonding"
    self.nodes[msg.sender].unbonding = 0
    log Withdrawn(node=msg.sender, amount=amount)
    assert extcall self.token.transfer(msg.sender, amount), "registry: transfer failed"


@external
def lock(node: address, amount: uint256):
    assert self.slashers[msg.sender], "registry: not slasher"
    assert self._free_stake(node) >= amount, "registry: insufficient free stake"
    self.nodes[node].locked += amount
    self.locked_by[node][msg.sender] += amount
    log StakeLocked(node=node, amount=amount, by=msg.sender)


@external
def unlock(node: address, amount: uint256):
    assert self.slashers[msg.sender], "registry: not slasher"
    # A slasher only releases what it locked itself, never another slasher's hold.
    assert amount <= self.locked_by[node][msg.sender], "registry: exceeds locked"
    self.nodes[node].locked -= amount
    self.locked_by[node][msg.sender] -= amount
    log StakeUnlocked(node=node, amount=amount, by=msg.sender)


@external
def slash(node: address, amount: uint256, to: address):
    assert self.slashers[msg.sender], "registry: not slasher"
    assert amount <= self.locked_by[node][msg.sender], "registry: exceeds locked"
    self.nodes[node].locked -= amount
    self.nodes[node].staked -= amount
    self.locked_by[node][msg.sender] -= amount
    log Slashed(node=node, amount=amount, to=to, by=msg.sender)
    assert extcall self.token.transfer(to, amount), "registry: transfer failed"


@internal
@view
def _free_stake(addr: address) -> uint256:
    return self.nodes[addr].staked - self.nodes[addr].locked


@external
@view
def get_node(addr: address) -> INodeRegistry.Node:
    return self.nodes[addr]


@external
@view
def free_stake(addr: address) -> uint256:
    return self._free_stake(addr)


@external
@view
def is_registered(addr: address) -> bool:
    return self.nodes[addr].registered


@external
@view
def has_role(addr: address, role: uint256) -> bool:
    # Every bit of `role` must be held; role 0 is nobody's role.
    node: INodeRegistry.Node = self.nodes[addr]
    return node.registered and role != 0 and node.roles & role == role
