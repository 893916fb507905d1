"""JobMarket.vy: the job life cycle, the Merkle proof check, and the dispute game played out in
full (step bisection, trace commits, op bisection, stake-weighted referee votes, settlement,
vote release) on boa. The adversarial cases (a cheater that plays the game as well as it can)
are in test_dispute_adversary.py."""

from __future__ import annotations

import math
import random

import boa
import pytest

from bitswarm.verify.merkle import merkle_root, proof, verify

from .conftest import (
    BOUNTY,
    CANCELLED,
    CHALLENGE_WINDOW,
    CLAIMED,
    COMMIT_TIMEOUT,
    COMMITTED,
    DISPUTED,
    DONE,
    E18,
    FAILED,
    JOB_STAKE,
    MIN_STAKE,
    NONE,
    OP,
    OPEN,
    OPS_PER_LEAF,
    REFEREE,
    REFEREE_MIN_STAKE,
    ROUND_TIMEOUT,
    SETTLED,
    STAKED,
    STEP,
    TRACE,
    VOTE,
    VOTE_TIMEOUT,
    ZERO,
    answer_op,
    answer_step,
    bisect_ops,
    bisect_steps,
    challenge,
    commit,
    commit_trace,
    committed_job,
    contract_path,
    disputed_job,
    diverge,
    events,
    false_token,
    last_leaf,
    new_referee,
    post_job,
    proof_bytes,
    random_leaves,
    root_bytes,
)

CID = b"\x11" * 32


def holdings(lg, who) -> tuple[int, int, int]:
    node = lg.registry.get_node(who)
    return lg.token.balanceOf(who), node.staked, node.locked


def settled(logs) -> tuple:
    (ev,) = events(logs, "DisputeSettled")
    return ev.winner, ev.loser, ev.reason


# ---------------------------------------------------------------- Merkle proofs


@pytest.mark.parametrize("n", range(1, 18))
def test_verify_proof_agrees_with_the_python_reference(ledger, n):
    m = ledger.market
    leaves = random_leaves(random.Random(n), n)
    root_hex = merkle_root(leaves)
    root = bytes.fromhex(root_hex)
    for i, leaf in enumerate(leaves):
        p = proof_bytes(leaves, i)
        assert verify(leaf, proof(leaves, i), root_hex, i, n)
        assert m.verify_proof(bytes.fromhex(leaf), p, i, n, root)
        # The side of each sibling comes from the index, so a valid proof at the wrong index fails
        # (a proof of a different shape may not even have the right length; both must be False).
        for j in {i - 1, i + 1, n} - {i}:
            if j >= 0:
                assert not m.verify_proof(bytes.fromhex(leaf), p, j, n, root)
        assert not m.verify_proof(bytes.fromhex(leaf), p + [b"\x00" * 32], i, n, root)
        if p:
            assert not m.verify_proof(bytes.fromhex(leaf), p[:-1], i, n, root)
            flipped = bytearray(p[0])
            flipped[0] ^= 1
            assert not m.verify_proof(bytes.fromhex(leaf), [bytes(flipped)] + p[1:], i, n, root)
        other = bytes.fromhex(leaves[(i + 1) % n]) if n > 1 else b"\x01" * 32
        assert not m.verify_proof(other, p, i, n, root)


def test_verify_proof_degenerate_shapes(ledger):
    m = ledger.market
    leaf = b"\x05" * 32
    one = root_bytes([leaf.hex()])
    assert m.verify_proof(leaf, [], 0, 1, one)
    assert not m.verify_proof(leaf, [], 0, 0, one)  # no leaves
    assert not m.verify_proof(leaf, [], 1, 1, one)  # index past the end
    assert not m.verify_proof(leaf, [], 0, 2**70, one)  # deeper than any 64-sibling proof


# ---------------------------------------------------------------- posting, claiming, committing


def test_deployment_views(ledger):
    m = ledger.market
    assert (m.token(), m.registry()) == (ledger.token.address, ledger.registry.address)
    assert (m.commit_timeout(), m.round_timeout(), m.vote_timeout()) == (COMMIT_TIMEOUT, ROUND_TIMEOUT, VOTE_TIMEOUT)
    assert (m.referee_min_stake(), m.min_stake()) == (REFEREE_MIN_STAKE, MIN_STAKE)
    assert m.next_job_id() == 1


def test_min_stake_must_be_positive(ledger):
    with boa.reverts("market: zero min stake"):
        boa.load(contract_path("JobMarket"), ledger.token.address, ledger.registry.address, 1, 1, 1, 0, 0)


def test_post_job_escrows_the_bounty(ledger):
    m, t = ledger.market, ledger.token
    before = t.balanceOf(ledger.poster)
    job_id = m.post_job(CID, 1, 9, 7, BOUNTY, JOB_STAKE, 3600, 0, sender=ledger.poster)
    (ev,) = events(m, "JobPosted")
    assert job_id == 1 and m.next_job_id() == 2
    assert (ev.job_id, ev.poster, ev.spec_cid, ev.kind, ev.num_leaves, ev.ops_per_leaf) == (1, ledger.poster, CID, 1, 9, 7)
    assert (ev.bounty, ev.solver_stake, ev.challenge_window, ev.verify_fee) == (BOUNTY, JOB_STAKE, 3600, 0)
    assert t.balanceOf(ledger.poster) == before - BOUNTY and t.balanceOf(m.address) == BOUNTY
    job = m.get_job(1)
    assert (job.poster, job.status, job.num_leaves, job.ops_per_leaf, job.solver) == (ledger.poster, OPEN, 9, 7, ZERO)
    assert post_job(ledger) == 2


@pytest.mark.parametrize(
    "args, reason",
    [
        ((b"\x00" * 32, 0, 1, 1, 1, MIN_STAKE, 1, 0), "market: empty spec cid"),
        ((CID, 3, 1, 1, 1, MIN_STAKE, 1, 0), "market: bad kind"),
        ((CID, 0, 0, 1, 1, MIN_STAKE, 1, 0), "market: bad leaf count"),
        ((CID, 0, 2**32 + 1, 1, 1, MIN_STAKE, 1, 0), "market: bad leaf count"),
        ((CID, 0, 1, 0, 1, MIN_STAKE, 1, 0), "market: bad op count"),
        ((CID, 0, 1, 2**32 + 1, 1, MIN_STAKE, 1, 0), "market: bad op count"),
        ((CID, 0, 1, 1, 0, MIN_STAKE, 1, 0), "market: zero bounty"),
        # Every claim and every challenge must put at least min_stake at risk.
        ((CID, 0, 1, 1, 1, 0, 1, 0), "market: stake below minimum"),
        ((CID, 0, 1, 1, 1, MIN_STAKE - 1, 1, 0), "market: stake below minimum"),
        ((CID, 0, 1, 1, 1, MIN_STAKE, 0, 0), "market: bad challenge window"),
        ((CID, 0, 1, 1, 1, MIN_STAKE, 30 * 86400 + 1, 0), "market: bad challenge window"),
        # The fee is reserved out of the bounty, and the solver always keeps a part of it.
        ((CID, 0, 1, 1, 5, MIN_STAKE, 1, 5), "market: fee not below bounty"),
        ((CID, 0, 1, 1, 5, MIN_STAKE, 1, 6), "market: fee not below bounty"),
    ],
)
def test_post_job_rejects(ledger, args, reason):
    with boa.reverts(reason):
        ledger.market.post_job(*args, sender=ledger.poster)


