#pragma version ~=0.4.3
"""
@title bitswarm job market and dispute game
@notice Posters escrow a bounty for a job; a solver stakes, claims and commits the Merkle root
        of its result (one leaf per training step or generated token). Within the challenge
        window a verifier may stake the same amount and commit a different root whose last
        leaf differs (both last leaves are proven: the solver's at commit, the challenger's at
        challenge). The two then bisect: first over the result leaves to a step whose input state they agree on and
        whose output they do not, then over each side's op trace of that step (always
        `ops_per_leaf` ops, fixed by the poster) to such an op. Referees recompute that one op
        off-chain from the value both sides agreed on just before it, and vote with their
        stake. A party that stops answering loses by deadline.

        Soundness: every bisection round keeps "both sides gave the same value at lo-1" and
        "they differ at hi", for the values each side is bound to by its own Merkle root. The
        game therefore ends on one op whose input both sides agreed on and whose output they
        dispute, so the honest side's output is what the op computes and a referee can tell.
        Leaves are cumulative (each commits the history before it), so the last leaf is the
        result: a challenge naming the solver's own last leaf is refused, and an honest side is
        never drawn into a dispute over a correct result. Trust assumption: the honest,
        live referees of a dispute hold more stake than any coalition voting against them.
        Splitting stake across accounts adds no weight, so sybil referees buy nothing, and a
        referee that votes for the loser loses the stake it voted with.

        Verification pay: a poster may reserve `verify_fee` of the bounty for verifiers. At
        commit the contract draws an audit leaf; during the challenge window a verifier that
        re-executed the job attests with keccak256(value ‖ its address), where value is the
        Merkle root of its op-trace digests of the audit leaf (the trace root it would commit
        in a dispute, published nowhere else), and locks min_stake. After the window the
        solver reveals its own value and each attester its value, which must open its
        commitment. At finalize the fee is split among the attesters whose value equals the
        solver's; the rest goes back to the poster. Copying anything public (a leaf, the
        root) or another verifier's commitment (bound to its address) earns nothing. A
        disputed job voids its attestations: the dispute decides who gets the whole bounty.
"""

from ethereum.ercs import IERC20
from . import INodeRegistry

# Job kinds.
KIND_TRAIN: constant(uint8) = 0
KIND_INFER: constant(uint8) = 1
KIND_EVAL: constant(uint8) = 2

# Job status.
OPEN: constant(uint8) = 1
CLAIMED: constant(uint8) = 2
COMMITTED: constant(uint8) = 3
DISPUTED: constant(uint8) = 4
DONE: constant(uint8) = 5
FAILED: constant(uint8) = 6
CANCELLED: constant(uint8) = 7
# 8 was DRAW; a referee vote no longer ends without a winner, and the code is not reused.

# Dispute phase.
PHASE_NONE: constant(uint8) = 0
PHASE_STEP: constant(uint8) = 1
PHASE_TRACE: constant(uint8) = 2
PHASE_OP: constant(uint8) = 3
PHASE_VOTE: constant(uint8) = 4
PHASE_SETTLED: constant(uint8) = 5

# Registry role bits (see NodeRegistry.vy).
SOLVER: constant(uint256) = 1
VERIFIER: constant(uint256) = 2
REFEREE: constant(uint256) = 4

MAX_LEAVES: constant(uint256) = 2**32
MAX_CHALLENGE_WINDOW: constant(uint256) = 30 * 86400
# 2**32 leaves need 32 siblings; 64 leaves room without an unbounded loop.
MAX_PROOF: constant(uint256) = 64
# Verifiers that may attest to one job: settlement walks this list, so it is bounded.
MAX_ATTESTERS: constant(uint256) = 16

struct Job:
    poster: address
    spec_cid: bytes32
    kind: uint8
    num_leaves: uint256
    ops_per_leaf: uint256  # traced ops of one leaf's computation, a pure function of the spec
    bounty: uint256
    solver_stake: uint256
    challenge_window: uint256
    status: uint8
    solver: address
    result_root: bytes32
    result_cid: bytes32
    # The last leaf of the result, proven against result_root at commit. Leaves are cumulative
    # (each commits the whole history before it), so this one is the result: a challenge must
    # name a different one, and an honest verifier never challenges a correct result.
    result_leaf: bytes32
    commit_deadline: uint256
    challenge_deadline: uint256

# A job's verification pay, kept apart from Job: every dispute call reads the whole Job, and
# none of these fields.
struct Audit:
    # The part of the bounty reserved for verifiers (0: no verification pay, no audit).
    verify_fee: uint256
    # Drawn at commit when verify_fee > 0: the leaf whose op trace verifiers attest to.
    audit_leaf: uint256
    # Reveals run from challenge_deadline (exclusive) to here: one more challenge_window.
    reveal_deadline: uint256
    solver_value: bytes32
    solver_revealed: bool
    attesters: uint256  # how many attested (at most MAX_ATTESTERS)
    revealed: uint256  # how many of them revealed

