"""JobMarket.vy's verification pay: a fee reserved out of the bounty, an audit leaf drawn at
commit, attesters that commit to keccak256(attestation ‖ address) while the challenge window is
open and reveal after it closes, and a finalize that pays only those whose attestation equals the
solver's. The attacks come first: lazy verifiers that copy what is public, or another verifier's
commitment, and are not paid. On chain the attestation is an opaque 32-byte value; that only a
re-execution produces it is tests/verify/test_attest.py's part."""

from __future__ import annotations

import random

import boa
import pytest
from eth_hash.auto import keccak

from bitswarm.verify import attest

from .conftest import (
    BOUNTY,
    CHALLENGE_WINDOW,
    COMMITTED,
    DONE,
    E18,
    FAILED,
    JOB_STAKE,
    MIN_STAKE,
    ROUND_TIMEOUT,
    STAKED,
    answer_step,
    challenge,
    commit,
    committed_job,
    diverge,
    events,
    new_verifier,
    post_job,
    random_leaves,
    root_bytes,
)

FEE = 6 * E18
N = 8
EMPTY = b"\x00" * 32
MAX_ATTESTERS = 16

PREV_BLOCKHASH = """
#pragma version ~=0.4.3
@external
@view
def prev() -> bytes32:
    return blockhash(block.number - 1)
"""


def sealed(value: bytes, who: str) -> bytes:
    """What `who` commits to for `value`, computed as verifiers compute it (verify.attest)."""
    return bytes.fromhex(attest.commitment(value.hex(), who))


def holdings(lg, who) -> tuple[int, int]:
    node = lg.registry.get_node(who)
    return lg.token.balanceOf(who), node.locked


def fee_job(lg, seed: int, fee: int = FEE, n: int = N) -> tuple[int, list[str], bytes]:
    """A committed job with a verification fee, its leaves, and the true attestation of its
    audit leaf (the trace root the solver and every honest verifier compute: opaque here)."""
    rng = random.Random(seed)
    leaves = random_leaves(rng, n)
    return committed_job(lg, leaves, verify_fee=fee), leaves, rng.randbytes(32)


def attest_all(lg, job_id: int, values: dict[str, bytes]) -> None:
    for who, value in values.items():
        lg.market.attest(job_id, sealed(value, who), sender=who)


def reveal_all(lg, job_id: int, values: dict[str, bytes]) -> None:
    for who, value in values.items():
        lg.market.reveal(job_id, value, sender=who)


def finalized(logs) -> tuple[int, int, int, int]:
    (ev,) = events(logs, "JobFinalized")
    return ev.bounty, ev.solver_paid, ev.verifiers_paid, ev.fee_refund


def paid(logs) -> list[tuple[str, int]]:
    return [(e.verifier, e.amount) for e in events(logs, "VerifierPaid")]


def test_post_job_reserves_the_fee_inside_the_bounty(ledger):
    """The fee is part of the escrowed bounty, not on top of it; cancelling refunds all of it."""
    m, t = ledger.market, ledger.token
    before = t.balanceOf(ledger.poster)
    job_id = post_job(ledger, verify_fee=FEE)
    (ev,) = events(m, "JobPosted")
    assert (ev.bounty, ev.verify_fee) == (BOUNTY, FEE) and m.get_audit(job_id).verify_fee == FEE
    assert t.balanceOf(ledger.poster) == before - BOUNTY and t.balanceOf(m.address) == BOUNTY
    m.cancel_job(job_id, sender=ledger.poster)
    assert t.balanceOf(ledger.poster) == before


# ---------------------------------------------------------------- the attacks


