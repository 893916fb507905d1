"""SwarmCoordinator.vy: rounds, staked submissions, refutations settled by a stake-weighted
referee vote, and wins that only unrefuted submissions earn."""

from __future__ import annotations

import boa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import (
    E18,
    MAX_UINT,
    REFEREE,
    REFEREE_MIN_STAKE,
    ROUND_DURATION,
    STAKED,
    SWARM,
    SWARM_STAKE,
    VOTE_TIMEOUT,
    ZERO,
    contract_path,
    events,
    new_referee,
)

ROLLOUT, STEPS = b"\x0a" * 32, b"\x0b" * 32
ONE = 10**6  # reward 1.0
ABSENT, OPEN, REFUTING, RELEASED, REFUTED = range(5)


def new_node(lg, name: str, stake: int = STAKED, roles: int = SWARM) -> str:
    """A fresh registered account with `stake` staked (0: registered but unstaked)."""
    who = boa.env.generate_address(name)
    lg.registry.register(f"peer-{name}", roles, sender=who)
    if stake:
        lg.token.mint(who, stake, sender=lg.deployer)
        lg.token.approve(lg.registry.address, MAX_UINT, sender=who)
        lg.registry.stake(stake, sender=who)
    return who


@pytest.fixture
def nodes(ledger):
    """Three staked SWARM nodes (referee2 already is one, with the referee role too)."""
    return [ledger.referees[2], new_node(ledger, "swarm0"), new_node(ledger, "swarm1")]


def locked(lg, who: str) -> int:
    return lg.registry.get_node(who).locked


def staked(lg, who: str) -> int:
    return lg.registry.get_node(who).staked


def end_round_and_window(lg) -> None:
    lg.swarm.advance_round()
    boa.env.time_travel(seconds=ROUND_DURATION)


def settle_after_vote(lg, round_: int, peer: str) -> list:
    boa.env.time_travel(seconds=VOTE_TIMEOUT)
    lg.swarm.settle_refutation(round_, peer)
    return lg.swarm.get_logs()


# ---------------------------------------------------------------- rounds and submissions


def test_initial_state(ledger):
    s = ledger.swarm
    assert (s.owner(), s.registry(), s.round_duration()) == (ledger.deployer, ledger.registry.address, ROUND_DURATION)
    assert (s.swarm_stake(), s.vote_timeout(), s.referee_min_stake()) == (SWARM_STAKE, VOTE_TIMEOUT, REFEREE_MIN_STAKE)
    assert s.current_round() == 1
    assert s.round_started_at() <= boa.env.timestamp
    assert s.window_end(1) == MAX_UINT


@pytest.mark.parametrize("swarm_stake, referee_min", [(0, REFEREE_MIN_STAKE), (SWARM_STAKE, 0)])
def test_free_claims_or_free_votes_are_refused_at_deployment(ledger, swarm_stake, referee_min):
    with boa.reverts("swarm: stakes must be positive"):
        boa.load(contract_path("SwarmCoordinator"), ledger.registry.address, ROUND_DURATION, swarm_stake,
                 VOTE_TIMEOUT, referee_min)


def test_submit_records_and_locks_stake(ledger, nodes):
    s = ledger.swarm
    a, b, c = nodes
    s.submit(1, ROLLOUT, 0, STEPS, sender=a)
    (ev,) = events(s, "SubmissionRecorded")
    assert (ev.round, ev.peer, ev.rollout_cid, ev.reward, ev.step_root, ev.stake) == (1, a, ROLLOUT, 0, STEPS, SWARM_STAKE)
    assert locked(ledger, a) == SWARM_STAKE
    s.submit(1, ROLLOUT, 250_000, STEPS, sender=b)
    s.submit(1, b"\x0c" * 32, ONE, STEPS, sender=c)  # exactly 1.0 is allowed
    sub = s.get_submission(1, c)
    assert (sub.rollout_cid, sub.reward, sub.step_root, sub.index, sub.status) == (b"\x0c" * 32, ONE, STEPS, 2, OPEN)
    assert sub.submitted_at == boa.env.timestamp
    assert s.get_submission(2, c).status == ABSENT
    assert (s.participants(1), s.unsettled(1)) == (3, 3)
    assert [s.participation(n) for n in nodes] == [1, 1, 1]
    # Claims are not results: nobody has won anything before the claims are settled.
    assert (s.round_winner(1), s.wins(c)) == (ZERO, 0)


