#pragma version ~=0.4.3
"""
@title bitswarm RL swarm coordinator
@notice Records one submission per SWARM node per round: the CID of its rollout batch, the
        reward it claims for it (fixed point, 1e6 = 1.0) and the Merkle root of its training
        steps. A claim is not trusted: each submission locks `swarm_stake` of the node's
        stake, and anyone who re-scores the batch and disagrees may refute it within the
        refutation window, locking the same stake. A stake-weighted referee vote decides;
        the loser's stake goes to the winner. A submission counts (as a participant's win
        candidate) only once it is settled unrefuted: released after its window, or upheld.
"""

from . import INodeRegistry

REFEREE: constant(uint256) = 4
SWARM: constant(uint256) = 8
MAX_REWARD: constant(uint256) = 10**6  # rewards are in [0, 1]

# Submission status.
ABSENT: constant(uint8) = 0
OPEN: constant(uint8) = 1  # stake locked; refutable until the window ends
REFUTING: constant(uint8) = 2  # a refutation vote is running
RELEASED: constant(uint8) = 3  # settled unrefuted: stake unlocked, competes for the round's win
REFUTED: constant(uint8) = 4  # stake slashed to the refuter; never wins

struct Submission:
    rollout_cid: bytes32
    reward: uint256
    step_root: bytes32
    submitted_at: uint256
    index: uint256  # order of arrival in the round: on equal rewards the earlier one wins
    status: uint8  # every submission and every refutation locks swarm_stake (immutable)

struct Refutation:
    refuter: address
    deadline: uint256  # settling is allowed from here on; voting stays open until then
    weight_refuted: uint256
    weight_upheld: uint256
    settled: bool
    refuted: bool

struct Vote:
    weight: uint256  # the voter's whole free stake when it voted, locked until released
    refuted: bool
    released: bool

event SubmissionRecorded:
    round: indexed(uint256)
    peer: indexed(address)
    rollout_cid: bytes32
    reward: uint256
    step_root: bytes32
    stake: uint256

event RoundFinished:
    round: indexed(uint256)
    participants: uint256

event RoundStarted:
    round: indexed(uint256)
    started_at: uint256

event RefutationOpened:
    round: indexed(uint256)
    peer: indexed(address)
    refuter: indexed(address)
    deadline: uint256

event RefereeVoted:
    round: indexed(uint256)
    peer: indexed(address)
    referee: indexed(address)
    refuted: bool
    weight: uint256

event RefutationExtended:
    round: indexed(uint256)
    peer: indexed(address)
    weight_each: uint256
    deadline: uint256

event RefutationSettled:
    round: indexed(uint256)
    peer: indexed(address)
    refuter: indexed(address)
    refuted: bool
    weight_refuted: uint256
    weight_upheld: uint256

event SubmissionReleased:
    round: indexed(uint256)
    peer: indexed(address)

event VoteReleased:
    round: indexed(uint256)
    peer: indexed(address)
    referee: indexed(address)
    weight: uint256
    slashed: bool

event RoundWinner:
    round: indexed(uint256)
    winner: indexed(address)
    reward: uint256

registry: public(immutable(INodeRegistry))
round_duration: public(immutable(uint256))  # also the refutation window after a round ends
swarm_stake: public(immutable(uint256))
vote_timeout: public(immutable(uint256))
referee_min_stake: public(immutable(uint256))
owner: public(address)
current_round: public(uint256)
round_started_at: public(uint256)
round_ended_at: public(HashMap[uint256, uint256])
participants: public(HashMap[uint256, uint256])
unsettled: public(HashMap[uint256, uint256])  # submissions neither released nor refuted
participation: public(HashMap[address, uint256])
# The best settled (unrefuted) submission of a round so far; final once unsettled(round) == 0.
round_winner: public(HashMap[uint256, address])
best_reward: public(HashMap[uint256, uint256])
wins: public(HashMap[address, uint256])
submissions: HashMap[uint256, HashMap[address, Submission]]
refutations: HashMap[uint256, HashMap[address, Refutation]]
votes: HashMap[uint256, HashMap[address, HashMap[address, Vote]]]


