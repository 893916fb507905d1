"""The dispute game against an adaptive cheater, searched by hypothesis on boa.

Each example is one job, disputed between an honest side and a cheater (solver or challenger)
that at every query of the game picks among: answer from the tree it committed, lie (the honest
value instead), forge a proof, answer with a valid proof of another index, commit a trace of the
wrong length or claim the wrong op count, or go silent; and that brings its own referee accounts
(less stake in total than the one honest, live referee) to vote for it. The honest referee votes
by the rule a real one applies: the winner is the side whose value at the disputed op is the
honest one (the honest op digest, or the honest state after the step for the virtual op).

After settle and release_vote: the honest side won, the cheater lost its locked stake, its
referees lost theirs, nobody else lost a credit, and the credits add up.

The model's one restriction: an honest verifier challenges only a wrong final state (leaves
are cumulative state commitments, so a right final leaf is a right result), so a cheating
solver's tree always ends wrong; a cheating challenger's may end right (and loses at once).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import boa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitswarm.verify.merkle import merkle_root, proof, verify

from .conftest import (
    DONE,
    E18,
    FAILED,
    JOB_STAKE,
    MIN_STAKE,
    OP,
    REFEREE_MIN_STAKE,
    ROUND_TIMEOUT,
    SETTLED,
    STEP,
    TRACE,
    VOTE,
    VOTE_TIMEOUT,
    new_referee,
    random_leaves,
    root_bytes,
)

NO_PROOF = "market: proof does not match the committed root"
# A cheater's move on a query, drawn as an integer so that hypothesis shrinks towards answering
# from its tree: 0-7 answer, 8 lie, 9 forge, 10 another index's proof, 11 silent.
ANSWER_MOVES = ["tree"] * 8 + ["lie", "forge", "other_index", "silent"]
# On the trace commitment: 0-6 commit, 7-8 claim a wrong op count, 9 silent.
COMMIT_MOVES = ["commit"] * 7 + ["wrong_count"] * 2 + ["silent"]
TRACE_SHAPES = ["diverge", "mask", "honest", "wrong_length"]
MAX_SYBIL_STAKE = 300  # credits each, at most 3 of them: 900 < the honest referee's 1,000


@dataclass
class Game:
    lg: object
    data: object
    job_id: int
    cheater: str  # "solver" | "challenger"
    seed: int
    n_ops: int
    honest_leaves: list[str]
    cheat_leaves: list[str]

    @property
    def cheat_addr(self) -> str:
        return self.lg.solver if self.cheater == "solver" else self.lg.challenger

    @property
    def honest_addr(self) -> str:
        return self.lg.challenger if self.cheater == "solver" else self.lg.solver

    def draw(self, strategy, label: str):
        return self.data.draw(strategy, label=label)

    def dispute(self):
        return self.lg.market.get_dispute(self.job_id)

    def honest_ops(self, step: int) -> list[str]:
        """The honest op digests of a step: a pure function of the step, as the spec makes them."""
        return random_leaves(random.Random(f"{self.seed}/{step}"), self.n_ops)


def _b(x: str) -> bytes:
    return bytes.fromhex(x)


def _respond(g: Game, fn: str, who: str, value: str, path: list) -> None:
    getattr(g.lg.market, fn)(g.job_id, _b(value), [_b(sib) for _side, sib in path], sender=who)


def _honest_answer(g: Game, fn: str, tree: list[str]) -> None:
    i = g.dispute().index
    _respond(g, fn, g.honest_addr, tree[i], proof(tree, i))


def _cheat_answer(g: Game, fn: str, tree: list[str], n: int, root: str, honest: list[str]) -> bool:
    """The cheater's move(s) on the current query against its committed `root` of a claimed
    `n`-leaf tree (its `tree` may have another length); False when it goes silent. Whatever it
    sends is accepted exactly when the Python reference verifier accepts it."""
    i = g.dispute().index
    while True:
        move = ANSWER_MOVES[g.draw(st.integers(0, len(ANSWER_MOVES) - 1), "answer move")]
        if move == "silent":
            return False
        j = min(i, len(tree) - 1)
        value, path = tree[j], proof(tree, j)
        if move == "lie":
            value = honest[i]
        elif move == "forge":
            value = honest[i]
            path = [[side, random.Random(g.seed + k).randbytes(32).hex()] for k, (side, _) in enumerate(path)]
            path = path or [["R", "00" * 32]]
        elif move == "other_index" and len(tree) > 1:
            other = g.draw(st.integers(0, len(tree) - 2), "other index")
            other += other >= j
            value, path = tree[other], proof(tree, other)
        if verify(value, path, root, i, n):
            _respond(g, fn, g.cheat_addr, value, path)
            return True
        with boa.reverts(NO_PROOF):
            _respond(g, fn, g.cheat_addr, value, path)


def _round(g: Game, fn: str, honest: list[str], cheat: list[str], n: int, root: str) -> bool:
    """Both sides answer one query, in a drawn order; False when the cheater went silent. The
    honest side answers whatever the cheater does: were both silent, the challenger would lose."""
    cheater_first = g.draw(st.booleans(), "cheater answers first")
    if not cheater_first:
        _honest_answer(g, fn, honest)
    answered = _cheat_answer(g, fn, cheat, n, root, honest)
    if cheater_first and g.dispute().phase != SETTLED:
        _honest_answer(g, fn, honest)
    return answered


def _cheat_trace(g: Game, honest: list[str]) -> list[str]:
    """The trace the cheater commits to, chosen knowing the disputed step and the honest trace."""
    rng = random.Random(g.seed ^ 0x5EED)
    # Drawn from a wide range so that generation spreads evenly over the four shapes.
    shape = TRACE_SHAPES[g.draw(st.integers(0, 99), "trace shape") // 25]
    if shape == "honest":  # the lazy cheat: every op right, the committed state after wrong
        return list(honest)
    if shape == "diverge":
        k = g.draw(st.integers(0, g.n_ops - 1), "trace diverges at")
        return honest[:k] + random_leaves(rng, g.n_ops - k)
    if shape == "mask":
        wrong = g.draw(st.lists(st.booleans(), min_size=g.n_ops, max_size=g.n_ops), "wrong ops")
        return [rng.randbytes(32).hex() if w else h for h, w in zip(honest, wrong, strict=True)]
    m = g.draw(st.integers(1, g.n_ops + 3).filter(lambda m: m != g.n_ops), "trace length")
    return (honest + random_leaves(rng, 3))[:m]


def _commit_traces(g: Game, honest: list[str], cheat: list[str]) -> bool:
    m = g.lg.market
    cheater_first = g.draw(st.booleans(), "cheater commits first")
    if not cheater_first:
        m.commit_trace(g.job_id, root_bytes(honest), g.n_ops, sender=g.honest_addr)
    while True:
        move = COMMIT_MOVES[g.draw(st.integers(0, len(COMMIT_MOVES) - 1), "commit move")]
        if move == "silent":
            break
        if move == "commit":
            # Always the job's op count: a trace of another length is committed under it.
            m.commit_trace(g.job_id, root_bytes(cheat), g.n_ops, sender=g.cheat_addr)
            break
        n = g.draw(st.sampled_from([0, len(cheat), g.n_ops - 1, g.n_ops + 1]).filter(lambda x: x != g.n_ops), "count")
        with boa.reverts("market: op count is fixed by the job"):
            m.commit_trace(g.job_id, root_bytes(cheat), n, sender=g.cheat_addr)
    if cheater_first:
        m.commit_trace(g.job_id, root_bytes(honest), g.n_ops, sender=g.honest_addr)
    return move != "silent"


def _referee_stage(g: Game, honest_referee: str, sybils: list[str]) -> list[str]:
    """The honest referee rules by the rule and votes before the deadline; the cheater's
    referees vote for it, some after the deadline. Returns the voters."""
    d = g.dispute()
    step, op = d.disputed_step, d.disputed_op
    ops = g.honest_ops(step)
    truth = ops[op] if op < g.n_ops else g.honest_leaves[step]
    before = g.honest_leaves[step - 1] if step else "00" * 32
    # The evidence the chain hands the referee is the honest run's, and it separates the sides.
    assert d.agreed == _b(ops[op - 1] if op else before) and d.before == _b(before)
    honest_diff, cheat_diff = (d.challenger_diff, d.solver_diff) if g.cheater == "solver" else (d.solver_diff, d.challenger_diff)
    assert honest_diff == _b(truth) != cheat_diff
    solver_wins = d.solver_diff == _b(truth)

    order = g.draw(st.permutations([honest_referee, *sybils]), "vote order")
    late = {s for s in sybils if g.draw(st.booleans(), "votes after the deadline")}
    for referee in [r for r in order if r not in late]:
        g.lg.market.vote(g.job_id, solver_wins if referee == honest_referee else g.cheater == "solver", sender=referee)
    boa.env.time_travel(seconds=VOTE_TIMEOUT + 1)
    for referee in [r for r in order if r in late]:
        g.lg.market.vote(g.job_id, g.cheater == "solver", sender=referee)
    return order


def _wealth(lg, who: str) -> int:
    node = lg.registry.get_node(who)
    return lg.token.balanceOf(who) + node.staked + node.unbonding


def play(lg, data) -> str:
    """One game; returns how it ended."""
    draw = data.draw
    n = draw(st.integers(1, 12), "num_leaves")
    n_ops = draw(st.integers(1, 9), "ops_per_leaf")
    cheater = draw(st.sampled_from(["solver", "challenger"]), "cheater")
    stake = draw(st.sampled_from([MIN_STAKE, JOB_STAKE, 3 * JOB_STAKE]), "stake")
    seed = draw(st.integers(0, 2**32 - 1), "seed")
    rng = random.Random(seed)
    honest_leaves = random_leaves(rng, n)
    if draw(st.booleans(), "diverges once"):
        k = draw(st.integers(0, n - 1), "diverges at")
        wrong = set(range(k, n))
    else:
        wrong = {i for i, w in enumerate(draw(st.lists(st.booleans(), min_size=n, max_size=n), "wrong leaves")) if w}
    # An honest verifier challenges a wrong final state; a cheating challenger needs some
    # other root than the solver's.
    if cheater == "solver" or not wrong:
        wrong.add(n - 1)
    cheat_leaves = [rng.randbytes(32).hex() if i in wrong else h for i, h in enumerate(honest_leaves)]
    sybil_stakes = draw(st.lists(st.integers(REFEREE_MIN_STAKE // E18, MAX_SYBIL_STAKE), max_size=3), "sybils")
    sybils = [new_referee(lg, f"sybil{i}", s * E18) for i, s in enumerate(sybil_stakes)]
    honest_referee = lg.referees[0]

    everyone = [*lg.actors, *sybils]
    supply = lg.token.totalSupply()
    wealth0 = {w: _wealth(lg, w) for w in everyone}
    m = lg.market
    job_id = m.post_job(b"\x11" * 32, 0, n, n_ops, stake // 2 + 1, stake, 86400, sender=lg.poster)
    bounty = stake // 2 + 1
    g = Game(lg, data, job_id, cheater, seed, n_ops, honest_leaves, cheat_leaves)
    solver_leaves, chal_leaves = (cheat_leaves, honest_leaves) if cheater == "solver" else (honest_leaves, cheat_leaves)
    m.claim_job(job_id, sender=lg.solver)
    m.commit_result(job_id, root_bytes(solver_leaves), b"\x22" * 32, sender=lg.solver)
    m.challenge(job_id, root_bytes(chal_leaves), sender=lg.challenger)

    voters: list[str] = []
    silent = False
    while not silent and g.dispute().phase == STEP:
        silent = not _round(g, "respond_step", honest_leaves, cheat_leaves, n, merkle_root(cheat_leaves))
    if not silent and g.dispute().phase == TRACE:
        honest_ops = g.honest_ops(g.dispute().disputed_step)
        cheat_ops = _cheat_trace(g, honest_ops)
        silent = not _commit_traces(g, honest_ops, cheat_ops)
        while not silent and g.dispute().phase == OP:
            silent = not _round(g, "respond_op", honest_ops, cheat_ops, n_ops, merkle_root(cheat_ops))
    if silent:
        boa.env.time_travel(seconds=ROUND_TIMEOUT + 1)
        how = "deadline"
    elif g.dispute().phase == VOTE:
        voters = _referee_stage(g, honest_referee, sybils)
        how = "referee vote (virtual op)" if g.dispute().disputed_op == n_ops else "referee vote"
    else:
        how = "final state agreed"
    if g.dispute().phase != SETTLED:
        m.settle(job_id, sender=lg.outsider)
        (ended,) = [e for e in m.get_logs() if type(e).__name__ == "DisputeSettled"]
        assert (ended.winner, ended.loser, ended.reason) == (g.honest_addr, g.cheat_addr, how.split(" (")[0])
    for referee in voters:
        m.release_vote(job_id, referee, sender=draw(st.sampled_from([lg.outsider, referee]), "releaser"))

    # The honest side won, the cheater and its referees paid, nobody else lost a credit.
    d, job = g.dispute(), m.get_job(job_id)
    assert (d.phase, d.winner) == (SETTLED, g.honest_addr)
    assert job.status == (FAILED if cheater == "solver" else DONE)
    sybil_votes = sum(s * E18 for s, who in zip(sybil_stakes, sybils, strict=True) if who in voters)
    expected = dict(wealth0)
    expected[g.cheat_addr] -= stake
    expected[g.honest_addr] += stake + sybil_votes
    if cheater == "challenger":  # the honest solver earned the bounty
        expected[lg.poster] -= bounty
        expected[lg.solver] += bounty
    for s, who in zip(sybil_stakes, sybils, strict=True):
        expected[who] -= s * E18 if who in voters else 0
    assert {w: _wealth(lg, w) for w in everyone} == expected
    assert all(lg.registry.get_node(w).locked == 0 for w in everyone)
    assert lg.token.balanceOf(m.address) == 0
    nodes = [lg.registry.get_node(w) for w in everyone]
    assert lg.token.balanceOf(lg.registry.address) == sum(x.staked + x.unbonding for x in nodes)
    assert lg.token.totalSupply() == supply == sum(lg.token.balanceOf(w) for w in everyone) + sum(
        x.staked + x.unbonding for x in nodes
    )
    return how


def _search(ledger_base, examples: int) -> Counter:
    outcomes: Counter = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def game(data):
        with boa.env.anchor():
            outcomes[play(ledger_base, data)] += 1

    game()
    return outcomes


def test_no_cheater_wins_a_dispute(ledger_base):
    outcomes = _search(ledger_base, 120)
    # The search reached every way a dispute ends.
    for how in ("deadline", "final state agreed", "referee vote", "referee vote (virtual op)"):
        assert outcomes[how] > 0, outcomes


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 0.2-0.4 s a game (13 min for 2,000 on a shared core): past the suite's 600 s
def test_no_cheater_wins_a_dispute_long_search(ledger_base):
    _search(ledger_base, 2000)