def test_submit_checks(ledger, nodes):
    s, a = ledger.swarm, nodes[0]
    with boa.reverts("swarm: not a swarm node"):
        s.submit(1, ROLLOUT, 0, STEPS, sender=ledger.solver)  # registered, other roles
    with boa.reverts("swarm: not a swarm node"):
        s.submit(1, ROLLOUT, 0, STEPS, sender=ledger.outsider)
    with boa.reverts("swarm: wrong round"):
        s.submit(2, ROLLOUT, 0, STEPS, sender=a)
    with boa.reverts("swarm: empty cid"):
        s.submit(1, b"\x00" * 32, 0, STEPS, sender=a)
    with boa.reverts("swarm: empty cid"):
        s.submit(1, ROLLOUT, 0, b"\x00" * 32, sender=a)
    for reward in (ONE + 1, 2**255 - 1, MAX_UINT):
        with boa.reverts("swarm: reward above 1.0"):
            s.submit(1, ROLLOUT, reward, STEPS, sender=a)
    s.submit(1, ROLLOUT, 0, STEPS, sender=a)
    with boa.reverts("swarm: already submitted for this round"):
        s.submit(1, b"\x0c" * 32, 9, STEPS, sender=a)


def test_a_node_without_free_stake_cannot_claim_anything(ledger):
    """The attack this contract once allowed: a registered SWARM node with no stake claims
    reward 2**255-1 and takes the round. Now a claim needs stake to lose."""
    s = ledger.swarm
    sybil = new_node(ledger, "sybil", stake=0)
    with boa.reverts("swarm: reward above 1.0"):
        s.submit(1, ROLLOUT, 2**255 - 1, STEPS, sender=sybil)
    with boa.reverts("swarm: not enough free stake"):
        s.submit(1, ROLLOUT, ONE, STEPS, sender=sybil)
    poor = new_node(ledger, "poor", stake=SWARM_STAKE - 1)
    with boa.reverts("swarm: not enough free stake"):
        s.submit(1, ROLLOUT, ONE, STEPS, sender=poor)
    # Stake already locked elsewhere does not count either: one stake backs one claim.
    just = new_node(ledger, "just", stake=SWARM_STAKE)
    s.submit(1, ROLLOUT, ONE, STEPS, sender=just)
    s.advance_round()
    with boa.reverts("swarm: not enough free stake"):
        s.submit(2, ROLLOUT, ONE, STEPS, sender=just)
    assert s.participants(1) == 1 and s.participants(2) == 0


def test_advance_round(ledger, nodes):
    s, a, b, _ = ledger.swarm, *nodes
    s.submit(1, ROLLOUT, 1, STEPS, sender=a)
    s.submit(1, ROLLOUT, 7, STEPS, sender=b)
    with boa.reverts("swarm: round still running"):
        s.advance_round(sender=a)
    s.advance_round()  # the owner may close a round early
    finished, started = events(s, "RoundFinished"), events(s, "RoundStarted")
    assert [(e.round, e.participants) for e in finished] == [(1, 2)]
    assert [(e.round, e.started_at) for e in started] == [(2, boa.env.timestamp)]
    assert (s.current_round(), s.round_started_at(), s.round_ended_at(1)) == (2, boa.env.timestamp, boa.env.timestamp)
    assert s.window_end(1) == boa.env.timestamp + ROUND_DURATION and s.window_end(2) == MAX_UINT
    with boa.reverts("swarm: wrong round"):
        s.submit(1, ROLLOUT, 1, STEPS, sender=nodes[2])

    # An empty round has no winner, and anyone may close it once its time is up.
    boa.env.time_travel(seconds=ROUND_DURATION - 1)
    with boa.reverts("swarm: round still running"):
        s.advance_round(sender=ledger.outsider)
    boa.env.time_travel(seconds=1)
    s.advance_round(sender=ledger.outsider)
    (ev,) = events(s, "RoundFinished")
    assert (ev.round, ev.participants) == (2, 0)
    assert s.current_round() == 3 and s.round_winner(2) == ZERO