struct Attestation:
    commitment: bytes32  # keccak256(value ‖ attester)
    value: bytes32  # set at reveal
    revealed: bool

struct Dispute:
    challenger: address
    solver_root: bytes32
    challenger_root: bytes32
    phase: uint8
    lo: uint256
    hi: uint256
    index: uint256  # the leaf (STEP) or op (OP) index asked this round
    deadline: uint256
    solver_answered: bool
    challenger_answered: bool
    solver_answer: bytes32
    challenger_answer: bytes32
    # The bisection's evidence: the value both sides gave at lo-1 (empty while lo == 0) and
    # each side's value at hi (always different). The referee rules from these.
    agreed: bytes32
    solver_diff: bytes32
    challenger_diff: bytes32
    disputed_step: uint256
    # The agreed state leaf before the disputed step (empty for step 0, whose input state the
    # referee derives from the spec), and each side's own leaf at the disputed step.
    before: bytes32
    solver_after: bytes32
    challenger_after: bytes32
    # Op ops_per_leaf is virtual: it stands for each side's state after the step.
    disputed_op: uint256
    solver_trace_root: bytes32
    challenger_trace_root: bytes32
    weight_solver: uint256  # referee stake voting for each side
    weight_challenger: uint256
    winner: address

event JobPosted:
    job_id: indexed(uint256)
    poster: indexed(address)
    spec_cid: bytes32
    kind: uint8
    num_leaves: uint256
    ops_per_leaf: uint256
    bounty: uint256
    solver_stake: uint256
    challenge_window: uint256
    verify_fee: uint256

event JobCancelled:
    job_id: indexed(uint256)
    poster: indexed(address)
    bounty: uint256

event JobClaimed:
    job_id: indexed(uint256)
    solver: indexed(address)
    commit_deadline: uint256

event ResultCommitted:
    job_id: indexed(uint256)
    result_root: bytes32
    result_cid: bytes32
    result_leaf: bytes32
    challenge_deadline: uint256

event AuditDrawn:
    job_id: indexed(uint256)
    audit_leaf: uint256
    verify_fee: uint256
    reveal_deadline: uint256

event Attested:
    job_id: indexed(uint256)
    attester: indexed(address)
    commitment: bytes32

event Revealed:
    job_id: indexed(uint256)
    party: indexed(address)  # the solver or an attester
    attestation: bytes32

event VerifierPaid:
    job_id: indexed(uint256)
    verifier: indexed(address)
    amount: uint256

event JobFinalized:
    job_id: indexed(uint256)
    solver: indexed(address)
    bounty: uint256
    solver_paid: uint256  # the bounty less the verification fee
    verifiers_paid: uint256  # attesters whose value matched the solver's, each paid an equal share
    fee_refund: uint256  # the fee no verifier earned (all of it without a match, else the dust): to the poster

event JobChallenged:
    job_id: indexed(uint256)
    challenger: indexed(address)
    challenger_root: bytes32

event DisputeQuery:
    job_id: indexed(uint256)
    phase: uint8
    index: uint256
    deadline: uint256

event StepAnswered:
    job_id: indexed(uint256)
    party: indexed(address)
    index: uint256
    leaf: bytes32

event StepFound:
    job_id: indexed(uint256)
    step_index: uint256

event TraceCommitted:
    job_id: indexed(uint256)
    party: indexed(address)
    trace_root: bytes32
    n_ops: uint256

event OpAnswered:
    job_id: indexed(uint256)
    party: indexed(address)
    index: uint256
    digest: bytes32

event OpFound:
    job_id: indexed(uint256)
    step: uint256
    op: uint256

event RefereeVoted:
    job_id: indexed(uint256)
    referee: indexed(address)
    solver_wins: bool
    weight: uint256

event VoteExtended:
    job_id: indexed(uint256)
    weight_each: uint256
    deadline: uint256

event VoteReleased:
    job_id: indexed(uint256)
    referee: indexed(address)
    weight: uint256
    slashed: bool

event DisputeSettled:
    job_id: indexed(uint256)
    winner: indexed(address)
    loser: indexed(address)
    reason: String[32]

token: public(immutable(IERC20))
registry: public(immutable(INodeRegistry))
commit_timeout: public(immutable(uint256))
round_timeout: public(immutable(uint256))
vote_timeout: public(immutable(uint256))
referee_min_stake: public(immutable(uint256))
min_stake: public(immutable(uint256))