def test_lazy_verifiers_that_copy_public_data_are_not_paid(ledger):
    """Adversary: verifiers that skip the work and commit to something public instead (the
    result root, the solver's last leaf, the audited leaf itself, the leaf before it, the
    result's CID), each bound to its own address as the contract wants. The honest verifier,
    who re-executed the audit leaf, gets the whole fee; the lazy ones get their stake back and
    nothing else."""
    m = ledger.market
    job_id, leaves, truth = fee_job(ledger, 1)
    job = m.get_job(job_id)
    k = m.get_audit(job_id).audit_leaf
    public = {
        "result root": job.result_root,
        "last leaf": job.result_leaf,
        "audited leaf": bytes.fromhex(leaves[k]),
        "the leaf before it": bytes.fromhex(leaves[k - 1]) if k else b"\x07" * 32,
        "result cid": job.result_cid,
    }
    honest = new_verifier(ledger, "honest")
    lazy = {new_verifier(ledger, f"lazy-{i}"): value for i, value in enumerate(public.values())}
    attest_all(ledger, job_id, {honest: truth, **lazy})
    before = {w: holdings(ledger, w) for w in (honest, *lazy, ledger.solver, ledger.poster)}
    assert all(locked == MIN_STAKE for _, locked in (before[w] for w in (honest, *lazy)))

    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    m.reveal(job_id, truth, sender=ledger.solver)
    reveal_all(ledger, job_id, {**lazy, honest: truth})
    m.finalize(job_id, sender=ledger.outsider)  # everyone revealed: no need to wait for the deadline
    logs = m.get_logs()
    assert paid(logs) == [(honest, FEE)]
    assert finalized(logs) == (BOUNTY, BOUNTY - FEE, 1, 0)
    assert holdings(ledger, honest) == (before[honest][0] + FEE, 0)
    for who in lazy:
        assert holdings(ledger, who) == (before[who][0], 0)
    assert holdings(ledger, ledger.solver)[0] == before[ledger.solver][0] + BOUNTY - FEE
    assert holdings(ledger, ledger.poster) == before[ledger.poster]
    assert m.get_job(job_id).status == DONE


def test_a_copied_commitment_opens_only_for_its_maker(ledger):
    """Adversary: a verifier copies the honest verifier's commitment from the Attested event.
    It is bound to the honest verifier's address, so the copier cannot open it with the true
    attestation (or anything else): it is not paid, and since it cannot reveal, the job waits
    for the reveal deadline."""
    m = ledger.market
    job_id, _, truth = fee_job(ledger, 2)
    honest, copier = new_verifier(ledger, "honest"), new_verifier(ledger, "copier")
    m.attest(job_id, sealed(truth, honest), sender=honest)
    (ev,) = events(m, "Attested")
    m.attest(job_id, ev.commitment, sender=copier)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    m.reveal(job_id, truth, sender=honest)
    m.reveal(job_id, truth, sender=ledger.solver)
    for guess in (truth, keccak(truth + bytes.fromhex(honest[2:])), bytes.fromhex(honest[2:]).rjust(32, b"\x00")):
        with boa.reverts("market: reveal does not match the commitment"):
            m.reveal(job_id, guess, sender=copier)
    assert not m.get_attestation(job_id, copier).revealed
    with boa.reverts("market: reveal period open"):
        m.finalize(job_id)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    copier0 = holdings(ledger, copier)
    m.finalize(job_id)
    assert paid(m.get_logs()) == [(honest, FEE)]
    assert holdings(ledger, copier) == (copier0[0], 0)


def test_reveals_open_only_after_the_window_and_close_at_the_reveal_deadline(ledger):
    """Nobody can reveal while commitments are still accepted (so no revealed value can be
    copied into a late commitment), nor after the reveal period."""
    m = ledger.market
    job_id, _, truth = fee_job(ledger, 3)
    assert m.get_audit(job_id).reveal_deadline == m.get_job(job_id).challenge_deadline + CHALLENGE_WINDOW
    verifier = new_verifier(ledger, "v")
    m.attest(job_id, sealed(truth, verifier), sender=verifier)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)  # the window's last second
    for who in (verifier, ledger.solver):
        with boa.reverts("market: challenge window open"):
            m.reveal(job_id, truth, sender=who)
    boa.env.time_travel(seconds=1)
    with boa.reverts("market: challenge window closed"):
        m.attest(job_id, sealed(truth, ledger.challenger), sender=ledger.challenger)
    with boa.env.anchor():
        boa.env.time_travel(seconds=CHALLENGE_WINDOW - 1)  # the reveal period's last second
        m.reveal(job_id, truth, sender=verifier)
        m.reveal(job_id, truth, sender=ledger.solver)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    for who in (verifier, ledger.solver):
        with boa.reverts("market: reveal period over"):
            m.reveal(job_id, truth, sender=who)
    m.finalize(job_id)
    # Nobody revealed: the fee goes back to the poster.
    assert finalized(m.get_logs()) == (BOUNTY, BOUNTY - FEE, 0, FEE)


# ---------------------------------------------------------------- attest and reveal, checked