# ---------------------------------------------------------------- release and wins


def test_unrefuted_claims_are_released_after_the_window_and_the_best_one_wins(ledger, nodes):
    s, (a, b, c) = ledger.swarm, nodes
    s.submit(1, ROLLOUT, 400_000, STEPS, sender=a)
    s.submit(1, ROLLOUT, 700_000, STEPS, sender=b)
    s.submit(1, ROLLOUT, 700_000, STEPS, sender=c)  # ties b, but later
    with boa.reverts("swarm: refutation window open"):
        s.release(1, a)  # the round still runs
    s.advance_round()
    boa.env.time_travel(seconds=ROUND_DURATION - 1)
    with boa.reverts("swarm: refutation window open"):
        s.release(1, a)
    boa.env.time_travel(seconds=1)

    # Anyone may release; submissions settle in any order and the best settled one holds the win.
    s.release(1, c, sender=ledger.outsider)
    assert [(e.round, e.peer) for e in events(s, "SubmissionReleased")] == [(1, c)]
    assert (s.round_winner(1), s.best_reward(1), s.wins(c)) == (c, 700_000, 1)
    assert locked(ledger, c) == 0 and staked(ledger, c) == STAKED
    s.release(1, a, sender=ledger.outsider)
    assert (s.round_winner(1), s.wins(a)) == (c, 0)  # worse: no change
    s.release(1, b, sender=ledger.outsider)
    (ev,) = events(s, "RoundWinner")
    assert (ev.round, ev.winner, ev.reward) == (1, b, 700_000)  # equal reward, earlier submitter
    assert (s.wins(b), s.wins(c), s.unsettled(1)) == (1, 0, 0)
    assert s.get_submission(1, b).status == RELEASED
    with boa.reverts("swarm: nothing to release"):
        s.release(1, b)
    with boa.reverts("swarm: nothing to release"):
        s.release(1, ledger.outsider)


# ---------------------------------------------------------------- refutations


def test_an_inflated_claim_is_refuted_and_slashed(ledger, nodes):
    s, (liar, honest, refuter) = ledger.swarm, nodes
    r0, r1, r2 = ledger.referees
    s.submit(1, ROLLOUT, ONE, STEPS, sender=liar)  # its batch scores far less than 1.0
    s.submit(1, ROLLOUT, 300_000, STEPS, sender=honest)
    before = ledger.token.balanceOf(refuter)

    s.refute(1, liar, sender=refuter)
    (ev,) = events(s, "RefutationOpened")
    assert (ev.round, ev.peer, ev.refuter, ev.deadline) == (1, liar, refuter, boa.env.timestamp + VOTE_TIMEOUT)
    assert locked(ledger, refuter) == SWARM_STAKE and s.get_submission(1, liar).status == REFUTING

    s.vote(1, liar, True, sender=r0)
    (ev,) = events(s, "RefereeVoted")
    assert (ev.referee, ev.refuted, ev.weight) == (r0, True, STAKED)
    assert locked(ledger, r0) == STAKED
    s.vote(1, liar, True, sender=r1)
    new_ref = new_referee(ledger, "lonely", REFEREE_MIN_STAKE)
    s.vote(1, liar, False, sender=new_ref)  # wrong, outweighed
    v = s.get_vote(1, liar, new_ref)
    assert (v.weight, v.refuted, v.released) == (REFEREE_MIN_STAKE, False, False)
    with boa.reverts("swarm: vote still open"):
        s.settle_refutation(1, liar)

    logs = settle_after_vote(ledger, 1, liar)
    (ev,) = events(logs, "RefutationSettled")
    assert (ev.peer, ev.refuter, ev.refuted, ev.weight_refuted, ev.weight_upheld) == (
        liar, refuter, True, 2 * STAKED, REFEREE_MIN_STAKE)
    assert staked(ledger, liar) == STAKED - SWARM_STAKE and locked(ledger, liar) == 0
    assert ledger.token.balanceOf(refuter) == before + SWARM_STAKE and locked(ledger, refuter) == 0
    ref = s.get_refutation(1, liar)
    assert (ref.refuter, ref.settled, ref.refuted) == (refuter, True, True)
    assert s.get_submission(1, liar).status == REFUTED

    # Voters: the majority gets its stake back, the minority loses it to the refuter.
    s.release_vote(1, liar, r0, sender=ledger.outsider)
    (ev,) = events(s, "VoteReleased")
    assert (ev.referee, ev.weight, ev.slashed) == (r0, STAKED, False)
    s.release_vote(1, liar, new_ref, sender=refuter)
    assert (locked(ledger, r0), staked(ledger, r0)) == (0, STAKED)
    assert (locked(ledger, new_ref), staked(ledger, new_ref)) == (0, 0)
    assert ledger.token.balanceOf(refuter) == before + SWARM_STAKE + REFEREE_MIN_STAKE
    with boa.reverts("swarm: no vote to release"):
        s.release_vote(1, liar, r0)

    # The refuted claim never wins, though it claimed the most; the honest one does.
    end_round_and_window(ledger)
    with boa.reverts("swarm: nothing to release"):
        s.release(1, liar)
    s.release(1, honest)
    assert (s.round_winner(1), s.wins(liar), s.wins(honest), s.unsettled(1)) == (honest, 0, 1, 0)