next_job_id: public(uint256)
voted: public(HashMap[uint256, HashMap[address, bool]])
# The stake each referee voted with (locked until release_vote) and the side it chose.
vote_weight: public(HashMap[uint256, HashMap[address, uint256]])
vote_side: public(HashMap[uint256, HashMap[address, bool]])
jobs: HashMap[uint256, Job]
disputes: HashMap[uint256, Dispute]
audits: HashMap[uint256, Audit]
attestations: HashMap[uint256, HashMap[address, Attestation]]
# The attesters of a job in the order they attested, indices 0 .. audits[job].attesters - 1.
attester_at: public(HashMap[uint256, HashMap[uint256, address]])


@deploy
def __init__(
    _token: address,
    _registry: address,
    _commit_timeout: uint256,
    _round_timeout: uint256,
    _vote_timeout: uint256,
    _referee_min_stake: uint256,
    _min_stake: uint256,
):
    # Every claim and every challenge locks at least min_stake, so a cheater always has
    # something to lose.
    assert _min_stake > 0, "market: zero min stake"
    token = IERC20(_token)
    registry = INodeRegistry(_registry)
    commit_timeout = _commit_timeout
    round_timeout = _round_timeout
    vote_timeout = _vote_timeout
    referee_min_stake = _referee_min_stake
    min_stake = _min_stake
    self.next_job_id = 1


# ---------------------------------------------------------------- jobs

@external
def post_job(
    spec_cid: bytes32,
    kind: uint8,
    num_leaves: uint256,
    ops_per_leaf: uint256,
    bounty: uint256,
    solver_stake: uint256,
    challenge_window: uint256,
    verify_fee: uint256,
) -> uint256:
    assert spec_cid != empty(bytes32), "market: empty spec cid"
    assert kind <= KIND_EVAL, "market: bad kind"
    assert num_leaves >= 1 and num_leaves <= MAX_LEAVES, "market: bad leaf count"
    # Fixed here rather than by each side at commit_trace, so that a trace cut short (or run
    # on) cannot be committed at all.
    assert ops_per_leaf >= 1 and ops_per_leaf <= MAX_LEAVES, "market: bad op count"
    assert bounty > 0, "market: zero bounty"
    # The solver keeps a part of every bounty: work that pays only its verifiers is not a job.
    assert verify_fee < bounty, "market: fee not below bounty"
    assert solver_stake >= min_stake, "market: stake below minimum"
    assert challenge_window >= 1 and challenge_window <= MAX_CHALLENGE_WINDOW, "market: bad challenge window"
    job_id: uint256 = self.next_job_id
    self.next_job_id = job_id + 1
    self.jobs[job_id] = Job(
        poster=msg.sender,
        spec_cid=spec_cid,
        kind=kind,
        num_leaves=num_leaves,
        ops_per_leaf=ops_per_leaf,
        bounty=bounty,
        solver_stake=solver_stake,
        challenge_window=challenge_window,
        status=OPEN,
        solver=empty(address),
        result_root=empty(bytes32),
        result_cid=empty(bytes32),
        result_leaf=empty(bytes32),
        commit_deadline=0,
        challenge_deadline=0,
    )
    if verify_fee > 0:
        self.audits[job_id].verify_fee = verify_fee
    log JobPosted(
        job_id=job_id,
        poster=msg.sender,
        spec_cid=spec_cid,
        kind=kind,
        num_leaves=num_leaves,
        ops_per_leaf=ops_per_leaf,
        bounty=bounty,
        solver_stake=solver_stake,
        challenge_window=challenge_window,
        verify_fee=verify_fee,
    )
    assert extcall token.transferFrom(msg.sender, self, bounty), "market: token transfer failed"
    return job_id


@external
def cancel_job(job_id: uint256):
    job: Job = self._job(job_id)
    assert msg.sender == job.poster, "market: not poster"
    assert job.status == OPEN, "market: job not open"
    self.jobs[job_id].status = CANCELLED
    log JobCancelled(job_id=job_id, poster=job.poster, bounty=job.bounty)
    self._pay(job.poster, job.bounty)


@external
def claim_job(job_id: uint256):
    job: Job = self._job(job_id)
    assert job.status == OPEN, "market: job not open"
    assert staticcall registry.has_role(msg.sender, SOLVER), "market: not a solver"
    assert msg.sender != job.poster, "market: poster cannot solve"
    deadline: uint256 = block.timestamp + commit_timeout
    self.jobs[job_id].status = CLAIMED
    self.jobs[job_id].solver = msg.sender
    self.jobs[job_id].commit_deadline = deadline
    log JobClaimed(job_id=job_id, solver=msg.sender, commit_deadline=deadline)
    extcall registry.lock(msg.sender, job.solver_stake)