def test_attest_checks(ledger):
    m, r = ledger.market, ledger.registry
    open_job = post_job(ledger, num_leaves=N, verify_fee=FEE)
    with boa.reverts("market: job not committed"):
        m.attest(open_job, b"\x01" * 32, sender=ledger.challenger)
    no_fee = committed_job(ledger, random_leaves(random.Random(4), N))
    with boa.reverts("market: no verification fee"):
        m.attest(no_fee, b"\x01" * 32, sender=ledger.challenger)

    job_id, _, truth = fee_job(ledger, 5)
    for who in (ledger.referees[0], ledger.outsider):
        with boa.reverts("market: not a verifier"):
            m.attest(job_id, sealed(truth, who), sender=who)
    with boa.reverts("market: solver cannot attest"):  # it holds the verifier role too
        m.attest(job_id, sealed(truth, ledger.solver), sender=ledger.solver)
    r.register("poster-peer", 2, sender=ledger.poster)
    r.stake(MIN_STAKE, sender=ledger.poster)
    with boa.reverts("market: poster cannot attest"):
        m.attest(job_id, sealed(truth, ledger.poster), sender=ledger.poster)
    with boa.reverts("market: empty commitment"):
        m.attest(job_id, EMPTY, sender=ledger.challenger)
    # Attesting locks min_stake: a verifier without it free cannot attest.
    poor = new_verifier(ledger, "poor", MIN_STAKE - 1)
    with boa.reverts("registry: insufficient free stake"):
        m.attest(job_id, sealed(truth, poor), sender=poor)

    c = sealed(truth, ledger.challenger)
    m.attest(job_id, c, sender=ledger.challenger)
    logs = m.get_logs()
    (ev,) = events(logs, "Attested")
    assert (ev.job_id, ev.attester, ev.commitment) == (job_id, ledger.challenger, c)
    (lock,) = events(logs, "StakeLocked")
    assert (lock.node, lock.amount, lock.by) == (ledger.challenger, MIN_STAKE, m.address)
    assert tuple(m.get_attestation(job_id, ledger.challenger)) == (c, EMPTY, False)
    assert m.attester_at(job_id, 0) == ledger.challenger
    assert tuple(m.get_audit(job_id))[3:] == (EMPTY, False, 1, 0)
    with boa.reverts("market: already attested"):
        m.attest(job_id, sealed(b"\x02" * 32, ledger.challenger), sender=ledger.challenger)
    # The locked stake cannot be unbonded while the job runs.
    with boa.reverts("registry: insufficient free stake"):
        r.request_unbond(STAKED, sender=ledger.challenger)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    with boa.reverts("market: challenge window closed"):
        m.attest(job_id, sealed(truth, poor), sender=new_verifier(ledger, "late"))


def test_at_most_sixteen_attesters(ledger):
    """Settlement walks the attesters, so their number is bounded; all of them are paid and
    unlocked at finalize."""
    m = ledger.market
    job_id, _, truth = fee_job(ledger, 6, fee=16 * E18)
    verifiers = [new_verifier(ledger, f"v{i}") for i in range(MAX_ATTESTERS + 1)]
    attest_all(ledger, job_id, {v: truth for v in verifiers[:MAX_ATTESTERS]})
    with boa.reverts("market: attesters full"):
        m.attest(job_id, sealed(truth, verifiers[-1]), sender=verifiers[-1])
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    reveal_all(ledger, job_id, {ledger.solver: truth, **{v: truth for v in verifiers[:MAX_ATTESTERS]}})
    m.finalize(job_id)
    logs = m.get_logs()
    assert paid(logs) == [(v, E18) for v in verifiers[:MAX_ATTESTERS]]
    assert len(events(logs, "StakeUnlocked")) == 1 + MAX_ATTESTERS
    assert all(ledger.registry.get_node(v).locked == 0 for v in verifiers)