def test_post_job_limits_are_inclusive(ledger):
    ledger.market.post_job(CID, 2, 2**32, 2**32, 1, MIN_STAKE, 30 * 86400, 0, sender=ledger.poster)


def test_post_job_needs_the_bounty(ledger):
    with boa.reverts("token: insufficient balance"):
        post_job(ledger, bounty=10**30)


def test_cancel_refunds_open_jobs_only(ledger):
    m, t = ledger.market, ledger.token
    before = t.balanceOf(ledger.poster)
    job_id = post_job(ledger)
    with boa.reverts("market: not poster"):
        m.cancel_job(job_id, sender=ledger.solver)
    m.cancel_job(job_id, sender=ledger.poster)
    (ev,) = events(m, "JobCancelled")
    assert (ev.job_id, ev.poster, ev.bounty) == (job_id, ledger.poster, BOUNTY)
    assert t.balanceOf(ledger.poster) == before and m.get_job(job_id).status == CANCELLED
    with boa.reverts("market: job not open"):
        m.cancel_job(job_id, sender=ledger.poster)
    claimed = post_job(ledger)
    m.claim_job(claimed, sender=ledger.solver)
    with boa.reverts("market: job not open"):
        m.cancel_job(claimed, sender=ledger.poster)


def test_unknown_job_ids_revert(ledger):
    m = ledger.market
    for call in (m.cancel_job, m.claim_job, m.finalize, m.settle):
        with boa.reverts("market: no such job"):
            call(0)
        with boa.reverts("market: no such job"):
            call(1)


def test_claim_locks_the_solver_stake(ledger):
    m, r = ledger.market, ledger.registry
    job_id = post_job(ledger)
    with boa.reverts("market: not a solver"):
        m.claim_job(job_id, sender=ledger.referees[0])
    with boa.reverts("market: not a solver"):
        m.claim_job(job_id, sender=ledger.outsider)
    r.register("poster-peer", 1, sender=ledger.poster)
    with boa.reverts("market: poster cannot solve"):
        m.claim_job(job_id, sender=ledger.poster)
    m.claim_job(job_id, sender=ledger.solver)
    logs = m.get_logs()
    (ev,) = events(logs, "JobClaimed")
    deadline = boa.env.timestamp + COMMIT_TIMEOUT
    assert (ev.job_id, ev.solver, ev.commit_deadline) == (job_id, ledger.solver, deadline)
    (lock,) = events(logs, "StakeLocked")
    assert (lock.node, lock.amount, lock.by) == (ledger.solver, JOB_STAKE, m.address)
    job = m.get_job(job_id)
    assert (job.status, job.solver, job.commit_deadline) == (CLAIMED, ledger.solver, deadline)
    assert r.locked_by(ledger.solver, m.address) == JOB_STAKE
    with boa.reverts("market: job not open"):
        m.claim_job(job_id, sender=ledger.challenger)


def test_claim_needs_free_stake(ledger):
    job_id = post_job(ledger, stake=STAKED + 1)
    with boa.reverts("registry: insufficient free stake"):
        ledger.market.claim_job(job_id, sender=ledger.solver)


def test_commit_result(ledger):
    m = ledger.market
    leaves = random_leaves(random.Random(30), 4)
    job_id = post_job(ledger)
    root, cid = root_bytes(leaves), b"\x44" * 32
    leaf, path = last_leaf(leaves)
    with boa.reverts("market: not solver"):
        m.commit_result(job_id, root, cid, leaf, path, sender=ledger.solver)  # nobody has claimed it
    m.claim_job(job_id, sender=ledger.solver)
    with boa.reverts("market: not solver"):
        m.commit_result(job_id, root, cid, leaf, path, sender=ledger.challenger)
    with boa.reverts("market: empty root"):
        m.commit_result(job_id, b"\x00" * 32, cid, leaf, path, sender=ledger.solver)
    with boa.reverts("market: empty root"):
        m.commit_result(job_id, root, b"\x00" * 32, leaf, path, sender=ledger.solver)
    m.commit_result(job_id, root, cid, leaf, path, sender=ledger.solver)
    (ev,) = events(m, "ResultCommitted")
    deadline = boa.env.timestamp + CHALLENGE_WINDOW
    assert (ev.job_id, ev.result_root, ev.result_cid, ev.result_leaf, ev.challenge_deadline) == (
        job_id,
        root,
        cid,
        leaf,
        deadline,
    )
    job = m.get_job(job_id)
    assert (job.status, job.result_root, job.result_cid, job.result_leaf, job.challenge_deadline) == (
        COMMITTED,
        root,
        cid,
        leaf,
        deadline,
    )
    with boa.reverts("market: job not claimed"):
        m.commit_result(job_id, root, cid, leaf, path, sender=ledger.solver)


def _bad_last_leaf_claims(rng: random.Random, leaves: list[str]) -> list[tuple[str, bytes, bytes, list[bytes]]]:
    """(what, root, leaf, proof) claims that `leaves`' last leaf is in a root, each one false: a
    forged proof, a valid proof of another index, a valid proof against another root, the wrong
    leaf under the right proof, a proof one sibling too long or too short, the proof the leaf
    would have in a longer tree, and an arbitrary root with no tree behind it."""
    n = len(leaves)
    root = root_bytes(leaves)
    leaf, path = last_leaf(leaves)
    other_tree = leaves[:-1] + random_leaves(rng, 1) if n > 1 else random_leaves(rng, 1)
    claims = [
        ("another root", root_bytes(other_tree), leaf, path),
        ("the wrong leaf", root, rng.randbytes(32), path),
        ("a sibling too many", root, leaf, path + [rng.randbytes(32)]),
        ("no tree behind the root", b"\x33" * 32, leaf, path),
    ]
    if n > 1:
        claims += [
            ("a forged proof", root, leaf, [rng.randbytes(32) for _ in path]),
            ("a sibling too few", root, leaf, path[:-1]),
            # The same tree's leaf 0 with its own valid proof: a proof is bound to its index.
            ("another index", root, bytes.fromhex(leaves[0]), proof_bytes(leaves, 0)),
            ("another index", root, bytes.fromhex(leaves[n - 2]), proof_bytes(leaves, n - 2)),
        ]
    # The same last leaf's proof in a tree one leaf longer: the proof is bound to num_leaves.
    claims.append(("a proof for another tree size", root, leaf, proof_bytes([*leaves, leaves[-1]], n)))
    return claims


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8])
def test_commit_refuses_a_last_leaf_not_in_the_result(ledger, n):
    """The solver must prove its last leaf (the result) against its root, at index num_leaves-1
    of a num_leaves-leaf tree: anything else is refused and the job stays claimed."""
    rng = random.Random(31 + n)
    leaves = random_leaves(rng, n)
    job_id = post_job(ledger, num_leaves=n)
    ledger.market.claim_job(job_id, sender=ledger.solver)
    for what, root, leaf, path in _bad_last_leaf_claims(rng, leaves):
        with boa.reverts("market: last leaf not in the result"):
            ledger.market.commit_result(job_id, root, CID, leaf, path, sender=ledger.solver)
        assert ledger.market.get_job(job_id).status == CLAIMED, what
    commit(ledger, job_id, leaves)
    job = ledger.market.get_job(job_id)
    assert (job.status, job.result_root, job.result_leaf) == (COMMITTED, root_bytes(leaves), bytes.fromhex(leaves[-1]))