@external
def commit_result(
    job_id: uint256,
    result_root: bytes32,
    result_cid: bytes32,
    result_leaf: bytes32,
    proof: DynArray[bytes32, MAX_PROOF],
):
    job: Job = self._job(job_id)
    assert msg.sender == job.solver, "market: not solver"
    assert job.status == CLAIMED, "market: job not claimed"
    assert block.timestamp <= job.commit_deadline, "market: commit deadline passed"
    assert result_root != empty(bytes32) and result_cid != empty(bytes32), "market: empty root"
    assert self._verify_proof(result_leaf, proof, job.num_leaves - 1, job.num_leaves, result_root), "market: last leaf not in the result"
    deadline: uint256 = block.timestamp + job.challenge_window
    self.jobs[job_id].status = COMMITTED
    self.jobs[job_id].result_root = result_root
    self.jobs[job_id].result_cid = result_cid
    self.jobs[job_id].result_leaf = result_leaf
    self.jobs[job_id].challenge_deadline = deadline
    log ResultCommitted(
        job_id=job_id, result_root=result_root, result_cid=result_cid, result_leaf=result_leaf,
        challenge_deadline=deadline
    )
    fee: uint256 = self.audits[job_id].verify_fee
    if fee > 0:
        # The solver can predict the draw (it picks the block): that is harmless, since the
        # attestation only has to prove that a verifier re-executed, not catch the solver.
        seed: bytes32 = keccak256(concat(blockhash(block.number - 1), convert(job_id, bytes32), result_root))
        audit_leaf: uint256 = convert(seed, uint256) % job.num_leaves
        reveal_deadline: uint256 = deadline + job.challenge_window
        self.audits[job_id].audit_leaf = audit_leaf
        self.audits[job_id].reveal_deadline = reveal_deadline
        log AuditDrawn(job_id=job_id, audit_leaf=audit_leaf, verify_fee=fee, reveal_deadline=reveal_deadline)


@external
def finalize(job_id: uint256):
    """Pays an unchallenged job: the bounty less verify_fee to the solver, the fee in equal
    shares to the attesters whose revealed value equals the solver's (none, or no solver
    reveal: all of it back to the poster, as is the dust of the split). Once anyone attested,
    finalizing waits for the reveal period to end or for the solver and every attester to
    reveal."""
    job: Job = self._job(job_id)
    assert job.status == COMMITTED, "market: job not committed"
    assert block.timestamp > job.challenge_deadline, "market: challenge window open"
    a: Audit = empty(Audit)
    if self.audits[job_id].verify_fee > 0:  # a job without the fee has no more audit to read
        a = self.audits[job_id]
    if a.attesters > 0 and block.timestamp <= a.reveal_deadline:
        assert a.solver_revealed and a.revealed == a.attesters, "market: reveal period open"
    self.jobs[job_id].status = DONE
    matched: uint256 = 0
    if a.solver_revealed:
        for i: uint256 in range(MAX_ATTESTERS):
            if i == a.attesters:
                break
            if self._matches(job_id, self.attester_at[job_id][i], a.solver_value):
                matched += 1
    share: uint256 = 0
    if matched > 0:
        share = a.verify_fee // matched
    refund: uint256 = a.verify_fee - share * matched
    log JobFinalized(
        job_id=job_id, solver=job.solver, bounty=job.bounty, solver_paid=job.bounty - a.verify_fee,
        verifiers_paid=matched, fee_refund=refund
    )
    extcall registry.unlock(job.solver, job.solver_stake)
    self._pay(job.solver, job.bounty - a.verify_fee)
    if matched > 0:
        for i: uint256 in range(MAX_ATTESTERS):
            if i == a.attesters:
                break
            who: address = self.attester_at[job_id][i]
            if self._matches(job_id, who, a.solver_value):
                log VerifierPaid(job_id=job_id, verifier=who, amount=share)
                self._pay(who, share)
    if refund > 0:
        self._pay(job.poster, refund)
    self._unlock_attesters(job_id, a.attesters)


# ---------------------------------------------------------------- verification pay

