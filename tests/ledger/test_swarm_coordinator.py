"""SwarmCoordinator.vy: rounds, one submission per SWARM node per round, winners and counts."""

from __future__ import annotations

import boa
import pytest

from .conftest import ROUND_DURATION, SWARM, ZERO, events

ROLLOUT, STEPS = b"\x0a" * 32, b"\x0b" * 32


@pytest.fixture
def nodes(ledger):
    """Three SWARM nodes (referee2 already is one, with other roles too)."""
    extra = [boa.env.generate_address(f"swarm{i}") for i in range(2)]
    for i, who in enumerate(extra):
        ledger.registry.register(f"swarm-peer-{i}", SWARM, sender=who)
    return [ledger.referees[2], *extra]


def test_initial_state(ledger):
    s = ledger.swarm
    assert (s.owner(), s.registry(), s.round_duration()) == (ledger.deployer, ledger.registry.address, ROUND_DURATION)
    assert s.current_round() == 1
    assert s.round_started_at() <= boa.env.timestamp


def test_submit_records_and_tracks_the_best(ledger, nodes):
    s = ledger.swarm
    a, b, c = nodes
    s.submit(1, ROLLOUT, -5_000_000, STEPS, sender=a)  # negative rewards are valid
    (ev,) = events(s, "SubmissionRecorded")
    assert (ev.round, ev.peer, ev.rollout_cid, ev.reward, ev.step_root) == (1, a, ROLLOUT, -5_000_000, STEPS)
    assert (s.round_winner(1), s.best_reward(1)) == (a, -5_000_000)
    s.submit(1, ROLLOUT, 2_500_000, STEPS, sender=b)
    s.submit(1, b"\x0c" * 32, 2_500_000, STEPS, sender=c)  # a tie keeps the first submitter
    assert (s.round_winner(1), s.best_reward(1), s.participants(1)) == (b, 2_500_000, 3)
    sub = s.get_submission(1, c)
    assert (sub.rollout_cid, sub.reward, sub.step_root) == (b"\x0c" * 32, 2_500_000, STEPS)
    assert sub.submitted_at == boa.env.timestamp
    assert s.get_submission(2, c).rollout_cid == b"\x00" * 32
    assert [s.participation(n) for n in nodes] == [1, 1, 1]


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
    s.submit(1, ROLLOUT, 0, STEPS, sender=a)
    with boa.reverts("swarm: already submitted for this round"):
        s.submit(1, b"\x0c" * 32, 9, STEPS, sender=a)


def test_advance_round(ledger, nodes):
    s, a, b, _ = ledger.swarm, *nodes
    s.submit(1, ROLLOUT, 1, STEPS, sender=a)
    s.submit(1, ROLLOUT, 7, STEPS, sender=b)
    with boa.reverts("swarm: round still running"):
        s.advance_round(sender=a)
    s.advance_round()  # the owner may close a round early
    finished, started = events(s, "RoundFinished"), events(s, "RoundStarted")
    assert [(e.round, e.winner, e.best_reward, e.participants) for e in finished] == [(1, b, 7, 2)]
    assert [(e.round, e.started_at) for e in started] == [(2, boa.env.timestamp)]
    assert (s.current_round(), s.round_started_at(), s.wins(b), s.wins(a)) == (2, boa.env.timestamp, 1, 0)
    with boa.reverts("swarm: wrong round"):
        s.submit(1, ROLLOUT, 1, STEPS, sender=nodes[2])

    # An empty round has no winner, and anyone may close it once its time is up.
    boa.env.time_travel(seconds=ROUND_DURATION - 1)
    with boa.reverts("swarm: round still running"):
        s.advance_round(sender=ledger.outsider)
    boa.env.time_travel(seconds=1)
    s.advance_round(sender=ledger.outsider)
    (ev,) = events(s, "RoundFinished")
    assert (ev.round, ev.winner, ev.participants) == (2, ZERO, 0)
    assert s.current_round() == 3 and s.wins(ZERO) == 0
    s.submit(3, ROLLOUT, 1, STEPS, sender=a)
    assert s.participation(a) == 2