def test_commit_after_deadline_reverts(ledger):
    leaves = random_leaves(random.Random(32), 3)
    job_id = post_job(ledger, num_leaves=3)
    ledger.market.claim_job(job_id, sender=ledger.solver)
    boa.env.time_travel(seconds=COMMIT_TIMEOUT)
    commit(ledger, job_id, leaves)  # the last second
    job_id = post_job(ledger, num_leaves=3)
    ledger.market.claim_job(job_id, sender=ledger.solver)
    boa.env.time_travel(seconds=COMMIT_TIMEOUT + 1)
    with boa.reverts("market: commit deadline passed"):
        commit(ledger, job_id, leaves)


def test_unchallenged_result_is_finalized_and_paid(ledger):
    m = ledger.market
    leaves = random_leaves(random.Random(1), 4)
    before = holdings(ledger, ledger.solver)
    job_id = committed_job(ledger, leaves)
    with boa.reverts("market: challenge window open"):
        m.finalize(job_id)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    m.finalize(job_id, sender=ledger.outsider)  # anyone may finalize
    logs = m.get_logs()
    (ev,) = events(logs, "JobFinalized")
    assert (ev.job_id, ev.solver, ev.bounty) == (job_id, ledger.solver, BOUNTY)
    assert events(logs, "StakeUnlocked")[0].amount == JOB_STAKE
    assert holdings(ledger, ledger.solver) == (before[0] + BOUNTY, STAKED, 0)
    assert m.get_job(job_id).status == DONE
    with boa.reverts("market: job not committed"):
        m.finalize(job_id)


def test_finalize_needs_a_committed_job(ledger):
    job_id = post_job(ledger)
    with boa.reverts("market: job not committed"):
        ledger.market.finalize(job_id)


def test_minimum_stake_jobs_work(ledger):
    leaves = random_leaves(random.Random(2), 3)
    job_id = committed_job(ledger, leaves, stake=MIN_STAKE)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    ledger.market.finalize(job_id)
    assert ledger.market.get_job(job_id).status == DONE


def test_token_returning_false_is_a_revert():
    token = false_token()
    registry = boa.load(contract_path("NodeRegistry"), token.address, 0)
    market = boa.load(contract_path("JobMarket"), token.address, registry.address, 1, 1, 1, 0, 1)
    market.post_job(CID, 0, 1, 1, 5, 1, 1, 0)
    token.set_fail(True)
    with boa.reverts("market: token transfer failed"):
        market.post_job(CID, 0, 1, 1, 5, 1, 1, 0)
    with boa.reverts("market: token transfer failed"):
        market.cancel_job(1)


# ---------------------------------------------------------------- challenge


def test_challenge_checks(ledger):
    m = ledger.market
    leaves = random_leaves(random.Random(3), 5)
    theirs = diverge(random.Random(4), leaves, 2)
    other, (other_leaf, other_path) = root_bytes(theirs), last_leaf(theirs)
    open_job = post_job(ledger, num_leaves=5)
    with boa.reverts("market: job not committed"):
        m.challenge(open_job, other, other_leaf, other_path, sender=ledger.challenger)
    job_id = committed_job(ledger, leaves)
    with boa.reverts("market: not a verifier"):
        m.challenge(job_id, other, other_leaf, other_path, sender=ledger.referees[0])
    with boa.reverts("market: solver cannot challenge"):
        m.challenge(job_id, other, other_leaf, other_path, sender=ledger.solver)
    # The poster is paid back when the solver loses: it may not be the one it loses to.
    ledger.registry.register("poster-peer", 2, sender=ledger.poster)
    ledger.registry.stake(JOB_STAKE, sender=ledger.poster)
    with boa.reverts("market: poster cannot challenge"):
        m.challenge(job_id, other, other_leaf, other_path, sender=ledger.poster)
    with boa.reverts("market: empty root"):
        m.challenge(job_id, b"\x00" * 32, other_leaf, other_path, sender=ledger.challenger)
    with boa.reverts("market: root agrees with result"):
        m.challenge(job_id, root_bytes(leaves), *last_leaf(leaves), sender=ledger.challenger)

    challenge(ledger, job_id, theirs)
    logs = m.get_logs()
    (ev,) = events(logs, "JobChallenged")
    assert (ev.job_id, ev.challenger, ev.challenger_root) == (job_id, ledger.challenger, other)
    # The last leaves are known to differ (both proven): the first query is the middle leaf.
    (q,) = events(logs, "DisputeQuery")
    deadline = boa.env.timestamp + ROUND_TIMEOUT
    assert (q.job_id, q.phase, q.index, q.deadline) == (job_id, STEP, 2, deadline)
    assert not events(logs, "StepFound")
    (lock,) = events(logs, "StakeLocked")
    assert (lock.node, lock.amount) == (ledger.challenger, JOB_STAKE)
    d = m.get_dispute(job_id)
    assert (d.challenger, d.solver_root, d.challenger_root) == (ledger.challenger, root_bytes(leaves), other)
    assert (d.phase, d.lo, d.hi, d.index, d.deadline) == (STEP, 0, 4, 2, deadline)
    # The bisection's evidence at hi = num_leaves-1: the two proven last leaves.
    assert (d.agreed, d.solver_diff, d.challenger_diff) == (EMPTY, _b(leaves[-1]), other_leaf)
    assert not d.solver_answered and not d.challenger_answered
    assert m.get_job(job_id).status == DISPUTED

    # One challenge per job.
    ledger.registry.register("late", 2, sender=ledger.outsider)
    ledger.registry.stake(JOB_STAKE, sender=ledger.outsider)
    with boa.reverts("market: job not committed"):
        challenge(ledger, job_id, random_leaves(random.Random(5), 5), sender=ledger.outsider)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8])