@external
def attest(job_id: uint256, commitment: bytes32):
    """A verifier that re-executed the job commits, while the challenge window is open, to
    keccak256(value ‖ its address), value being the Merkle root of its op-trace digests of
    leaf audit_leaf (verify.attest). Locks min_stake until the job is finalized or its dispute
    settled, so every attester (sybils included) holds capital for the whole round."""
    job: Job = self._job(job_id)
    assert job.status == COMMITTED, "market: job not committed"
    assert block.timestamp <= job.challenge_deadline, "market: challenge window closed"
    assert self.audits[job_id].verify_fee > 0, "market: no verification fee"
    assert staticcall registry.has_role(msg.sender, VERIFIER), "market: not a verifier"
    # The solver knows its own trace and the poster gets the unpaid fee back: neither may
    # take the verifiers' pay.
    assert msg.sender != job.solver, "market: solver cannot attest"
    assert msg.sender != job.poster, "market: poster cannot attest"
    assert commitment != empty(bytes32), "market: empty commitment"
    assert self.attestations[job_id][msg.sender].commitment == empty(bytes32), "market: already attested"
    n: uint256 = self.audits[job_id].attesters
    assert n < MAX_ATTESTERS, "market: attesters full"
    self.attestations[job_id][msg.sender].commitment = commitment
    self.attester_at[job_id][n] = msg.sender
    self.audits[job_id].attesters = n + 1
    log Attested(job_id=job_id, attester=msg.sender, commitment=commitment)
    extcall registry.lock(msg.sender, min_stake)


@external
def reveal(job_id: uint256, attestation: bytes32):
    """After the challenge window (so nobody can copy a revealed value into a commitment) and
    until reveal_deadline: the solver reveals its own value of the audit leaf, each attester
    the value its commitment binds."""
    job: Job = self._job(job_id)
    assert job.status == COMMITTED, "market: job not committed"
    assert self.audits[job_id].verify_fee > 0, "market: no verification fee"
    assert block.timestamp > job.challenge_deadline, "market: challenge window open"
    assert block.timestamp <= self.audits[job_id].reveal_deadline, "market: reveal period over"
    assert attestation != empty(bytes32), "market: empty attestation"
    if msg.sender == job.solver:
        assert not self.audits[job_id].solver_revealed, "market: already revealed"
        self.audits[job_id].solver_revealed = True
        self.audits[job_id].solver_value = attestation
    else:
        att: Attestation = self.attestations[job_id][msg.sender]
        assert att.commitment != empty(bytes32), "market: no attestation"
        assert not att.revealed, "market: already revealed"
        assert self._commitment(attestation, msg.sender) == att.commitment, "market: reveal does not match the commitment"
        self.attestations[job_id][msg.sender].revealed = True
        self.attestations[job_id][msg.sender].value = attestation
        self.audits[job_id].revealed += 1
    log Revealed(job_id=job_id, party=msg.sender, attestation=attestation)


# ---------------------------------------------------------------- dispute game

@external
def challenge(
    job_id: uint256, challenger_root: bytes32, challenger_leaf: bytes32, proof: DynArray[bytes32, MAX_PROOF]
):
    job: Job = self._job(job_id)
    # Status COMMITTED also makes this one challenge per job: the first one moves it to DISPUTED.
    assert job.status == COMMITTED, "market: job not committed"
    assert block.timestamp <= job.challenge_deadline, "market: challenge window closed"
    assert staticcall registry.has_role(msg.sender, VERIFIER), "market: not a verifier"
    assert msg.sender != job.solver, "market: solver cannot challenge"
    # The poster gets its bounty back whenever the solver loses: it must not be the one
    # playing against the solver.
    assert msg.sender != job.poster, "market: poster cannot challenge"
    assert challenger_root != empty(bytes32), "market: empty root"
    assert challenger_root != job.result_root, "market: root agrees with result"
    assert self._verify_proof(challenger_leaf, proof, job.num_leaves - 1, job.num_leaves, challenger_root), "market: last leaf not in the challenge"
    # Equal last leaves are equal results (the leaves are cumulative): nothing to dispute.
    assert challenger_leaf != job.result_leaf, "market: results agree"
    self.jobs[job_id].status = DISPUTED
    d: Dispute = empty(Dispute)
    d.challenger = msg.sender
    d.solver_root = job.result_root
    d.challenger_root = challenger_root
    d.phase = PHASE_STEP
    # The last leaves are known to differ: bisect [0, num_leaves-1] below them.
    d.lo = 0
    d.hi = job.num_leaves - 1
    d.solver_diff = job.result_leaf
    d.challenger_diff = challenger_leaf
    d.deadline = block.timestamp + round_timeout
    log JobChallenged(job_id=job_id, challenger=msg.sender, challenger_root=challenger_root)
    if d.lo == d.hi:
        d = self._step_found(job_id, d)
    else:
        d.index = (d.lo + d.hi) // 2
        log DisputeQuery(job_id=job_id, phase=PHASE_STEP, index=d.index, deadline=d.deadline)
    self.disputes[job_id] = d
    extcall registry.lock(msg.sender, job.solver_stake)