@deploy
def __init__(
    _registry: address,
    _round_duration: uint256,
    _swarm_stake: uint256,
    _vote_timeout: uint256,
    _referee_min_stake: uint256,
):
    # A free claim or a free refutation would make lying cost nothing.
    assert _swarm_stake > 0 and _referee_min_stake > 0, "swarm: stakes must be positive"
    registry = INodeRegistry(_registry)
    round_duration = _round_duration
    swarm_stake = _swarm_stake
    vote_timeout = _vote_timeout
    referee_min_stake = _referee_min_stake
    self.owner = msg.sender
    self.current_round = 1
    self.round_started_at = block.timestamp
    log RoundStarted(round=1, started_at=block.timestamp)


@external
def advance_round():
    # The owner may cut a round short; anyone else can only close a round that has run out,
    # so the swarm keeps moving even if the owner disappears.
    if msg.sender != self.owner:
        assert block.timestamp >= self.round_started_at + round_duration, "swarm: round still running"
    r: uint256 = self.current_round
    self.round_ended_at[r] = block.timestamp
    self.current_round = r + 1
    self.round_started_at = block.timestamp
    log RoundFinished(round=r, participants=self.participants[r])
    log RoundStarted(round=r + 1, started_at=block.timestamp)


@external
def submit(round: uint256, rollout_cid: bytes32, reward: uint256, step_root: bytes32):
    assert staticcall registry.has_role(msg.sender, SWARM), "swarm: not a swarm node"
    assert round == self.current_round, "swarm: wrong round"
    assert rollout_cid != empty(bytes32) and step_root != empty(bytes32), "swarm: empty cid"
    assert reward <= MAX_REWARD, "swarm: reward above 1.0"
    assert self.submissions[round][msg.sender].status == ABSENT, "swarm: already submitted for this round"
    assert staticcall registry.free_stake(msg.sender) >= swarm_stake, "swarm: not enough free stake"
    n: uint256 = self.participants[round]
    self.submissions[round][msg.sender] = Submission(
        rollout_cid=rollout_cid, reward=reward, step_root=step_root, submitted_at=block.timestamp,
        index=n, status=OPEN,
    )
    self.participants[round] = n + 1
    self.unsettled[round] += 1
    self.participation[msg.sender] += 1
    log SubmissionRecorded(
        round=round, peer=msg.sender, rollout_cid=rollout_cid, reward=reward, step_root=step_root, stake=swarm_stake
    )
    extcall registry.lock(msg.sender, swarm_stake)


@external
def refute(round: uint256, peer: address):
    """Dispute `peer`'s claim for `round` (the batch does not score what it claims), staking
    swarm_stake on it. One refutation per submission: the referees' vote settles it."""
    sub: Submission = self.submissions[round][peer]
    assert sub.status != ABSENT, "swarm: no such submission"
    assert sub.status == OPEN, "swarm: submission already refuted or settled"
    assert msg.sender != peer, "swarm: cannot refute yourself"
    assert block.timestamp < self._window_end(round), "swarm: refutation window closed"
    deadline: uint256 = block.timestamp + vote_timeout
    self.submissions[round][peer].status = REFUTING
    self.refutations[round][peer] = Refutation(
        refuter=msg.sender, deadline=deadline,
        weight_refuted=0, weight_upheld=0, settled=False, refuted=False,
    )
    log RefutationOpened(round=round, peer=peer, refuter=msg.sender, deadline=deadline)
    extcall registry.lock(msg.sender, swarm_stake)


@external
def vote(round: uint256, peer: address, refuted: bool):
    # Voting stays open past the deadline until someone settles: the deadline only says
    # when settling is allowed (as in JobMarket).
    ref: Refutation = self.refutations[round][peer]
    assert self.submissions[round][peer].status == REFUTING, "swarm: no refutation to vote on"
    assert staticcall registry.has_role(msg.sender, REFEREE), "swarm: not a referee"
    assert msg.sender != peer and msg.sender != ref.refuter, "swarm: party cannot vote"
    assert self.votes[round][peer][msg.sender].weight == 0, "swarm: already voted"
    # A vote weighs the referee's whole free stake, locked until release_vote: stake split
    # over many accounts weighs the same, so extra accounts add nothing.
    weight: uint256 = staticcall registry.free_stake(msg.sender)
    assert weight >= referee_min_stake, "swarm: referee stake too low"
    self.votes[round][peer][msg.sender] = Vote(weight=weight, refuted=refuted, released=False)
    if refuted:
        self.refutations[round][peer].weight_refuted += weight
    else:
        self.refutations[round][peer].weight_upheld += weight
    log RefereeVoted(round=round, peer=peer, referee=msg.sender, refuted=refuted, weight=weight)
    extcall registry.lock(msg.sender, weight)