def test_challenge_refuses_a_last_leaf_not_in_the_challenge(ledger, n):
    """The challenger proves its own last leaf against its own root, exactly as the solver did at
    commit: a forged proof, another index's proof, a proof for another root... are refused, and
    nothing is locked."""
    rng = random.Random(40 + n)
    truth = random_leaves(rng, n)
    wrong = diverge(rng, truth, n // 2)
    job_id = committed_job(ledger, wrong)
    for what, root, leaf, path in _bad_last_leaf_claims(rng, truth):
        if root == root_bytes(wrong):
            continue
        with boa.reverts("market: last leaf not in the challenge"):
            ledger.market.challenge(job_id, root, leaf, path, sender=ledger.challenger)
        assert ledger.market.get_job(job_id).status == COMMITTED, what
    # Nor may it borrow the solver's last leaf and proof under its own root.
    with boa.reverts("market: last leaf not in the challenge"):
        ledger.market.challenge(job_id, root_bytes(truth), *last_leaf(wrong), sender=ledger.challenger)
    assert ledger.registry.get_node(ledger.challenger).locked == 0
    challenge(ledger, job_id, truth)
    assert ledger.market.get_job(job_id).status == DISPUTED


def test_challenge_window_closes(ledger):
    leaves = random_leaves(random.Random(5), 2)
    job_id = committed_job(ledger, leaves)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    with boa.env.anchor():
        challenge(ledger, job_id, diverge(random.Random(55), leaves, 1))  # the last second
    boa.env.time_travel(seconds=1)
    with boa.reverts("market: challenge window closed"):
        challenge(ledger, job_id, diverge(random.Random(55), leaves, 1))


def test_challenger_needs_free_stake(ledger):
    leaves = random_leaves(random.Random(6), 2)
    job_id = committed_job(ledger, leaves)
    ledger.registry.request_unbond(STAKED - JOB_STAKE + 1, sender=ledger.challenger)
    with boa.reverts("registry: insufficient free stake"):
        challenge(ledger, job_id, diverge(random.Random(66), leaves, 0))


def test_an_unstaked_verifier_cannot_challenge(ledger):
    """Every job stakes at least min_stake, so a challenge always puts stake at risk: a fresh,
    unstaked verifier account cannot challenge for free."""
    leaves = random_leaves(random.Random(60), 2)
    job_id = committed_job(ledger, leaves, stake=MIN_STAKE)
    ledger.registry.register("fresh", 2, sender=ledger.outsider)
    with boa.reverts("registry: insufficient free stake"):
        challenge(ledger, job_id, diverge(random.Random(61), leaves, 1), sender=ledger.outsider)


# ---------------------------------------------------------------- the dispute game, honestly played

EMPTY = b"\x00" * 32
STEP_CASES = [(t, k) for t in (1, 2, 7, 16) for k in sorted({0, t // 2, t - 1})]


def _b(hex_leaf: str) -> bytes:
    return bytes.fromhex(hex_leaf)


def _release_all(lg, job_id: int, referees) -> list:
    logs = []
    for r in referees:
        lg.market.release_vote(job_id, r, sender=lg.outsider)  # anyone may release anyone's vote
        logs += lg.market.get_logs()
    return logs


@pytest.mark.parametrize("n_leaves, k", STEP_CASES)
def test_full_game_solver_wrong_at_step_k(ledger, n_leaves, k):
    """The solver's run goes wrong at step k; the honest challenger wins the referee vote."""
    rng = random.Random(n_leaves * 100 + k)
    truth = random_leaves(rng, n_leaves)
    wrong = diverge(rng, truth, k)
    poster0, solver0, chal0 = (holdings(ledger, w) for w in (ledger.poster, ledger.solver, ledger.challenger))
    job_id = disputed_job(ledger, wrong, truth)

    logs = ledger.market.get_logs() + bisect_steps(ledger, job_id, wrong, truth)  # the challenge's, then the rounds'
    (found,) = events(logs, "StepFound")
    assert (found.job_id, found.step_index) == (job_id, k)
    # The last leaves were proven at commit and challenge: the bisection starts below them.
    rounds = len(events(logs, "StepAnswered")) // 2
    assert rounds <= math.ceil(math.log2(n_leaves))
    assert [q.index for q in events(logs, "DisputeQuery")][:1] == ([(n_leaves - 1) // 2] if n_leaves > 1 else [])
    answered = events(logs, "StepAnswered")
    assert all(a.index < n_leaves - 1 for a in answered)
    if n_leaves > 1:
        assert answered[0].index == (n_leaves - 1) // 2 and answered[0].party == ledger.solver
    d = ledger.market.get_dispute(job_id)
    assert (d.phase, d.disputed_step, d.lo, d.hi) == (TRACE, k, k, k)
    assert d.deadline == boa.env.timestamp + ROUND_TIMEOUT
    assert not d.solver_answered and not d.challenger_answered
    # The evidence the referee needs: the agreed state before step k and each side's after.
    assert d.before == (_b(truth[k - 1]) if k else EMPTY)
    assert (d.solver_after, d.challenger_after) == (_b(wrong[k]), _b(truth[k]))

    # Op traces of step k: first different op at j.
    ops = random_leaves(rng, OPS_PER_LEAF)
    j = rng.randrange(OPS_PER_LEAF)
    wrong_ops = diverge(rng, ops, j)
    logs = bisect_ops(ledger, job_id, wrong_ops, ops)
    (op_found,) = events(logs, "OpFound")
    assert (op_found.job_id, op_found.step, op_found.op) == (job_id, k, j)
    d = ledger.market.get_dispute(job_id)
    assert (d.phase, d.disputed_op) == (VOTE, j)
    assert d.deadline == boa.env.timestamp + VOTE_TIMEOUT
    assert d.agreed == (_b(ops[j - 1]) if j else d.before)
    assert (d.solver_diff, d.challenger_diff) == (_b(wrong_ops[j]), _b(ops[j]))

    for referee, solver_wins in zip(ledger.referees, (False, False, True), strict=True):
        ledger.market.vote(job_id, solver_wins, sender=referee)
    with boa.reverts("market: nothing to settle yet"):
        ledger.market.settle(job_id)
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    ledger.market.settle(job_id)
    assert settled(ledger.market.get_logs()) == (ledger.challenger, ledger.solver, "referee vote")

    job, d = ledger.market.get_job(job_id), ledger.market.get_dispute(job_id)
    assert (job.status, d.phase, d.winner) == (FAILED, SETTLED, ledger.challenger)
    assert (d.weight_solver, d.weight_challenger) == (STAKED, 2 * STAKED)
    # Each referee voted with its whole free stake; the one that backed the loser pays it to the winner.
    logs = _release_all(ledger, job_id, ledger.referees)
    assert [(e.referee, e.weight, e.slashed) for e in events(logs, "VoteReleased")] == [
        (ledger.referees[0], STAKED, False),
        (ledger.referees[1], STAKED, False),
        (ledger.referees[2], STAKED, True),
    ]
    assert holdings(ledger, ledger.referees[2])[1:] == (0, 0)
    assert holdings(ledger, ledger.poster) == poster0  # the bounty came back
    assert holdings(ledger, ledger.solver) == (solver0[0], STAKED - JOB_STAKE, 0)
    assert holdings(ledger, ledger.challenger) == (chal0[0] + JOB_STAKE + STAKED, STAKED, 0)
    assert ledger.token.balanceOf(ledger.market.address) == 0


def _mixed_tree(rng: random.Random, truth: list[str], wrong_at: set[int]) -> list[str]:
    return [rng.randbytes(32).hex() if i in wrong_at else leaf for i, leaf in enumerate(truth)]


@pytest.mark.parametrize("seed", range(12))
def test_step_bisection_ends_between_an_agreed_leaf_and_a_differing_one(ledger, seed):
    """A cheater's tree need not go wrong once and stay wrong: it may agree again later. The
    search still ends on a leaf where the two differ, right after one they agree on."""
    rng = random.Random(seed)
    n = rng.randint(1, 12)
    truth = random_leaves(rng, n)
    cheat = _mixed_tree(rng, truth, {i for i in range(n) if rng.random() < 0.4} | {n - 1})
    job_id = disputed_job(ledger, cheat, truth)
    bisect_steps(ledger, job_id, cheat, truth)
    d = ledger.market.get_dispute(job_id)
    k = d.disputed_step
    assert d.phase == TRACE and cheat[k] != truth[k]
    assert (d.solver_after, d.challenger_after) == (_b(cheat[k]), _b(truth[k]))
    if k == 0:
        assert d.before == EMPTY
    else:
        assert cheat[k - 1] == truth[k - 1] and d.before == _b(truth[k - 1])


OP_CASES = [(n, j) for n in (1, 2, 5, 8) for j in sorted({0, n // 2, n - 1}) + [None]]


def _op_traces(rng, n_ops: int, j: int | None) -> tuple[list[str], list[str]]:
    """Two traces of n_ops ops, first different at op j (identical when j is None)."""
    base = random_leaves(rng, n_ops)
    return base, (base if j is None else diverge(rng, base, j))


def _at_trace_phase(lg, seed: int, ops_per_leaf: int = OPS_PER_LEAF) -> int:
    """A one-leaf job whose final (only) state is disputed: the challenge goes straight to the
    trace phase."""
    rng = random.Random(seed)
    s, c = random_leaves(rng, 1), random_leaves(rng, 1)
    job_id = disputed_job(lg, s, c, ops_per_leaf=ops_per_leaf)
    assert lg.market.get_dispute(job_id).phase == TRACE
    return job_id


@pytest.mark.parametrize("n_ops, j", OP_CASES)
def test_op_bisection_finds_the_disputed_op(ledger, n_ops, j):
    job_id = _at_trace_phase(ledger, 7, n_ops)
    d0 = ledger.market.get_dispute(job_id)
    s_ops, c_ops = _op_traces(random.Random(n_ops * 31), n_ops, j)
    logs = bisect_ops(ledger, job_id, s_ops, c_ops)
    expected = n_ops if j is None else j
    (found,) = events(logs, "OpFound")
    assert (found.step, found.op) == (0, expected)
    assert len(events(logs, "TraceCommitted")) == 2
    first_query = events(logs, "DisputeQuery")[0]
    assert (first_query.phase, first_query.index) == (OP, n_ops // 2)
    d = ledger.market.get_dispute(job_id)
    assert (d.phase, d.disputed_op) == (VOTE, expected)
    assert (d.solver_trace_root, d.challenger_trace_root) == (root_bytes(s_ops), root_bytes(c_ops))
    # What the referee reads: the agreed input of the op, and each side's output.
    assert d.before == EMPTY  # step 0: the referee derives its input state from the spec
    assert d.agreed == (_b(s_ops[expected - 1]) if expected else EMPTY)
    if j is None:  # the virtual op: each side's own state after the step
        assert (d.solver_diff, d.challenger_diff) == (d0.solver_after, d0.challenger_after)
    else:
        assert (d.solver_diff, d.challenger_diff) == (_b(s_ops[j]), _b(c_ops[j]))


def test_lazy_solver_with_an_honest_trace_ends_at_the_virtual_op_and_is_slashed(ledger):
    """Adversary (a): the solver commits a wrong state for step k but, asked for the step's op
    trace, commits the honest one, op for op. Every op agrees, so the search ends on the virtual
    op ops_per_leaf, where the referee compares the two committed states after the step."""
    rng = random.Random(61)
    truth = random_leaves(rng, 6)
    lazy = diverge(rng, truth, 3)
    ops = random_leaves(rng, OPS_PER_LEAF)  # the honest trace of step 3, which ends in truth[3]
    solver0 = holdings(ledger, ledger.solver)
    job_id = disputed_job(ledger, lazy, truth)
    bisect_steps(ledger, job_id, lazy, truth)
    bisect_ops(ledger, job_id, ops, ops)
    d = ledger.market.get_dispute(job_id)
    assert (d.phase, d.disputed_step, d.disputed_op) == (VOTE, 3, OPS_PER_LEAF)
    assert d.agreed == _b(ops[-1])
    assert (d.solver_diff, d.challenger_diff) == (_b(lazy[3]), _b(truth[3]))
    assert d.solver_diff != d.challenger_diff
    # The referee finishes the step from the agreed last op digest: it ends in truth[3].
    ledger.market.vote(job_id, False, sender=ledger.referees[0])
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    ledger.market.settle(job_id)
    assert settled(ledger.market.get_logs()) == (ledger.challenger, ledger.solver, "referee vote")
    assert holdings(ledger, ledger.solver) == (solver0[0], STAKED - JOB_STAKE, 0)


@pytest.mark.parametrize("cheat", ["solver", "challenger"])
def test_a_trace_of_another_length_cannot_be_committed(ledger, cheat):
    """Adversary (b): a side whose trace is shorter or longer than the job's op count cannot
    commit it; if it has no trace of the right length it can only miss the deadline and lose."""
    job_id = _at_trace_phase(ledger, 62)
    who = ledger.solver if cheat == "solver" else ledger.challenger
    honest = ledger.challenger if cheat == "solver" else ledger.solver
    ops = random_leaves(random.Random(62), OPS_PER_LEAF + 1)
    for n_ops in (0, 1, OPS_PER_LEAF - 1, OPS_PER_LEAF + 1, 2**32):
        with boa.reverts("market: op count is fixed by the job"):
            ledger.market.commit_trace(job_id, root_bytes(ops[:n_ops] or ops[:1]), n_ops, sender=who)
    commit_trace(ledger, job_id, honest, ops[:OPS_PER_LEAF])
    cheat0 = holdings(ledger, who)
    boa.env.time_travel(seconds=ROUND_TIMEOUT + 1)
    ledger.market.settle(job_id, sender=ledger.outsider)
    assert settled(ledger.market.get_logs()) == (honest, who, "deadline")
    assert holdings(ledger, who) == (cheat0[0], STAKED - JOB_STAKE, 0)


@pytest.mark.parametrize("n", [2, 3, 6, 9])
@pytest.mark.parametrize("garbage", ["challenger", "solver", "both"])
def test_a_challenge_naming_the_solvers_last_leaf_is_refused(ledger, n, garbage):
    """Leaves are cumulative, so equal last leaves are equal results: a challenge whose proven
    last leaf is the solver's is refused ("results agree") even when the roots differ, whichever
    side's middle leaves are garbage. Nobody is drawn into a dispute, nothing is locked, and the
    result finalizes as committed."""
    rng = random.Random(8 * n + len(garbage))
    truth = random_leaves(rng, n)
    junk = [rng.randbytes(32).hex() for _ in range(n - 1)] + truth[-1:]  # every leaf wrong but the last
    s, c = {"challenger": (truth, junk), "solver": (junk, truth), "both": (junk, _mixed_tree(rng, truth, {0}))}[garbage]
    assert root_bytes(s) != root_bytes(c) and s[-1] == c[-1]
    solver0, chal0 = holdings(ledger, ledger.solver), holdings(ledger, ledger.challenger)
    job_id = committed_job(ledger, s)
    with boa.reverts("market: results agree"):
        challenge(ledger, job_id, c)
    assert ledger.market.get_job(job_id).status == COMMITTED
    assert ledger.market.get_dispute(job_id).phase == NONE
    assert holdings(ledger, ledger.challenger) == chal0
    # A challenge with a different last leaf is still taken, by the same verifier.
    with boa.env.anchor():
        challenge(ledger, job_id, diverge(rng, c, n - 1))
        assert ledger.market.get_job(job_id).status == DISPUTED
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    ledger.market.finalize(job_id)
    assert holdings(ledger, ledger.solver) == (solver0[0] + BOUNTY, STAKED, 0)
    assert holdings(ledger, ledger.challenger) == chal0


@pytest.mark.parametrize("cheat", ["solver", "challenger"])
def test_one_leaf_job_goes_straight_to_the_trace_phase(ledger, cheat):
    """With one leaf, the proven last leaves are the only leaves: the challenge itself finds
    step 0 (nothing agreed before it, the referee derives its input from the spec), and the
    game goes on to the trace commitments and op bisection as for any step."""
    rng = random.Random(70)
    truth, wrong = random_leaves(rng, 1), random_leaves(rng, 1)
    s, c = (wrong, truth) if cheat == "solver" else (truth, wrong)
    job_id = disputed_job(ledger, s, c)
    logs = ledger.market.get_logs()
    (found,) = events(logs, "StepFound")
    assert (found.job_id, found.step_index) == (job_id, 0)
    assert not events(logs, "DisputeQuery") and len(events(logs, "JobChallenged")) == 1
    d = ledger.market.get_dispute(job_id)
    assert (d.phase, d.lo, d.hi, d.disputed_step) == (TRACE, 0, 0, 0)
    assert d.deadline == boa.env.timestamp + ROUND_TIMEOUT
    assert not d.solver_answered and not d.challenger_answered
    assert (d.before, d.solver_after, d.challenger_after) == (EMPTY, _b(s[0]), _b(c[0]))
    with boa.reverts("market: not in step phase"):
        ledger.market.respond_step(job_id, _b(s[0]), [], sender=ledger.solver)
    right_ops, wrong_ops = _op_traces(rng, OPS_PER_LEAF, 2)
    s_ops, c_ops = (wrong_ops, right_ops) if cheat == "solver" else (right_ops, wrong_ops)
    bisect_ops(ledger, job_id, s_ops, c_ops)
    d = ledger.market.get_dispute(job_id)
    assert (d.phase, d.disputed_step, d.disputed_op) == (VOTE, 0, 2)
    ledger.market.vote(job_id, cheat == "challenger", sender=ledger.referees[0])
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    ledger.market.settle(job_id)
    honest, cheater = (ledger.challenger, ledger.solver) if cheat == "solver" else (ledger.solver, ledger.challenger)
    assert settled(ledger.market.get_logs()) == (honest, cheater, "referee vote")


# ---------------------------------------------------------------- referees


def _at_vote_phase(lg, seed: int) -> int:
    job_id = _at_trace_phase(lg, seed)
    s_ops, c_ops = _op_traces(random.Random(seed), OPS_PER_LEAF, 1)
    bisect_ops(lg, job_id, s_ops, c_ops)
    return job_id


@pytest.mark.parametrize(
    "stakes, votes, outcome",
    [
        ((STAKED, STAKED, STAKED), (True, True, False), "solver"),
        ((STAKED,), (True,), "solver"),
        ((STAKED, STAKED, STAKED), (False, True, False), "challenger"),
        # Stake decides, not heads: one referee with more stake outweighs two with less.
        ((500 * E18, 200 * E18, 200 * E18), (True, False, False), "solver"),
        ((200 * E18, 350 * E18, 100 * E18), (True, False, True), "challenger"),
    ],
)
def test_referee_vote_outcomes(ledger, stakes, votes, outcome):
    job_id = _at_vote_phase(ledger, 9)
    referees = [new_referee(ledger, f"judge{i}", s) for i, s in enumerate(stakes)]
    poster0, solver0, chal0 = (holdings(ledger, w) for w in (ledger.poster, ledger.solver, ledger.challenger))
    for referee, stake, solver_wins in zip(referees, stakes, votes, strict=True):
        ledger.market.vote(job_id, solver_wins, sender=referee)
        logs = ledger.market.get_logs()
        (ev,) = events(logs, "RefereeVoted")
        assert (ev.job_id, ev.referee, ev.solver_wins, ev.weight) == (job_id, referee, solver_wins, stake)
        (lock,) = events(logs, "StakeLocked")
        assert (lock.node, lock.amount, lock.by) == (referee, stake, ledger.market.address)
        assert (ledger.market.vote_weight(job_id, referee), ledger.market.vote_side(job_id, referee)) == (
            stake,
            solver_wins,
        )
    d = ledger.market.get_dispute(job_id)
    for_solver = sum(s for s, v in zip(stakes, votes, strict=True) if v)
    assert (d.weight_solver, d.weight_challenger) == (for_solver, sum(stakes) - for_solver)
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    ledger.market.settle(job_id)
    logs = ledger.market.get_logs()
    poster, solver, chal = (holdings(ledger, w) for w in (ledger.poster, ledger.solver, ledger.challenger))
    status = ledger.market.get_job(job_id).status
    wrong_votes = sum(s for s, v in zip(stakes, votes, strict=True) if v != (outcome == "solver"))
    if outcome == "solver":
        assert settled(logs) == (ledger.solver, ledger.challenger, "referee vote")
        assert status == DONE and poster == poster0
        assert solver == (solver0[0] + BOUNTY + JOB_STAKE, STAKED, 0)
        assert chal == (chal0[0], STAKED - JOB_STAKE, 0)
        (slash,) = events(logs, "Slashed")
        assert (slash.node, slash.amount, slash.to) == (ledger.challenger, JOB_STAKE, ledger.solver)
        assert slash.by == ledger.market.address
        winner, winner0 = ledger.solver, solver
    else:
        assert settled(logs) == (ledger.challenger, ledger.solver, "referee vote")
        assert status == FAILED and poster[0] == poster0[0] + BOUNTY
        assert solver == (solver0[0], STAKED - JOB_STAKE, 0)
        assert chal == (chal0[0] + JOB_STAKE, STAKED, 0)
        winner, winner0 = ledger.challenger, chal
    assert ledger.market.get_dispute(job_id).phase == SETTLED
    with boa.reverts("market: nothing to settle yet"):
        ledger.market.settle(job_id)

    _release_all(ledger, job_id, referees)
    assert holdings(ledger, winner)[0] == winner0[0] + wrong_votes
    for referee, stake, solver_wins in zip(referees, stakes, votes, strict=True):
        right = solver_wins == (outcome == "solver")
        assert holdings(ledger, referee) == (0, stake if right else 0, 0)


def test_sybil_referees_buy_nothing(ledger):
    """Adversary (c): the solver cheats and splits some stake over two throwaway referee
    accounts (the minimum each) that vote for it; one honest referee with more stake than both
    together votes against. Counting heads, 2 beat 1; counting stake, the honest side wins, and
    the throwaways' locked stake goes to the side they voted against."""
    job_id = _at_vote_phase(ledger, 63)
    sybils = [new_referee(ledger, f"sybil{i}", REFEREE_MIN_STAKE) for i in range(2)]
    honest = ledger.referees[0]
    chal0 = holdings(ledger, ledger.challenger)
    for s in sybils:
        ledger.market.vote(job_id, True, sender=s)
    ledger.market.vote(job_id, False, sender=honest)
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    ledger.market.settle(job_id)
    assert settled(ledger.market.get_logs()) == (ledger.challenger, ledger.solver, "referee vote")
    logs = _release_all(ledger, job_id, [*sybils, honest])
    assert [(e.referee, e.slashed) for e in events(logs, "VoteReleased")] == [
        (sybils[0], True),
        (sybils[1], True),
        (honest, False),
    ]
    slashes = events(logs, "Slashed")
    assert [(e.node, e.amount, e.to) for e in slashes] == [(s, REFEREE_MIN_STAKE, ledger.challenger) for s in sybils]
    assert holdings(ledger, ledger.challenger)[0] == chal0[0] + JOB_STAKE + 2 * REFEREE_MIN_STAKE
    assert holdings(ledger, honest) == (holdings(ledger, honest)[0], STAKED, 0)
    for s in sybils:
        assert holdings(ledger, s) == (0, 0, 0)


@pytest.mark.parametrize("votes", [(), (True, False)])
def test_no_majority_extends_the_vote_instead_of_a_draw(ledger, votes):
    """Adversary (f): no votes, or equal stake on both sides, ends nothing: settle extends the
    vote (a draw would hand a cheater its stake back) until a vote breaks the tie."""
    job_id = _at_vote_phase(ledger, 64)
    for referee, solver_wins in zip(ledger.referees, votes, strict=False):
        ledger.market.vote(job_id, solver_wins, sender=referee)
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    ledger.market.settle(job_id, sender=ledger.outsider)
    logs = ledger.market.get_logs()
    (ev,) = events(logs, "VoteExtended")
    deadline = boa.env.timestamp + VOTE_TIMEOUT
    assert (ev.job_id, ev.weight_each, ev.deadline) == (job_id, STAKED if votes else 0, deadline)
    assert not events(logs, "DisputeSettled") and not events(logs, "Slashed")
    d = ledger.market.get_dispute(job_id)
    assert (d.phase, d.deadline, ledger.market.get_job(job_id).status) == (VOTE, deadline, DISPUTED)
    with boa.reverts("market: nothing to settle yet"):
        ledger.market.settle(job_id)
    # Votes still count after a deadline, until someone settles.
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    ledger.market.vote(job_id, False, sender=ledger.referees[2])
    ledger.market.settle(job_id)
    assert settled(ledger.market.get_logs()) == (ledger.challenger, ledger.solver, "referee vote")


def test_vote_checks(ledger):
    m, r = ledger.market, ledger.registry
    job_id = _at_trace_phase(ledger, 10)
    with boa.reverts("market: not in vote phase"):
        m.vote(job_id, True, sender=ledger.referees[0])
    s_ops, c_ops = _op_traces(random.Random(10), OPS_PER_LEAF, 0)
    bisect_ops(ledger, job_id, s_ops, c_ops)
    with boa.reverts("market: not a referee"):
        m.vote(job_id, True, sender=ledger.outsider)
    # Parties may hold the referee role too, but never judge their own dispute.
    r.register("poster-peer", REFEREE, sender=ledger.poster)
    r.stake(REFEREE_MIN_STAKE, sender=ledger.poster)
    r.register("peer-1", 15, sender=ledger.solver)
    r.register("peer-2", 15, sender=ledger.challenger)
    for party in (ledger.poster, ledger.solver, ledger.challenger):
        with boa.reverts("market: party cannot vote"):
            m.vote(job_id, True, sender=party)
    # The weight is free stake: stake locked elsewhere does not count.
    low = ledger.referees[1]
    r.request_unbond(STAKED - REFEREE_MIN_STAKE, sender=low)
    other = _at_vote_phase(ledger, 11)
    m.vote(other, True, sender=low)  # locks all of its (free) stake
    with boa.reverts("market: referee stake too low"):
        m.vote(job_id, True, sender=low)
    m.vote(job_id, False, sender=ledger.referees[0])
    with boa.reverts("market: already voted"):
        m.vote(job_id, True, sender=ledger.referees[0])
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    m.vote(job_id, False, sender=ledger.referees[2])  # past the deadline, not yet settled: counts
    d = m.get_dispute(job_id)
    assert (d.weight_solver, d.weight_challenger) == (0, 2 * STAKED)
    assert m.voted(job_id, ledger.referees[0]) and not m.voted(job_id, low)
    assert r.get_node(low).locked == REFEREE_MIN_STAKE == m.vote_weight(other, low)
    m.settle(job_id)
    with boa.reverts("market: not in vote phase"):
        m.vote(job_id, True, sender=ledger.referees[1])


def test_release_vote_checks(ledger):
    m = ledger.market
    job_id = _at_vote_phase(ledger, 12)
    m.vote(job_id, True, sender=ledger.referees[0])
    with boa.reverts("market: dispute not settled"):
        m.release_vote(job_id, ledger.referees[0])
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    m.settle(job_id)
    with boa.reverts("market: no vote to release"):
        m.release_vote(job_id, ledger.referees[1])  # never voted
    m.release_vote(job_id, ledger.referees[0], sender=ledger.referees[0])
    logs = m.get_logs()
    (ev,) = events(logs, "VoteReleased")
    assert (ev.job_id, ev.referee, ev.weight, ev.slashed) == (job_id, ledger.referees[0], STAKED, False)
    (unlock,) = events(logs, "StakeUnlocked")
    assert (unlock.node, unlock.amount, unlock.by) == (ledger.referees[0], STAKED, m.address)
    assert m.vote_weight(job_id, ledger.referees[0]) == 0
    with boa.reverts("market: no vote to release"):
        m.release_vote(job_id, ledger.referees[0])  # once only
    # A dispute that ended by deadline had no votes to release.
    rng = random.Random(13)
    s = random_leaves(rng, 2)
    quiet = disputed_job(ledger, s, diverge(rng, s, 1))
    boa.env.time_travel(seconds=ROUND_TIMEOUT + 1)
    m.settle(quiet)
    with boa.reverts("market: no vote to release"):
        m.release_vote(quiet, ledger.referees[0])


# ---------------------------------------------------------------- answering out of turn


def test_answer_checks(ledger):
    m = ledger.market
    rng = random.Random(11)
    s = random_leaves(rng, 4)
    c = diverge(rng, s, 1)
    job_id = committed_job(ledger, s)
    with boa.reverts("market: not in step phase"):
        m.respond_step(job_id, b"\x01" * 32, [], sender=ledger.solver)
    challenge(ledger, job_id, c)
    i = m.get_dispute(job_id).index
    assert i == 1  # (0 + 3) // 2: the last leaves are already proven
    with boa.reverts("market: not a party"):
        m.respond_step(job_id, bytes.fromhex(s[i]), proof_bytes(s, i), sender=ledger.outsider)
    # The challenger's true leaf does not open the solver's root, nor does the solver's own leaf
    # of another index (its proven last leaf included) open it at the index asked.
    with boa.reverts("market: proof does not match the committed root"):
        m.respond_step(job_id, bytes.fromhex(c[i]), proof_bytes(c, i), sender=ledger.solver)
    for j in (0, 2, 3):
        with boa.reverts("market: proof does not match the committed root"):
            m.respond_step(job_id, bytes.fromhex(s[j]), proof_bytes(s, j), sender=ledger.solver)
    logs = answer_step(ledger, job_id, ledger.solver, s)
    (ev,) = events(logs, "StepAnswered")
    assert (ev.job_id, ev.party, ev.index, ev.leaf) == (job_id, ledger.solver, i, bytes.fromhex(s[i]))
    d = m.get_dispute(job_id)
    assert (d.solver_answered, d.solver_answer, d.challenger_answered) == (True, bytes.fromhex(s[i]), False)
    with boa.reverts("market: already answered"):
        answer_step(ledger, job_id, ledger.solver, s)
    with boa.reverts("market: not in trace phase"):
        m.commit_trace(job_id, b"\x01" * 32, 1, sender=ledger.solver)
    with boa.reverts("market: not in op phase"):
        m.respond_op(job_id, b"\x01" * 32, [], sender=ledger.solver)
    boa.env.time_travel(seconds=ROUND_TIMEOUT + 1)
    with boa.reverts("market: round deadline passed"):
        answer_step(ledger, job_id, ledger.challenger, c)


def test_trace_and_op_checks(ledger):
    m = ledger.market
    job_id = _at_trace_phase(ledger, 12)
    with boa.reverts("market: empty root"):
        m.commit_trace(job_id, b"\x00" * 32, 1, sender=ledger.solver)
    with boa.reverts("market: not a party"):
        m.commit_trace(job_id, b"\x01" * 32, OPS_PER_LEAF, sender=ledger.outsider)
    s_ops, c_ops = _op_traces(random.Random(12), OPS_PER_LEAF, 1)
    (ev,) = events(commit_trace(ledger, job_id, ledger.solver, s_ops), "TraceCommitted")
    assert (ev.job_id, ev.party, ev.trace_root, ev.n_ops) == (job_id, ledger.solver, root_bytes(s_ops), OPS_PER_LEAF)
    with boa.reverts("market: already answered"):
        commit_trace(ledger, job_id, ledger.solver, s_ops)
    commit_trace(ledger, job_id, ledger.challenger, c_ops)
    d = m.get_dispute(job_id)
    assert (d.phase, d.lo, d.hi, d.index) == (OP, 0, OPS_PER_LEAF, OPS_PER_LEAF // 2)
    # The op search starts from the step's evidence: `before` agreed, the two afters differing.
    assert (d.agreed, d.solver_diff, d.challenger_diff) == (d.before, d.solver_after, d.challenger_after)
    i = OPS_PER_LEAF // 2
    # Each side proves against its own trace: the challenger's op i is not in the solver's.
    with boa.reverts("market: proof does not match the committed root"):
        m.respond_op(job_id, bytes.fromhex(c_ops[i]), proof_bytes(c_ops, i), sender=ledger.solver)
    # A valid (digest, proof) pair for another index of the same trace is refused: the proof is
    # bound to the index asked.
    with boa.reverts("market: proof does not match the committed root"):
        m.respond_op(job_id, bytes.fromhex(c_ops[0]), proof_bytes(c_ops, 0), sender=ledger.challenger)
    (ev,) = events(answer_op(ledger, job_id, ledger.challenger, c_ops), "OpAnswered")
    assert (ev.job_id, ev.party, ev.index, ev.digest) == (job_id, ledger.challenger, i, bytes.fromhex(c_ops[i]))
    with boa.reverts("market: already answered"):
        answer_op(ledger, job_id, ledger.challenger, c_ops)


# ---------------------------------------------------------------- deadlines


def _silent_round(ledger, phase: int, who_answers: tuple[str, ...]) -> list:
    """Bring a dispute to `phase`, let only `who_answers` answer the round, then settle."""
    rng = random.Random(phase)
    s = random_leaves(rng, 8)
    c = diverge(rng, s, 3)
    job_id = disputed_job(ledger, s, c)
    s_ops, c_ops = _op_traces(rng, OPS_PER_LEAF, 2)
    if phase >= TRACE:
        bisect_steps(ledger, job_id, s, c)
    if phase == OP:
        commit_trace(ledger, job_id, ledger.solver, s_ops)
        commit_trace(ledger, job_id, ledger.challenger, c_ops)
    assert ledger.market.get_dispute(job_id).phase == phase
    for who in who_answers:
        data = {ledger.solver: (s, s_ops), ledger.challenger: (c, c_ops)}[who]
        if phase == STEP:
            answer_step(ledger, job_id, who, data[0])
        elif phase == TRACE:
            commit_trace(ledger, job_id, who, data[1])
        else:
            answer_op(ledger, job_id, who, data[1])
    with boa.reverts("market: nothing to settle yet"):
        ledger.market.settle(job_id)
    boa.env.time_travel(seconds=ROUND_TIMEOUT + 1)
    ledger.market.settle(job_id, sender=ledger.outsider)
    return ledger.market.get_logs()


@pytest.mark.parametrize("phase", [STEP, TRACE, OP])
@pytest.mark.parametrize("answering", ["solver", "challenger", "nobody"])
def test_silent_party_loses_by_deadline(ledger, phase, answering):
    who = {"solver": (ledger.solver,), "challenger": (ledger.challenger,), "nobody": ()}[answering]
    solver0, chal0 = holdings(ledger, ledger.solver), holdings(ledger, ledger.challenger)
    logs = _silent_round(ledger, phase, who)
    # When nobody answers, the challenger (who made the claim) loses.
    if answering == "challenger":
        assert settled(logs) == (ledger.challenger, ledger.solver, "deadline")
        assert holdings(ledger, ledger.solver) == (solver0[0], STAKED - JOB_STAKE, 0)
        assert holdings(ledger, ledger.challenger) == (chal0[0] + JOB_STAKE, STAKED, 0)
    else:
        assert settled(logs) == (ledger.solver, ledger.challenger, "deadline")
        assert holdings(ledger, ledger.solver) == (solver0[0] + BOUNTY + JOB_STAKE, STAKED, 0)
        assert holdings(ledger, ledger.challenger) == (chal0[0], STAKED - JOB_STAKE, 0)


def test_solver_that_never_commits_is_slashed_to_the_poster(ledger):
    m = ledger.market
    poster0 = ledger.token.balanceOf(ledger.poster)
    job_id = post_job(ledger)
    m.claim_job(job_id, sender=ledger.solver)
    boa.env.time_travel(seconds=COMMIT_TIMEOUT)
    with boa.reverts("market: nothing to settle yet"):
        m.settle(job_id)
    boa.env.time_travel(seconds=1)
    m.settle(job_id)
    logs = m.get_logs()
    assert settled(logs) == (ledger.poster, ledger.solver, "commit deadline")
    (slash,) = events(logs, "Slashed")
    assert (slash.node, slash.amount, slash.to) == (ledger.solver, JOB_STAKE, ledger.poster)
    assert ledger.token.balanceOf(ledger.poster) == poster0 + JOB_STAKE
    assert holdings(ledger, ledger.solver)[1:] == (STAKED - JOB_STAKE, 0)
    assert m.get_job(job_id).status == FAILED
    with boa.reverts("market: nothing to settle yet"):
        m.settle(job_id)


def test_settle_has_nothing_to_do_outside_deadlines(ledger):
    m = ledger.market
    job_id = post_job(ledger)
    with boa.reverts("market: nothing to settle yet"):
        m.settle(job_id)  # open
    job_id = committed_job(ledger, random_leaves(random.Random(13), 2))
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    with boa.reverts("market: nothing to settle yet"):
        m.settle(job_id)  # committed: that is finalize()'s job