@external
def respond_step(job_id: uint256, leaf: bytes32, proof: DynArray[bytes32, MAX_PROOF]):
    job: Job = self._job(job_id)
    d: Dispute = self.disputes[job_id]
    assert d.phase == PHASE_STEP, "market: not in step phase"
    is_solver: bool = self._check_turn(job, d)
    root: bytes32 = d.solver_root if is_solver else d.challenger_root
    assert self._verify_proof(leaf, proof, d.index, job.num_leaves, root), "market: proof does not match the committed root"
    d = self._record(d, is_solver, leaf)
    log StepAnswered(job_id=job_id, party=msg.sender, index=d.index, leaf=leaf)
    if not (d.solver_answered and d.challenger_answered):
        self.disputes[job_id] = d
        return

    d = self._narrow(d, d.solver_answer == d.challenger_answer)
    if d.lo == d.hi:
        d = self._step_found(job_id, d)
    else:
        d.index = (d.lo + d.hi) // 2
        d = self._next_round(d, round_timeout)
        log DisputeQuery(job_id=job_id, phase=PHASE_STEP, index=d.index, deadline=d.deadline)
    self.disputes[job_id] = d


@external
def commit_trace(job_id: uint256, trace_root: bytes32, n_ops: uint256):
    job: Job = self._job(job_id)
    d: Dispute = self.disputes[job_id]
    assert d.phase == PHASE_TRACE, "market: not in trace phase"
    is_solver: bool = self._check_turn(job, d)
    assert trace_root != empty(bytes32), "market: empty root"
    # A trace of any other length cannot be committed: a side that skipped ops (or added
    # some) can only miss the deadline.
    assert n_ops == job.ops_per_leaf, "market: op count is fixed by the job"
    if is_solver:
        d.solver_trace_root = trace_root
    else:
        d.challenger_trace_root = trace_root
    d = self._record(d, is_solver, trace_root)
    log TraceCommitted(job_id=job_id, party=msg.sender, trace_root=trace_root, n_ops=n_ops)
    if d.solver_answered and d.challenger_answered:
        # The op search runs over [0, ops_per_leaf]. Index ops_per_leaf is virtual: it stands
        # for each side's own state after the step, known to differ, so a trace that matches
        # the honest one op for op but ends in a wrong state lands there.
        d.phase = PHASE_OP
        d.lo = 0
        d.hi = job.ops_per_leaf
        d.agreed = d.before
        d.solver_diff = d.solver_after
        d.challenger_diff = d.challenger_after
        d.index = d.hi // 2
        d = self._next_round(d, round_timeout)
        log DisputeQuery(job_id=job_id, phase=PHASE_OP, index=d.index, deadline=d.deadline)
    self.disputes[job_id] = d


@external
def respond_op(job_id: uint256, digest: bytes32, proof: DynArray[bytes32, MAX_PROOF]):
    job: Job = self._job(job_id)
    d: Dispute = self.disputes[job_id]
    assert d.phase == PHASE_OP, "market: not in op phase"
    is_solver: bool = self._check_turn(job, d)
    root: bytes32 = d.solver_trace_root if is_solver else d.challenger_trace_root
    assert self._verify_proof(digest, proof, d.index, job.ops_per_leaf, root), "market: proof does not match the committed root"
    d = self._record(d, is_solver, digest)
    log OpAnswered(job_id=job_id, party=msg.sender, index=d.index, digest=digest)
    if d.solver_answered and d.challenger_answered:
        d = self._narrow(d, d.solver_answer == d.challenger_answer)
        if d.lo == d.hi:
            # The referee now has all it needs in the dispute: the op (disputed_step,
            # disputed_op), its agreed input `agreed` (or `before` for op 0), and each side's
            # output in solver_diff / challenger_diff (the states after the step, for the
            # virtual op ops_per_leaf).
            d.disputed_op = d.hi
            d.phase = PHASE_VOTE
            d = self._next_round(d, vote_timeout)
            log OpFound(job_id=job_id, step=d.disputed_step, op=d.disputed_op)
        else:
            d.index = (d.lo + d.hi) // 2
            d = self._next_round(d, round_timeout)
            log DisputeQuery(job_id=job_id, phase=PHASE_OP, index=d.index, deadline=d.deadline)
    self.disputes[job_id] = d