def test_reveal_checks(ledger):
    m = ledger.market
    open_job = post_job(ledger, num_leaves=N, verify_fee=FEE)
    with boa.reverts("market: job not committed"):
        m.reveal(open_job, b"\x01" * 32, sender=ledger.solver)
    no_fee = committed_job(ledger, random_leaves(random.Random(7), N))
    job_id, _, truth = fee_job(ledger, 8)
    verifier = new_verifier(ledger, "v")
    m.attest(job_id, sealed(truth, verifier), sender=verifier)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    with boa.reverts("market: no verification fee"):
        m.reveal(no_fee, truth, sender=ledger.solver)
    for who in (ledger.solver, verifier):
        with boa.reverts("market: empty attestation"):
            m.reveal(job_id, EMPTY, sender=who)
    with boa.reverts("market: no attestation"):
        m.reveal(job_id, truth, sender=ledger.challenger)
    m.reveal(job_id, truth, sender=verifier)
    (ev,) = events(m, "Revealed")
    assert (ev.job_id, ev.party, ev.attestation) == (job_id, verifier, truth)
    assert tuple(m.get_attestation(job_id, verifier)) == (sealed(truth, verifier), truth, True)
    assert tuple(m.get_audit(job_id))[3:] == (EMPTY, False, 1, 1)
    with boa.reverts("market: reveal period open"):
        m.finalize(job_id)  # the solver has not revealed yet
    m.reveal(job_id, truth, sender=ledger.solver)
    assert tuple(m.get_audit(job_id))[3:] == (truth, True, 1, 1)
    for who in (ledger.solver, verifier):
        with boa.reverts("market: already revealed"):
            m.reveal(job_id, truth, sender=who)
    m.finalize(job_id)
    with boa.reverts("market: job not committed"):
        m.reveal(job_id, truth, sender=verifier)


# ---------------------------------------------------------------- who gets the fee


def test_the_fee_is_split_equally_and_the_dust_goes_back_to_the_poster(ledger):
    """Three attesters agree with the solver, one does not (its own run differs: not paid,
    not slashed); the fee does not divide by three, and the remainder goes to the poster.
    Every token is accounted for."""
    m, t = ledger.market, ledger.token
    fee = 10 * E18 + 1  # 2 (mod 3)
    job_id, _, truth = fee_job(ledger, 9, fee=fee)
    agree = [new_verifier(ledger, f"agree{i}") for i in range(3)]
    other = new_verifier(ledger, "other")
    values = {**{v: truth for v in agree}, other: b"\x09" * 32}
    attest_all(ledger, job_id, values)
    everyone = [*agree, other, ledger.solver, ledger.poster]
    before = {w: t.balanceOf(w) for w in everyone}
    held = t.balanceOf(m.address)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    reveal_all(ledger, job_id, {ledger.solver: truth, **values})
    m.finalize(job_id)
    logs = m.get_logs()
    share = fee // 3
    assert paid(logs) == [(v, share) for v in agree]
    assert finalized(logs) == (BOUNTY, BOUNTY - fee, 3, 2)
    gained = {w: t.balanceOf(w) - before[w] for w in everyone}
    assert gained == {**{v: share for v in agree}, other: 0, ledger.solver: BOUNTY - fee, ledger.poster: 2}
    assert sum(gained.values()) == BOUNTY == held - t.balanceOf(m.address)


@pytest.mark.parametrize("solver", ["silent", "other value"])
def test_without_a_matching_solver_reveal_the_fee_goes_back_to_the_poster(ledger, solver):
    """The solver does not reveal (the job then waits for the reveal deadline), or reveals a
    value no attester holds: nobody is paid for verifying, and the poster gets the fee back."""
    m = ledger.market
    job_id, _, truth = fee_job(ledger, 10)
    verifier = new_verifier(ledger, "v")
    m.attest(job_id, sealed(truth, verifier), sender=verifier)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    m.reveal(job_id, truth, sender=verifier)
    if solver == "silent":
        with boa.reverts("market: reveal period open"):
            m.finalize(job_id)
        boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    else:
        m.reveal(job_id, b"\x05" * 32, sender=ledger.solver)
    poster0, v0 = holdings(ledger, ledger.poster), holdings(ledger, verifier)
    m.finalize(job_id)
    logs = m.get_logs()
    assert paid(logs) == [] and finalized(logs) == (BOUNTY, BOUNTY - FEE, 0, FEE)
    assert holdings(ledger, ledger.poster)[0] == poster0[0] + FEE
    assert holdings(ledger, verifier) == (v0[0], 0)


def test_without_attesters_the_job_finalizes_when_the_window_closes(ledger):
    m = ledger.market
    job_id, _, _ = fee_job(ledger, 11)
    poster0, solver0 = holdings(ledger, ledger.poster), holdings(ledger, ledger.solver)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    m.finalize(job_id)
    assert finalized(m.get_logs()) == (BOUNTY, BOUNTY - FEE, 0, FEE)
    assert holdings(ledger, ledger.poster)[0] == poster0[0] + FEE
    assert holdings(ledger, ledger.solver) == (solver0[0] + BOUNTY - FEE, 0)