def test_a_false_refutation_costs_the_refuter(ledger, nodes):
    s, (peer, other, refuter) = ledger.swarm, nodes
    r0, r1, _ = ledger.referees
    s.submit(1, ROLLOUT, 500_000, STEPS, sender=peer)
    s.refute(1, peer, sender=refuter)
    s.vote(1, peer, False, sender=r0)
    s.vote(1, peer, True, sender=r1)
    new_ref = new_referee(ledger, "tiebreak", REFEREE_MIN_STAKE)
    s.vote(1, peer, False, sender=new_ref)
    before = ledger.token.balanceOf(peer)
    logs = settle_after_vote(ledger, 1, peer)
    (ev,) = events(logs, "RefutationSettled")
    assert (ev.refuted, ev.weight_refuted, ev.weight_upheld) == (False, STAKED, STAKED + REFEREE_MIN_STAKE)
    assert staked(ledger, refuter) == STAKED - SWARM_STAKE and locked(ledger, refuter) == 0
    assert ledger.token.balanceOf(peer) == before + SWARM_STAKE
    # Upheld: settled at once (no second refutation), stake back and the win counted.
    assert locked(ledger, peer) == 0 and s.get_submission(1, peer).status == RELEASED
    assert (s.round_winner(1), s.wins(peer), s.unsettled(1)) == (peer, 1, 0)
    with boa.reverts("swarm: submission already refuted or settled"):
        s.refute(1, peer, sender=other)
    s.release_vote(1, peer, r1)  # voted to refute: slashed to the peer
    assert staked(ledger, r1) == 0 and ledger.token.balanceOf(peer) == before + SWARM_STAKE + STAKED


def test_refute_checks(ledger, nodes):
    s, (a, b, c) = ledger.swarm, nodes
    with boa.reverts("swarm: no such submission"):
        s.refute(1, a, sender=b)
    s.submit(1, ROLLOUT, ONE, STEPS, sender=a)
    with boa.reverts("swarm: cannot refute yourself"):
        s.refute(1, a, sender=a)
    with boa.reverts("registry: insufficient free stake"):
        s.refute(1, a, sender=ledger.outsider)  # a refutation is staked too
    s.refute(1, a, sender=b)
    with boa.reverts("swarm: submission already refuted or settled"):
        s.refute(1, a, sender=c)

    s.submit(1, ROLLOUT, ONE, STEPS, sender=c)
    s.advance_round()
    boa.env.time_travel(seconds=ROUND_DURATION - 1)
    s.refute(1, c, sender=ledger.challenger)  # still inside the window (any staked node may refute)
    s.submit(2, ROLLOUT, 0, STEPS, sender=b)
    s.advance_round()
    boa.env.time_travel(seconds=ROUND_DURATION)
    with boa.reverts("swarm: refutation window closed"):
        s.refute(2, b, sender=c)