@external
def vote(job_id: uint256, solver_wins: bool):
    # Voting stays open past the deadline until someone settles: the deadline only says
    # when settling is allowed.
    job: Job = self._job(job_id)
    d: Dispute = self.disputes[job_id]
    assert d.phase == PHASE_VOTE, "market: not in vote phase"
    assert staticcall registry.has_role(msg.sender, REFEREE), "market: not a referee"
    assert msg.sender != job.solver and msg.sender != d.challenger and msg.sender != job.poster, "market: party cannot vote"
    assert not self.voted[job_id][msg.sender], "market: already voted"
    # A vote weighs the referee's whole free stake, locked until release_vote: stake split
    # over many accounts weighs the same, so extra accounts add nothing.
    weight: uint256 = staticcall registry.free_stake(msg.sender)
    assert weight >= referee_min_stake, "market: referee stake too low"
    self.voted[job_id][msg.sender] = True
    self.vote_weight[job_id][msg.sender] = weight
    self.vote_side[job_id][msg.sender] = solver_wins
    if solver_wins:
        self.disputes[job_id].weight_solver += weight
    else:
        self.disputes[job_id].weight_challenger += weight
    log RefereeVoted(job_id=job_id, referee=msg.sender, solver_wins=solver_wins, weight=weight)
    extcall registry.lock(msg.sender, weight)


@external
def settle(job_id: uint256):
    job: Job = self._job(job_id)
    d: Dispute = self.disputes[job_id]
    if job.status == CLAIMED and block.timestamp > job.commit_deadline:
        # The solver never committed: its stake compensates the poster, who gets the bounty back.
        self.jobs[job_id].status = FAILED
        log DisputeSettled(job_id=job_id, winner=job.poster, loser=job.solver, reason="commit deadline")
        extcall registry.slash(job.solver, job.solver_stake, job.poster)
        self._pay(job.poster, job.bounty)
        return
    assert job.status == DISPUTED and block.timestamp > d.deadline, "market: nothing to settle yet"
    if d.phase == PHASE_VOTE:
        if d.weight_solver == d.weight_challenger:
            # No majority (no vote at all, say): a draw would let a cheater walk away with
            # its stake, so the vote runs on until the referees break the tie.
            deadline: uint256 = block.timestamp + vote_timeout
            self.disputes[job_id].deadline = deadline
            log VoteExtended(job_id=job_id, weight_each=d.weight_solver, deadline=deadline)
            return
        self._settle(job_id, d.weight_solver > d.weight_challenger, "referee vote")
        return
    # A bisection round timed out: whoever did not answer loses. When neither answered the
    # challenger loses, since it is the one claiming the committed result is wrong.
    self._settle(job_id, not d.challenger_answered, "deadline")


@external
def release_vote(job_id: uint256, referee: address):
    """After the ruling, frees a referee's vote stake: back to it if it voted for the winner,
    else to the winner (the side it voted against). Anyone may call it for anyone."""
    job: Job = self._job(job_id)
    d: Dispute = self.disputes[job_id]
    assert d.phase == PHASE_SETTLED, "market: dispute not settled"
    weight: uint256 = self.vote_weight[job_id][referee]
    assert weight > 0, "market: no vote to release"
    self.vote_weight[job_id][referee] = 0
    right: bool = self.vote_side[job_id][referee] == (d.winner == job.solver)
    log VoteReleased(job_id=job_id, referee=referee, weight=weight, slashed=not right)
    if right:
        extcall registry.unlock(referee, weight)
    else:
        extcall registry.slash(referee, weight, d.winner)


# ---------------------------------------------------------------- views

@external
@view
def get_job(job_id: uint256) -> Job:
    return self.jobs[job_id]


@external
@view
def get_dispute(job_id: uint256) -> Dispute:
    return self.disputes[job_id]


@external
@view
def get_audit(job_id: uint256) -> Audit:
    return self.audits[job_id]


@external
@view
def get_attestation(job_id: uint256, attester: address) -> Attestation:
    return self.attestations[job_id][attester]


@external
@pure
def commitment(attestation: bytes32, attester: address) -> bytes32:
    """What `attester` commits to: keccak256(attestation ‖ attester), 52 bytes packed."""
    return self._commitment(attestation, attester)


@external
@pure
def verify_proof(
    leaf: bytes32, proof: DynArray[bytes32, MAX_PROOF], index: uint256, n_leaves: uint256, root: bytes32
) -> bool:
    return self._verify_proof(leaf, proof, index, n_leaves, root)


# ---------------------------------------------------------------- internals

@internal
@view
def _job(job_id: uint256) -> Job:
    job: Job = self.jobs[job_id]
    assert job.poster != empty(address), "market: no such job"
    return job


@internal
@view
def _check_turn(job: Job, d: Dispute) -> bool:
    """Checks the caller may answer this round; returns True for the solver."""
    assert msg.sender == job.solver or msg.sender == d.challenger, "market: not a party"
    assert block.timestamp <= d.deadline, "market: round deadline passed"
    is_solver: bool = msg.sender == job.solver
    answered: bool = d.solver_answered if is_solver else d.challenger_answered
    assert not answered, "market: already answered"
    return is_solver