@external
def settle_refutation(round: uint256, peer: address):
    ref: Refutation = self.refutations[round][peer]
    sub: Submission = self.submissions[round][peer]
    assert sub.status == REFUTING, "swarm: no refutation to settle"
    assert block.timestamp >= ref.deadline, "swarm: vote still open"
    if ref.weight_refuted == ref.weight_upheld:
        # No majority (no vote at all, say): a draw would let a liar, or a false accuser,
        # walk away unpunished, so the vote runs on until the referees break the tie.
        deadline: uint256 = block.timestamp + vote_timeout
        self.refutations[round][peer].deadline = deadline
        log RefutationExtended(round=round, peer=peer, weight_each=ref.weight_refuted, deadline=deadline)
        return
    refuted: bool = ref.weight_refuted > ref.weight_upheld
    self.refutations[round][peer].settled = True
    self.refutations[round][peer].refuted = refuted
    self.unsettled[round] -= 1
    log RefutationSettled(
        round=round, peer=peer, refuter=ref.refuter, refuted=refuted,
        weight_refuted=ref.weight_refuted, weight_upheld=ref.weight_upheld,
    )
    if refuted:
        self.submissions[round][peer].status = REFUTED
        extcall registry.slash(peer, swarm_stake, ref.refuter)
        extcall registry.unlock(ref.refuter, swarm_stake)
    else:
        # Upheld: nobody may refute it again, so it is settled now.
        self.submissions[round][peer].status = RELEASED
        self._count(round, peer, sub)
        extcall registry.slash(ref.refuter, swarm_stake, peer)
        extcall registry.unlock(peer, swarm_stake)


@external
def release(round: uint256, peer: address):
    """Unlock an unrefuted submission's stake once its refutation window is over; it then
    competes for the round's win. Anyone may call it for anyone."""
    sub: Submission = self.submissions[round][peer]
    assert sub.status == OPEN, "swarm: nothing to release"
    assert block.timestamp >= self._window_end(round), "swarm: refutation window open"
    self.submissions[round][peer].status = RELEASED
    self.unsettled[round] -= 1
    log SubmissionReleased(round=round, peer=peer)
    self._count(round, peer, sub)
    extcall registry.unlock(peer, swarm_stake)


@external
def release_vote(round: uint256, peer: address, referee: address):
    """After the ruling, free a referee's vote stake: back to it if it voted with the
    majority, else to the side it voted against. Anyone may call it for anyone."""
    ref: Refutation = self.refutations[round][peer]
    assert ref.settled, "swarm: refutation not settled"
    v: Vote = self.votes[round][peer][referee]
    assert v.weight > 0 and not v.released, "swarm: no vote to release"
    self.votes[round][peer][referee].released = True
    right: bool = v.refuted == ref.refuted
    log VoteReleased(round=round, peer=peer, referee=referee, weight=v.weight, slashed=not right)
    if right:
        extcall registry.unlock(referee, v.weight)
    else:
        extcall registry.slash(referee, v.weight, ref.refuter if ref.refuted else peer)


@internal
def _count(round: uint256, peer: address, sub: Submission):
    # The round's winner is its best settled submission. Submissions settle in any order, so
    # a later, better one takes the win over; ties go to the earlier submitter.
    best: address = self.round_winner[round]
    if best != empty(address):
        other: Submission = self.submissions[round][best]
        if sub.reward < other.reward or (sub.reward == other.reward and sub.index > other.index):
            return
        self.wins[best] -= 1
    self.round_winner[round] = peer
    self.best_reward[round] = sub.reward
    self.wins[peer] += 1
    log RoundWinner(round=round, winner=peer, reward=sub.reward)


@internal
@view
def _window_end(round: uint256) -> uint256:
    if round >= self.current_round:
        return max_value(uint256)  # still running: refutable, not releasable
    return self.round_ended_at[round] + round_duration


@external
@view
def window_end(round: uint256) -> uint256:
    """When the refutation window of `round` closes (max uint256 while the round runs)."""
    return self._window_end(round)


@external
@view
def get_submission(round: uint256, peer: address) -> Submission:
    return self.submissions[round][peer]


@external
@view
def get_refutation(round: uint256, peer: address) -> Refutation:
    return self.refutations[round][peer]


@external
@view
def get_vote(round: uint256, peer: address, referee: address) -> Vote:
    return self.votes[round][peer][referee]