def test_vote_and_settle_checks(ledger, nodes):
    s, (peer, refuter, _) = ledger.swarm, nodes
    r0 = ledger.referees[0]
    s.submit(1, ROLLOUT, ONE, STEPS, sender=peer)
    with boa.reverts("swarm: no refutation to vote on"):
        s.vote(1, peer, True, sender=r0)
    with boa.reverts("swarm: no refutation to settle"):
        s.settle_refutation(1, peer)
    s.refute(1, peer, sender=refuter)
    with boa.reverts("swarm: not a referee"):
        s.vote(1, peer, True, sender=ledger.solver)
    with boa.reverts("swarm: party cannot vote"):
        s.vote(1, peer, False, sender=ledger.referees[2])  # referee2 is the peer
    refuting_referee = new_node(ledger, "refref", roles=REFEREE)
    s.submit(1, ROLLOUT, 1, STEPS, sender=nodes[2])
    s.refute(1, nodes[2], sender=refuting_referee)
    with boa.reverts("swarm: party cannot vote"):
        s.vote(1, nodes[2], True, sender=refuting_referee)
    small = new_referee(ledger, "small", REFEREE_MIN_STAKE - 1)
    with boa.reverts("swarm: referee stake too low"):
        s.vote(1, peer, True, sender=small)
    s.vote(1, peer, True, sender=r0)
    with boa.reverts("swarm: already voted"):
        s.vote(1, peer, True, sender=r0)
    # Its whole free stake is locked by the first vote: nothing left to weigh a second one.
    with boa.reverts("swarm: referee stake too low"):
        s.vote(1, nodes[2], True, sender=r0)
    with boa.reverts("swarm: refutation not settled"):
        s.release_vote(1, peer, r0)


def test_no_majority_extends_the_vote_instead_of_a_draw(ledger, nodes):
    s, (peer, refuter, _) = ledger.swarm, nodes
    r0, r1, _ = ledger.referees
    s.submit(1, ROLLOUT, ONE, STEPS, sender=peer)
    s.refute(1, peer, sender=refuter)
    logs = settle_after_vote(ledger, 1, peer)  # nobody voted
    (ev,) = events(logs, "RefutationExtended")
    assert (ev.peer, ev.weight_each, ev.deadline) == (peer, 0, boa.env.timestamp + VOTE_TIMEOUT)
    assert s.get_refutation(1, peer).deadline == ev.deadline
    with boa.reverts("swarm: vote still open"):
        s.settle_refutation(1, peer)
    s.vote(1, peer, True, sender=r0)
    s.vote(1, peer, False, sender=r1)  # equal stakes: a tie
    logs = settle_after_vote(ledger, 1, peer)
    (ev,) = events(logs, "RefutationExtended")
    assert ev.weight_each == STAKED
    assert s.get_submission(1, peer).status == REFUTING and locked(ledger, peer) == SWARM_STAKE
    s.vote(1, peer, True, sender=new_referee(ledger, "decider", REFEREE_MIN_STAKE))
    logs = settle_after_vote(ledger, 1, peer)
    assert [e.refuted for e in events(logs, "RefutationSettled")] == [True]


def test_sybil_referees_with_less_stake_lose(ledger, nodes):
    """Votes weigh stake, not accounts: five sybils holding 450 between them lose to one
    honest referee with 500, and stake split too thin to reach referee_min_stake cannot vote."""
    s, (liar, refuter, _) = ledger.swarm, nodes
    s.submit(1, ROLLOUT, ONE, STEPS, sender=liar)
    s.refute(1, liar, sender=refuter)
    honest = new_referee(ledger, "honest", 500 * E18)
    s.vote(1, liar, True, sender=honest)
    sybils = [new_referee(ledger, f"sybil{i}", 90 * E18) for i in range(5)]
    for sybil in sybils:  # 90 each is under the 100 a vote needs
        with boa.reverts("swarm: referee stake too low"):
            s.vote(1, liar, False, sender=sybil)
    sybils = [new_referee(ledger, f"bigsybil{i}", 150 * E18) for i in range(3)]
    for sybil in sybils:
        s.vote(1, liar, False, sender=sybil)
    logs = settle_after_vote(ledger, 1, liar)
    (ev,) = events(logs, "RefutationSettled")
    assert (ev.refuted, ev.weight_refuted, ev.weight_upheld) == (True, 500 * E18, 450 * E18)
    for sybil in sybils:
        s.release_vote(1, liar, sybil)
        assert staked(ledger, sybil) == 0  # each lost its whole stake to the refuter
    s.release_vote(1, liar, honest)
    assert staked(ledger, honest) == 500 * E18


