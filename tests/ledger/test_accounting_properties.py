"""Property tests: random sequences of market and registry actions among a few actors, with the
money checked after every action.

Actions may revert (the machine does not model every precondition); a revert must leave the
stakes untouched, and a successful action must explain every token and stake movement through
its events:

- the token supply never changes after the initial mint, and the actors, the registry and the
  market hold all of it between them;
- the market holds exactly the bounties of unfinished jobs, the registry exactly the stakes and
  unbonding amounts;
- a job pays its bounty out once, and only among its own poster/solver/challenger/attesters:
  when finalized unchallenged, the bounty less the verification fee to the solver, equal
  shares of the fee to the attesters whose revealed attestation equals the solver's, the rest
  of the fee to the poster; when DONE after a dispute, all of it to the solver; otherwise all
  of it back to the poster. Besides, at most one party's stake and the vote stake of the
  referees that backed the loser;
- a node's stake only goes down through request_unbond or a Slashed event issued in the same
  transaction as a DisputeSettled naming that node the loser (a lost dispute or a missed
  commit deadline), or as a VoteReleased saying that node voted for the loser;
- the stake the market holds locked is exactly what its live jobs and disputes need (min_stake
  per attester of a committed or disputed job included), plus the vote stake of every referee
  whose vote has not been released.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

import boa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bitswarm.verify.attest import commitment
from bitswarm.verify.merkle import merkle_root, proof, verify

from .conftest import (
    CLAIMED,
    COMMIT_TIMEOUT,
    COMMITTED,
    DISPUTED,
    DONE,
    E18,
    MIN_STAKE,
    OP,
    OPEN,
    ROUND_TIMEOUT,
    STEP,
    TRACE,
    UNBOND_DELAY,
    VOTE,
    VOTE_TIMEOUT,
    diverge,
    proof_bytes,
    random_leaves,
    root_bytes,
)

LIVE = (OPEN, CLAIMED, COMMITTED, DISPUTED)
JOB = st.integers(0, 7)  # picks a live job (or, for 7, any job), modulo their count
WHO = st.integers(0, 4)  # picks a node
SEED = st.integers(0, 2**32)
WINDOW = 2 * 3600
MAX_LIVE_JOBS = 3  # few at a time, so that each one gets far
# Just past each deadline the contracts know, plus a full unbonding delay.
WAITS = [1, ROUND_TIMEOUT + 1, VOTE_TIMEOUT + 1, COMMIT_TIMEOUT + 1, WINDOW + 1, UNBOND_DELAY]


@dataclass
class JobModel:
    id: int
    poster: str
    bounty: int
    stake: int
    n_ops: int
    truth: list[str]
    solver: str | None = None
    challenger: str | None = None
    leaves: dict = field(default_factory=dict)  # party -> the leaves it committed to
    ops: dict = field(default_factory=dict)  # party -> its op trace of the disputed step
    votes: dict = field(default_factory=dict)  # referee -> vote stake not yet released
    sides: dict = field(default_factory=dict)  # referee -> solver_wins, as it voted
    wrong_votes_released: int = 0
    paid_by_market: int = 0
    paid_by_registry: int = 0
    paid_for_votes: int = 0
    paid_to: dict = field(default_factory=lambda: defaultdict(int))  # what the market paid each receiver
    fee: int = 0
    audit_truth: bytes = b""  # the true attestation of the audit leaf (opaque on chain)
    attesters: dict = field(default_factory=dict)  # attester -> the value it committed to (None: a copied commitment)
    revealed: dict = field(default_factory=dict)  # attester -> the value it revealed
    solver_value: bytes | None = None

    def expected_payout(self, status: int) -> dict[str, int]:
        """Who a finished job must have paid, and how much."""
        if status != DONE:
            return {self.poster: self.bounty}
        if self.challenger is not None:  # a dispute voids the attestations: the fee follows the bounty
            return {self.solver: self.bounty}
        matched = [a for a, v in self.revealed.items() if self.solver_value is not None and v == self.solver_value]
        share = self.fee // len(matched) if matched else 0
        out = {self.solver: self.bounty - self.fee, self.poster: self.fee - share * len(matched)}
        out.update({a: share for a in matched})
        return {w: v for w, v in out.items() if v}


def _last_leaf_claim(leaves: list[str], rng: random.Random) -> tuple[bytes, list[bytes], bool]:
    """The last leaf and its proof, as commit_result and challenge take them, and whether the
    Python reference accepts them: mostly the true ones, sometimes a forged proof, another
    index's valid proof, or the wrong leaf (which the contract must refuse)."""
    n = len(leaves)
    leaf, path = leaves[-1], proof(leaves, n - 1)
    how = rng.choices(["true", "forged", "other index", "wrong leaf"], [85, 5, 5, 5])[0]
    if how == "forged" and path:
        path = [[side, rng.randbytes(32).hex()] for side, _ in path]
    elif how == "other index" and n > 1:
        i = rng.randrange(n - 1)
        leaf, path = leaves[i], proof(leaves, i)
    elif how != "true":
        leaf = rng.randbytes(32).hex()
    valid = verify(leaf, path, merkle_root(leaves), n - 1, n)
    assert valid == (how == "true")
    return bytes.fromhex(leaf), [bytes.fromhex(sib) for _side, sib in path], valid


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, lg):
        super().__init__()
        # Every example starts from the session's freshly deployed ledger and is rolled back
        # (boa's pytest plugin anchors each example too; this keeps the machine self-contained).
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.m, self.r, self.t = lg.market, lg.registry, lg.token
        # Five nodes with every role, so anyone can solve, challenge or referee.
        self.nodes = [lg.solver, lg.challenger, *lg.referees]
        for i, who in enumerate(self.nodes):
            self.r.register(f"node-{i}", 15, sender=who)
        self.posters = [lg.poster, lg.outsider, lg.solver]
        self.holders = [*dict.fromkeys([*self.posters, *self.nodes])]
        self.supply = self.t.totalSupply()
        self.jobs: list[JobModel] = []

    def teardown(self):
        self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------ plumbing

    def _status(self, job: JobModel) -> int:
        return self.m.get_job(job.id).status

    def _live(self) -> list[JobModel]:
        return [job for job in self.jobs if self._status(job) in LIVE]

    def _pick(self, j: int) -> JobModel:
        pool = (j < 7 and self._live()) or self.jobs
        return pool[j % len(pool)]

    def _stakes(self) -> dict[str, int]:
        return {n: self.r.get_node(n).staked for n in self.nodes}

    def _do(self, job: JobModel | None, contract, fn: str, *args, sender, expect_revert=False):
        """Call `fn`; on success check its token and stake movements; returns its logs or None."""
        before = self._stakes()
        try:
            getattr(contract, fn)(*args, sender=sender)
        except boa.BoaError:
            assert self._stakes() == before
            return None
        assert not expect_revert, f"{fn} accepted an answer that is not in the committed tree"
        logs = contract.get_logs()
        self._check_stake_moves(logs, before)
        if job is not None:
            self._check_payouts(job, logs)
        return logs

    def _check_stake_moves(self, logs, before):
        after = self._stakes()
        named = defaultdict(list)
        for e in logs:
            named[type(e).__name__].append(e)
        settled, released = named["DisputeSettled"], named["VoteReleased"]
        for s in named["Slashed"]:
            assert s.by == self.m.address
            lost = any(d.loser == s.node and d.winner == s.to for d in settled)
            wrong_vote = any(v.referee == s.node and v.slashed and v.weight == s.amount for v in released)
            assert lost or wrong_vote, f"slash without a lost dispute or a vote for the loser: {s}"
        for n in self.nodes:
            up = sum(e.amount for e in named["Staked"] if e.node == n)
            down = sum(e.amount for e in named["UnbondRequested"] + named["Slashed"] if e.node == n)
            assert after[n] - before[n] == up - down, f"stake of {n} moved without an event"

    def _check_payouts(self, job: JobModel, logs):
        parties = {job.poster, job.solver, job.challenger, *job.attesters}
        vote_release = any(type(e).__name__ == "VoteReleased" for e in logs)
        for e in logs:
            if type(e).__name__ != "Transfer" or e.sender not in (self.m.address, self.r.address):
                continue
            assert e.receiver in parties, "a job paid someone outside it"
            if e.sender == self.m.address:
                job.paid_by_market += e.value
                job.paid_to[e.receiver] += e.value
            elif vote_release:
                assert e.receiver == self.m.get_dispute(job.id).winner
                job.paid_for_votes += e.value
            else:
                job.paid_by_registry += e.value
        # The bounty leaves the market at most once; at most one stake is slashed per job.
        assert job.paid_by_market <= job.bounty
        assert job.paid_by_registry <= job.stake

    # ------------------------------------------------------------ actions on one job

    def _claim(self, job: JobModel, who: int):
        if self._do(job, self.m, "claim_job", job.id, sender=self.nodes[who]):
            job.solver = self.nodes[who]

    def _commit(self, job: JobModel, honest: bool, k: int, seed: int):
        if job.solver is None:
            return
        leaves = job.truth if honest else diverge(random.Random(seed), job.truth, k % len(job.truth))
        leaf, path, valid = _last_leaf_claim(leaves, random.Random(seed ^ 0xC0))
        logs = self._do(
            job, self.m, "commit_result", job.id, root_bytes(leaves), b"\x22" * 32, leaf, path,
            sender=job.solver, expect_revert=not valid,
        )
        if logs:
            job.leaves[job.solver] = leaves

    def _challenge(self, job: JobModel, who: int, honest: bool, k: int, n_ops: int, seed: int):
        if job.solver not in job.leaves:
            return
        rng = random.Random(seed)
        solver_leaves = job.leaves[job.solver]
        leaves = job.truth if honest else diverge(rng, solver_leaves, k % len(job.truth))
        if rng.random() < 0.1 and len(leaves) > 1:
            # Garbage before the last leaf, the solver's last leaf: the same result, refused.
            leaves = random_leaves(rng, len(leaves) - 1) + solver_leaves[-1:]
        leaf, path, valid = _last_leaf_claim(leaves, random.Random(seed ^ 0xC1))
        agrees = leaves[-1] == solver_leaves[-1]
        challenger = self.nodes[who]
        logs = self._do(
            job, self.m, "challenge", job.id, root_bytes(leaves), leaf, path,
            sender=challenger, expect_revert=agrees or not valid,
        )
        if logs:
            job.challenger = challenger
            job.leaves[challenger] = leaves
            # Op traces (of the job's fixed length) for whichever step turns out disputed: equal
            # up to a random op, or equal throughout (the virtual op after the last one).
            ops = random_leaves(rng, job.n_ops)
            job.ops[job.solver] = ops
            job.ops[challenger] = rng.choice([diverge(rng, ops, rng.randrange(job.n_ops)), ops])

    def _attest(self, job: JobModel, who: int, how: str, seed: int):
        """A verifier attests: with the true attestation, with something public it copied (the
        result root), or with another attester's commitment (which it can never open)."""
        if job.solver not in job.leaves:
            return
        attester = self.nodes[who]
        value: bytes | None = {"true": job.audit_truth, "lazy": root_bytes(job.leaves[job.solver]),
                               "random": random.Random(seed).randbytes(32)}.get(how)
        if value is None:
            others = [a for a, v in job.attesters.items() if v is not None]
            if not others:
                return
            c = self.m.get_attestation(job.id, others[seed % len(others)]).commitment
        else:
            c = bytes.fromhex(commitment(value.hex(), attester))
        if self._do(job, self.m, "attest", job.id, c, sender=attester):
            job.attesters[attester] = value

    def _reveal(self, job: JobModel, who: int, seed: int, pending: bool = False):
        """The solver (mostly with the true attestation) or an attester (with what it committed
        to; a copier tries the true value, which must be refused) reveals; with `pending`, one
        that has not revealed yet."""
        rng = random.Random(seed)
        if job.solver is None:
            return
        revealers = [job.solver, *job.attesters]
        if pending:
            revealers = [w for w in revealers if w not in job.revealed and not (w == job.solver and job.solver_value)]
            if not revealers:
                return
        who_ = revealers[who % len(revealers)]
        if who_ == job.solver:
            value = job.audit_truth if rng.random() < 0.8 else rng.randbytes(32)
            if self._do(job, self.m, "reveal", job.id, value, sender=who_):
                job.solver_value = value
            return
        committed = job.attesters[who_]
        value = job.audit_truth if committed is None else committed
        if self._do(job, self.m, "reveal", job.id, value, sender=who_, expect_revert=committed is None):
            job.revealed[who_] = value

    def _answer(self, job: JobModel, solver_side: bool, honest: bool):
        """The party answers the current query: honestly, or with a value that is not in its
        tree (which must be refused)."""
        if job.challenger is None:
            return
        who = job.solver if solver_side else job.challenger
        d = self.m.get_dispute(job.id)
        if d.phase == TRACE:
            ops = job.ops[who]
            n_ops = len(ops) if honest else len(ops) + 1
            self._do(job, self.m, "commit_trace", job.id, root_bytes(ops), n_ops, sender=who, expect_revert=not honest)
        elif d.phase in (STEP, OP):
            data, fn = (job.leaves[who], "respond_step") if d.phase == STEP else (job.ops[who], "respond_op")
            value = bytes.fromhex(data[d.index]) if honest else bytes(31) + b"\x01"
            self._do(job, self.m, fn, job.id, value, proof_bytes(data, d.index), sender=who, expect_revert=not honest)

    def _advance(self, job: JobModel, rng: random.Random) -> bool:
        """One natural next step for the job; False once it is finished."""
        status = self._status(job)
        who, honest, k, seed = rng.randrange(5), rng.random() < 0.6, rng.randrange(9), rng.getrandbits(32)
        # Mostly someone outside the job as claimer, challenger or referee.
        insiders = (job.poster, job.solver, job.challenger)
        if self.nodes[who] in insiders and rng.random() < 0.9:
            who = rng.choice([i for i, n in enumerate(self.nodes) if n not in insiders])
        if status == OPEN:
            self._claim(job, who)
        elif status == CLAIMED:
            self._commit(job, honest, k, seed)
        elif status == COMMITTED:
            deadline = self.m.get_job(job.id).challenge_deadline
            r = rng.random()
            if boa.env.timestamp <= deadline:  # the challenge window: attest, challenge, or let it close
                if job.fee and r < 0.5:
                    self._attest(job, who, rng.choice(["true", "true", "lazy", "random", "copy"]), seed)
                elif r < 0.75:
                    self.wait(deadline - boa.env.timestamp + 1)
                else:
                    # Mostly a challenger that disagrees with the solver.
                    disagrees = job.leaves[job.solver] != job.truth
                    self._challenge(job, who, disagrees if rng.random() < 0.9 else not disagrees, k, 1 + seed % 5, seed)
            elif job.fee and r < 0.7:  # the reveal period
                self._reveal(job, who, seed, pending=True)
            else:
                if rng.random() < 0.3:
                    self.wait(WINDOW + 1)  # past the reveal deadline
                self._do(job, self.m, "finalize", job.id, sender=self.nodes[who])
        elif status == DISPUTED:
            d = self.m.get_dispute(job.id)
            if d.phase == VOTE:
                if rng.random() < 0.2:  # close the vote, whatever the count (a tie extends it)
                    self.wait(VOTE_TIMEOUT + 1)
                    self._do(job, self.m, "settle", job.id, sender=self.nodes[who])
                else:
                    self._vote(job, who, rng.random() < 0.5)
            elif rng.random() < 0.04:  # whoever is still to answer stays silent
                self.wait(ROUND_TIMEOUT + 1)
                self._do(job, self.m, "settle", job.id, sender=self.nodes[who])
            else:
                first = d.solver_answered or d.challenger_answered
                self._answer(job, not d.solver_answered if first else rng.random() < 0.5, rng.random() < 0.9)
        elif job.votes:
            self._release(job, rng.randrange(5))
        else:
            return False
        return True

    def _vote(self, job: JobModel, who: int, solver_wins: bool):
        referee = self.nodes[who]
        if self._do(job, self.m, "vote", job.id, solver_wins, sender=referee):
            job.votes[referee] = self.m.vote_weight(job.id, referee)
            job.sides[referee] = solver_wins

    def _release(self, job: JobModel, who: int):
        referee = self.nodes[who]
        logs = self._do(job, self.m, "release_vote", job.id, referee, sender=self.nodes[(who + 1) % 5])
        if logs:
            (ev,) = [e for e in logs if type(e).__name__ == "VoteReleased"]
            assert ev.weight == job.votes.pop(referee)
            # Slashed exactly when it voted for the side that lost.
            assert ev.slashed == (job.sides[referee] != (self._status(job) == DONE))
            if ev.slashed:
                job.wrong_votes_released += ev.weight

    # ------------------------------------------------------------ rules

    @initialize(seed=SEED)
    def first_job(self, seed):
        self.post(0, 5, 3, 50 * E18, 20 * E18, "third", seed)

    @precondition(lambda self: len(self._live()) < MAX_LIVE_JOBS)
    @rule(
        who=st.integers(0, 2),
        n=st.integers(1, 6),
        bounty=st.sampled_from([1, 50 * E18, 300 * E18]),
        n_ops=st.integers(1, 5),
        stake=st.sampled_from([0, MIN_STAKE, 20 * E18, 400 * E18, 900 * E18]),
        fee=st.sampled_from(["none", "third", "most", "all"]),
        seed=SEED,
    )
    def post(self, who, n, n_ops, bounty, stake, fee, seed):
        poster = self.posters[who]
        job_id = self.m.next_job_id()
        verify_fee = {"none": 0, "third": bounty // 3, "most": bounty - 1, "all": bounty}[fee]  # "all" is refused
        args = (b"\x11" * 32, 0, n, n_ops, bounty, stake, WINDOW, verify_fee)
        if self._do(None, self.m, "post_job", *args, sender=poster):
            rng = random.Random(seed)
            truth = random_leaves(rng, n)
            self.jobs.append(JobModel(id=job_id, poster=poster, bounty=bounty, stake=stake, n_ops=n_ops, truth=truth,
                                      fee=verify_fee, audit_truth=rng.randbytes(32)))

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, steps=st.integers(1, 40), seed=SEED)
    def progress(self, j, steps, seed):
        """Take a job several natural steps further (mostly honest, sometimes not, sometimes
        silent until a deadline), checking the invariants after each one: without this, random
        runs mostly bounce off preconditions and seldom reach a vote."""
        rng = random.Random(seed)
        job = self._pick(j)
        for _ in range(steps):
            if not self._advance(job, rng):
                return
            self.supply_is_conserved()
            self.escrows_match_obligations()

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=st.integers(0, 2))
    def cancel(self, j, who):
        job = self._pick(j)
        self._do(job, self.m, "cancel_job", job.id, sender=self.posters[who])

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=WHO)
    def claim(self, j, who):
        self._claim(self._pick(j), who)

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, honest=st.booleans(), k=st.integers(0, 8), seed=SEED)
    def commit(self, j, honest, k, seed):
        self._commit(self._pick(j), honest, k, seed)

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=WHO, honest=st.booleans(), k=st.integers(0, 8), n_ops=st.integers(1, 5), seed=SEED)
    def challenge(self, j, who, honest, k, n_ops, seed):
        self._challenge(self._pick(j), who, honest, k, n_ops, seed)

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=WHO, how=st.sampled_from(["true", "lazy", "random", "copy"]), seed=SEED)
    def attest(self, j, who, how, seed):
        self._attest(self._pick(j), who, how, seed)

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=st.integers(0, 8), seed=SEED)
    def reveal(self, j, who, seed):
        self._reveal(self._pick(j), who, seed)

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, solver_side=st.booleans(), honest=st.booleans())
    def answer(self, j, solver_side, honest):
        self._answer(self._pick(j), solver_side, honest)

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=WHO, solver_wins=st.booleans())
    def vote(self, j, who, solver_wins):
        self._vote(self._pick(j), who, solver_wins)

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=WHO)
    def release_vote(self, j, who):
        self._release(self._pick(j), who)

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=WHO)
    def settle(self, j, who):
        job = self._pick(j)
        self._do(job, self.m, "settle", job.id, sender=self.nodes[who])

    @precondition(lambda self: self.jobs)
    @rule(j=JOB, who=WHO)
    def finalize(self, j, who):
        job = self._pick(j)
        self._do(job, self.m, "finalize", job.id, sender=self.nodes[who])

    @rule(seconds=st.sampled_from(WAITS))
    def wait(self, seconds):
        boa.env.time_travel(seconds=seconds)

    @rule(who=WHO, amount=st.sampled_from([1, 100 * E18, 5_000 * E18]))
    def stake(self, who, amount):
        self._do(None, self.r, "stake", amount, sender=self.nodes[who])

    @rule(who=WHO, amount=st.sampled_from([1, 100 * E18, 1_000 * E18]))
    def unbond(self, who, amount):
        self._do(None, self.r, "request_unbond", amount, sender=self.nodes[who])

    @rule(who=WHO)
    def withdraw(self, who):
        self._do(None, self.r, "withdraw", sender=self.nodes[who])

    # ------------------------------------------------------------ invariants

    @invariant()
    def supply_is_conserved(self):
        assert self.t.totalSupply() == self.supply
        held = sum(self.t.balanceOf(h) for h in [*self.holders, self.r.address, self.m.address])
        assert held == self.supply

    @invariant()
    def escrows_match_obligations(self):
        statuses = {job.id: self._status(job) for job in self.jobs}
        escrow = sum(job.bounty for job in self.jobs if statuses[job.id] in LIVE)
        assert self.t.balanceOf(self.m.address) == escrow
        for job in self.jobs:
            if statuses[job.id] not in LIVE:
                # Paid out in full, to whom the job's outcome says (JobModel.expected_payout).
                assert job.paid_by_market == job.bounty, "a finished job did not pay its bounty out"
                assert dict(job.paid_to) == job.expected_payout(statuses[job.id])
            # What wrong votes paid the winner is exactly the weight they were released with.
            assert job.paid_for_votes == job.wrong_votes_released

        nodes = {n: self.r.get_node(n) for n in self.nodes}
        assert self.t.balanceOf(self.r.address) == sum(x.staked + x.unbonding for x in nodes.values())
        locked = defaultdict(int)
        for job in self.jobs:
            if statuses[job.id] in (CLAIMED, COMMITTED, DISPUTED):
                locked[job.solver] += job.stake
            if statuses[job.id] == DISPUTED:
                locked[job.challenger] += job.stake
            if statuses[job.id] in (COMMITTED, DISPUTED):
                for attester in job.attesters:
                    locked[attester] += MIN_STAKE
            for referee, weight in job.votes.items():
                locked[referee] += weight
        for n, x in nodes.items():
            assert x.locked == self.r.locked_by(n, self.m.address) == locked[n]
            assert x.locked <= x.staked


def test_accounting_invariants(ledger_base):
    run_state_machine_as_test(
        lambda: LedgerMachine(ledger_base),
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