@internal
@pure
def _record(d: Dispute, is_solver: bool, answer: bytes32) -> Dispute:
    r: Dispute = d
    if is_solver:
        r.solver_answered = True
        r.solver_answer = answer
    else:
        r.challenger_answered = True
        r.challenger_answer = answer
    return r


@internal
@pure
def _narrow(d: Dispute, agree: bool) -> Dispute:
    # Invariant: both sides gave `agreed` at lo-1 and differ at hi (solver_diff vs
    # challenger_diff), so the search ends on an index whose input they agree on and whose
    # output they do not. It need not be the first difference: a side may agree again after
    # disagreeing, and any such index is as good for the referee.
    r: Dispute = d
    if agree:
        r.lo = d.index + 1
        r.agreed = d.solver_answer
    else:
        r.hi = d.index
        r.solver_diff = d.solver_answer
        r.challenger_diff = d.challenger_answer
    return r


@internal
def _step_found(job_id: uint256, d: Dispute) -> Dispute:
    """The leaf bisection is over: lo == hi is the disputed leaf; on to the trace commitments."""
    r: Dispute = d
    r.disputed_step = d.hi
    # `agreed` is the leaf both gave at hi-1, still empty when hi == 0.
    r.before = d.agreed
    r.solver_after = d.solver_diff
    r.challenger_after = d.challenger_diff
    r.phase = PHASE_TRACE
    r = self._next_round(r, round_timeout)
    log StepFound(job_id=job_id, step_index=r.disputed_step)
    return r


@internal
@view
def _next_round(d: Dispute, timeout: uint256) -> Dispute:
    r: Dispute = d
    r.solver_answered = False
    r.challenger_answered = False
    r.solver_answer = empty(bytes32)
    r.challenger_answer = empty(bytes32)
    r.deadline = block.timestamp + timeout
    return r


@internal
@pure
def _verify_proof(
    leaf: bytes32, proof: DynArray[bytes32, MAX_PROOF], index: uint256, n_leaves: uint256, root: bytes32
) -> bool:
    # Mirrors bitswarm.verify.merkle: sibling sides come from the index, and the last node of
    # an odd-sized level climbs unchanged, so (index, n_leaves) fixes how many siblings a
    # proof must have. Any other count is rejected rather than hashed.
    if index >= n_leaves:
        return False
    h: bytes32 = sha256(concat(b"\x00", leaf))
    i: uint256 = index
    n: uint256 = n_leaves
    used: uint256 = 0
    for _level: uint256 in range(MAX_PROOF):
        if n == 1:
            break
        if i % 2 == 1 or i + 1 < n:
            if used == len(proof):
                return False
            if i % 2 == 1:
                h = sha256(concat(b"\x01", proof[used], h))
            else:
                h = sha256(concat(b"\x01", h, proof[used]))
            used += 1
        i //= 2
        n = (n + 1) // 2
    return n == 1 and used == len(proof) and h == root


@internal
@pure
def _commitment(attestation: bytes32, attester: address) -> bytes32:
    return keccak256(concat(attestation, convert(attester, bytes20)))


@internal
@view
def _matches(job_id: uint256, attester: address, solver_value: bytes32) -> bool:
    att: Attestation = self.attestations[job_id][attester]
    return att.revealed and att.value == solver_value


@internal
def _unlock_attesters(job_id: uint256, n: uint256):
    for i: uint256 in range(MAX_ATTESTERS):
        if i == n:
            break
        extcall registry.unlock(self.attester_at[job_id][i], min_stake)


@internal
def _pay(to: address, amount: uint256):
    assert extcall token.transfer(to, amount), "market: token transfer failed"


@internal
def _settle(job_id: uint256, solver_wins: bool, reason: String[32]):
    """The loser's stake goes to the winner; the bounty to the solver if it won, else back to
    the poster. Called after every other state write of the transaction."""
    job: Job = self.jobs[job_id]
    d: Dispute = self.disputes[job_id]
    winner: address = job.solver
    loser: address = d.challenger
    if solver_wins:
        self.jobs[job_id].status = DONE
    else:
        winner = d.challenger
        loser = job.solver
        self.jobs[job_id].status = FAILED
    self.disputes[job_id].phase = PHASE_SETTLED
    self.disputes[job_id].winner = winner
    log DisputeSettled(job_id=job_id, winner=winner, loser=loser, reason=reason)
    extcall registry.slash(loser, job.solver_stake, winner)
    extcall registry.unlock(winner, job.solver_stake)
    self._pay(job.solver if solver_wins else job.poster, job.bounty)
    # A dispute voids the job's attestations (the fee follows the bounty): only their stake
    # comes back.
    self._unlock_attesters(job_id, self.audits[job_id].attesters)