# ---------------------------------------------------------------- conservation, over strategies


@settings(max_examples=25, deadline=None)
@given(
    claims=st.lists(st.tuples(st.integers(0, ONE), st.booleans()), min_size=1, max_size=3),
    votes=st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 2)), max_size=6),
)
def test_credits_are_conserved_and_the_stake_majority_decides(ledger_base, claims, votes):
    """Any mix of claims (refuted or not) and referee votes (stakes 100-400, any side, any
    refutation) settles by the strict stake majority, moves credits only from each loser to
    the side it lost to, and leaves nothing locked once every claim and vote is released."""
    with boa.env.anchor():
        lg, s = ledger_base, ledger_base.swarm
        peers = [new_node(lg, f"p{i}") for i in range(len(claims))]
        refuter = new_node(lg, "refuter", stake=len(claims) * SWARM_STAKE)
        referees = [new_referee(lg, f"ref{i}", (i + 1) * 100 * E18) for i in range(4)]
        deciders = [new_referee(lg, f"decider{i}", REFEREE_MIN_STAKE) for i in range(len(claims))]
        everyone = [*peers, refuter, *referees, *deciders]
        wallet = {w: lg.token.balanceOf(w) for w in everyone}
        stake = {w: staked(lg, w) for w in everyone}
        held = lg.token.balanceOf(lg.registry.address) - sum(stake.values())  # the rest of the cast

        for peer, (reward, _) in zip(peers, claims):
            s.submit(1, ROLLOUT, reward, STEPS, sender=peer)
        disputed = [p for p, (_, refute) in zip(peers, claims) if refute]
        for peer in disputed:
            s.refute(1, peer, sender=refuter)
        ballots = {p: [] for p in disputed}  # (referee, refuted, weight)
        for who, side, target in votes:
            r = referees[who]
            if disputed and not any(r == b[0] for bs in ballots.values() for b in bs):
                peer = disputed[target % len(disputed)]
                ballots[peer].append((r, side, free(lg, r)))
                s.vote(1, peer, side, sender=r)
        s.advance_round()
        boa.env.time_travel(seconds=max(VOTE_TIMEOUT, ROUND_DURATION))
        for peer, decider in zip(disputed, deciders):
            s.settle_refutation(1, peer)
            yes = sum(w for _, side, w in ballots[peer] if side)
            no = sum(w for _, side, w in ballots[peer] if not side)
            if yes == no:  # no majority: the vote runs on until someone breaks the tie
                assert s.get_submission(1, peer).status == REFUTING
                ballots[peer].append((decider, True, REFEREE_MIN_STAKE))
                s.vote(1, peer, True, sender=decider)
                boa.env.time_travel(seconds=VOTE_TIMEOUT)
                s.settle_refutation(1, peer)
                yes += REFEREE_MIN_STAKE
            refuted = yes > no
            assert s.get_refutation(1, peer).refuted == refuted
            winner, loser = (refuter, peer) if refuted else (peer, refuter)
            stake[loser] -= SWARM_STAKE
            wallet[winner] += SWARM_STAKE
            for r, side, w in ballots[peer]:
                s.release_vote(1, peer, r)
                if side != refuted:
                    stake[r] -= w
                    wallet[winner] += w
        for peer in peers:
            if s.get_submission(1, peer).status == OPEN:
                s.release(1, peer)

        assert s.unsettled(1) == 0
        assert {w: lg.token.balanceOf(w) for w in everyone} == wallet
        assert {w: staked(lg, w) for w in everyone} == stake
        assert all(locked(lg, w) == 0 for w in everyone)
        assert lg.token.balanceOf(lg.registry.address) - sum(stake.values()) == held
        # Only settled, unrefuted claims compete; the best of them holds the round's one win.
        settled = [p for p in peers if s.get_submission(1, p).status == RELEASED]
        assert sum(s.wins(p) for p in peers) == (1 if settled else 0)
        if settled:
            best = max(s.get_submission(1, p).reward for p in settled)
            first = next(p for p in settled if s.get_submission(1, p).reward == best)
            assert (s.round_winner(1), s.best_reward(1)) == (first, best)


def free(lg, who: str) -> int:
    return lg.registry.free_stake(who)
