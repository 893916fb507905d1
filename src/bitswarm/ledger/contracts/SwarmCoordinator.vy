#pragma version ~=0.4.3
"""
@title bitswarm RL swarm coordinator
@notice Records one submission per SWARM node per round (the CID of its rollouts, its reward
        and the Merkle root of its training steps) and keeps per-round winners and per-node
        participation and win counts. Rewards are fixed-point, scaled by 1e6.
"""

from . import INodeRegistry

SWARM: constant(uint256) = 8

struct Submission:
    rollout_cid: bytes32  # non-zero exactly when the peer submitted in that round
    reward: int256
    step_root: bytes32
    submitted_at: uint256

event SubmissionRecorded:
    round: indexed(uint256)
    peer: indexed(address)
    rollout_cid: bytes32
    reward: int256
    step_root: bytes32

event RoundFinished:
    round: indexed(uint256)
    winner: indexed(address)
    best_reward: int256
    participants: uint256

event RoundStarted:
    round: indexed(uint256)
    started_at: uint256

registry: public(immutable(INodeRegistry))
round_duration: public(immutable(uint256))
owner: public(address)
current_round: public(uint256)
round_started_at: public(uint256)
participants: public(HashMap[uint256, uint256])
participation: public(HashMap[address, uint256])
round_winner: public(HashMap[uint256, address])
best_reward: public(HashMap[uint256, int256])
wins: public(HashMap[address, uint256])
submissions: HashMap[uint256, HashMap[address, Submission]]


@deploy
def __init__(_registry: address, _round_duration: uint256):
    registry = INodeRegistry(_registry)
    round_duration = _round_duration
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
    winner: address = self.round_winner[r]
    if winner != empty(address):
        self.wins[winner] += 1
    self.current_round = r + 1
    self.round_started_at = block.timestamp
    log RoundFinished(round=r, winner=winner, best_reward=self.best_reward[r], participants=self.participants[r])
    log RoundStarted(round=r + 1, started_at=block.timestamp)


@external
def submit(round: uint256, rollout_cid: bytes32, reward: int256, step_root: bytes32):
    assert staticcall registry.has_role(msg.sender, SWARM), "swarm: not a swarm node"
    assert round == self.current_round, "swarm: wrong round"
    assert rollout_cid != empty(bytes32) and step_root != empty(bytes32), "swarm: empty cid"
    assert self.submissions[round][msg.sender].rollout_cid == empty(bytes32), "swarm: already submitted for this round"
    self.submissions[round][msg.sender] = Submission(
        rollout_cid=rollout_cid, reward=reward, step_root=step_root, submitted_at=block.timestamp
    )
    n: uint256 = self.participants[round]
    self.participants[round] = n + 1
    self.participation[msg.sender] += 1
    # Strictly greater: on a tie the earlier submitter keeps the round.
    if n == 0 or reward > self.best_reward[round]:
        self.best_reward[round] = reward
        self.round_winner[round] = msg.sender
    log SubmissionRecorded(round=round, peer=msg.sender, rollout_cid=rollout_cid, reward=reward, step_root=step_root)


@external
@view
def get_submission(round: uint256, peer: address) -> Submission:
    return self.submissions[round][peer]