@pytest.mark.parametrize("winner", ["solver", "challenger"])
def test_a_dispute_voids_the_attestations(ledger, winner):
    """Attestations only pay on an unchallenged job: once it is disputed the dispute decides,
    the whole bounty (fee included) goes to the solver or back to the poster, and the
    attesters get their stake back."""
    m = ledger.market
    job_id, leaves, truth = fee_job(ledger, 12)
    verifier = new_verifier(ledger, "v")
    m.attest(job_id, sealed(truth, verifier), sender=verifier)
    theirs = diverge(random.Random(13), leaves, 2)
    challenge(ledger, job_id, theirs)
    answering = {"solver": (ledger.solver, leaves), "challenger": (ledger.challenger, theirs)}[winner]
    answer_step(ledger, job_id, *answering)  # the other side goes quiet and loses by deadline
    poster0, solver0, v0 = (holdings(ledger, w) for w in (ledger.poster, ledger.solver, verifier))
    boa.env.time_travel(seconds=ROUND_TIMEOUT + 1)
    m.settle(job_id)
    logs = m.get_logs()
    assert not paid(logs) and not events(logs, "JobFinalized")
    assert holdings(ledger, verifier) == (v0[0], 0)
    if winner == "solver":
        assert m.get_job(job_id).status == DONE
        assert holdings(ledger, ledger.solver)[0] == solver0[0] + BOUNTY + JOB_STAKE
    else:
        assert m.get_job(job_id).status == FAILED
        assert holdings(ledger, ledger.poster)[0] == poster0[0] + BOUNTY
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    with boa.reverts("market: job not committed"):
        m.reveal(job_id, truth, sender=verifier)


def test_no_fee_behaves_as_before(ledger):
    """verify_fee 0: no audit is drawn, nobody attests, the job finalizes as soon as the window
    closes and the solver gets the whole bounty in one transfer."""
    m = ledger.market
    job_id = committed_job(ledger, random_leaves(random.Random(14), N))
    assert not events(m, "AuditDrawn")  # the commit's logs
    assert tuple(m.get_audit(job_id)) == (0, 0, 0, EMPTY, False, 0, 0)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW + 1)
    m.finalize(job_id)
    logs = m.get_logs()
    assert finalized(logs) == (BOUNTY, BOUNTY, 0, 0)
    assert [(e.receiver, e.value) for e in events(logs, "Transfer")] == [(ledger.solver, BOUNTY)]


# ---------------------------------------------------------------- the audit draw and the commitment


@pytest.mark.parametrize("n", [1, 2, 7, 1024])
def test_commit_draws_the_audit_leaf_from_the_previous_blockhash(ledger, n):
    m = ledger.market
    prev = boa.loads(PREV_BLOCKHASH)
    leaves = random_leaves(random.Random(n), n)
    job_id = post_job(ledger, num_leaves=n, verify_fee=FEE)
    m.claim_job(job_id, sender=ledger.solver)
    seed = prev.prev()  # the same block as the commit below
    commit(ledger, job_id, leaves)
    (ev,) = events(m, "AuditDrawn")
    expected = int.from_bytes(keccak(seed + job_id.to_bytes(32, "big") + root_bytes(leaves)), "big") % n
    job, audit = m.get_job(job_id), m.get_audit(job_id)
    assert (ev.job_id, ev.audit_leaf, ev.verify_fee, ev.reveal_deadline) == (
        job_id, expected, FEE, job.challenge_deadline + CHALLENGE_WINDOW)
    assert (audit.verify_fee, audit.audit_leaf, audit.reveal_deadline) == (FEE, expected, ev.reveal_deadline)
    assert job.status == COMMITTED


def test_the_contract_commitment_is_verify_attest_commitment(ledger):
    rng = random.Random(15)
    for i in range(8):
        value, who = rng.randbytes(32), boa.env.generate_address(f"c{i}")
        assert ledger.market.commitment(value, who) == sealed(value, who)
    with pytest.raises(ValueError, match="32 bytes"):
        attest.commitment("ab" * 31, ledger.solver)
    with pytest.raises(ValueError, match="20 bytes"):
        attest.commitment("ab" * 32, "0x1234")
