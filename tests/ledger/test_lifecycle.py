"""Whole job lifecycles through the Python client, on the embedded devnet and on hardhat 2.

The dispute is played with real training runs of the tiny model: an honest run and one whose
party flipped a bit, their real step-hash Merkle trees, their real op traces, and referees that
recompute the pinned op with the repro kernels before voting.
"""

from __future__ import annotations

import hashlib

import pytest

from bitswarm.jobs.onchain import ChainParty, play_rounds, referee_vote, result_root
from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import prepare, run_training
from bitswarm.ledger.client import CREDIT, DISPUTE_PHASE, JOB_STATUS, ROLE_REFEREE, ROLE_SOLVER, ROLE_VERIFIER
from bitswarm.ledger.errors import RevertError
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.dispute import Party
from bitswarm.verify.transcript import build as build_transcript

from .chains import FAST, hardhat_missing, start_devnet, start_hardhat

pytestmark = pytest.mark.network
STEPS = 6
BOUNTY, STAKE, WINDOW = 50 * CREDIT, 20 * CREDIT, 120
POSTER, SOLVER, CHALLENGER, REFEREES = 1, 2, 3, (4, 5, 6)


@pytest.fixture(scope="module", params=["devnet", "hardhat"])
def chain(request, tmp_path_factory):
    if request.param == "hardhat":
        why = hardhat_missing()
        if why:
            pytest.skip(why)
        c = start_hardhat()
    else:
        c = start_devnet(tmp_path_factory.mktemp("devnet"))
    lg = {i: c.ledger(i) for i in (POSTER, SOLVER, CHALLENGER, *REFEREES)}
    for i, roles in [(SOLVER, ROLE_SOLVER | ROLE_VERIFIER), (CHALLENGER, ROLE_SOLVER | ROLE_VERIFIER)] + [
        (r, ROLE_REFEREE) for r in REFEREES
    ]:
        lg[i].register(f"12D3KooWtest{i}", roles)
        lg[i].stake(100 * CREDIT)
    c.actors = lg
    yield c
    c.stop()


@pytest.fixture(scope="module")
def runs(tiny_model_store, tmp_path_factory):
    """An honest run and a cheat's run of one spec (bit flipped at step 3, op 40)."""
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=STEPS).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
    root = tmp_path_factory.mktemp("runs")
    run_training(store, spec, root / "honest")
    run_training(store, spec, root / "cheat", adversary="bitflip@step=3,op=40")
    spec_cid = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    return store, spec, root, spec_cid


def _party(runs, which: str) -> Party:
    store, spec, root, _ = runs
    run = root / which
    return Party(which, run, prepare(store, spec), Adversary.load(run))


def _balances(chain) -> dict[int, int]:
    return {i: lg.token_balance() for i, lg in chain.actors.items()}


def _stakes(chain) -> dict[int, int]:
    return {i: lg.node()["staked"] for i, lg in chain.actors.items()}


def _post_and_commit(chain, runs, solver_party: Party) -> int:
    store, _, _, spec_cid = runs
    a = chain.actors
    job = a[POSTER].post_job(spec_cid, "train", STEPS, BOUNTY, STAKE, WINDOW)
    a[SOLVER].claim_job(job)
    transcript_cid, _ = build_transcript(store, solver_party.run)
    a[SOLVER].commit_result(job, result_root(solver_party), transcript_cid)
    return job


def test_job_settled_without_challenge(chain, runs):
    a = chain.actors
    before, stakes = _balances(chain), _stakes(chain)
    job = _post_and_commit(chain, runs, _party(runs, "honest"))
    assert JOB_STATUS[a[POSTER].job(job)["status"]] == "committed"
    with pytest.raises(RevertError, match="challenge"):
        a[SOLVER].finalize(job)  # the window is still open
    a[POSTER].increase_time(WINDOW + 1)
    rc = a[CHALLENGER].finalize(job)  # anyone may finalize
    assert rc.event("JobFinalized")["solver"] == a[SOLVER].address
    after = _balances(chain)
    assert after[SOLVER] - before[SOLVER] == BOUNTY
    assert before[POSTER] - after[POSTER] == BOUNTY
    assert _stakes(chain) == stakes
    assert a[SOLVER].node()["locked"] == 0
    assert JOB_STATUS[a[POSTER].job(job)["status"]] == "done"


@pytest.mark.parametrize("cheater", ["solver", "challenger"])
def test_challenged_job_settles_for_the_honest_side(chain, runs, cheater):
    a = chain.actors
    store, spec, root, _ = runs
    solver_p = _party(runs, "cheat" if cheater == "solver" else "honest")
    challenger_p = _party(runs, "honest" if cheater == "solver" else "cheat")
    before, stakes = _balances(chain), _stakes(chain)
    job = _post_and_commit(chain, runs, solver_p)
    a[CHALLENGER].challenge(job, result_root(challenger_p))
    sides = [ChainParty(a[SOLVER], job, solver_p, "solver"), ChainParty(a[CHALLENGER], job, challenger_p, "challenger")]
    play_rounds(sides)
    d = a[POSTER].dispute(job)
    assert DISPUTE_PHASE[d["phase"]] == "vote"
    assert d["disputed_step"] + 1 == 3  # the step the cheat flipped a bit in
    assert d["disputed_op"] == 40  # and the op
    for r in REFEREES:
        verdict = referee_vote(a[r], job, solver_p, challenger_p, prepare(store, spec), root / "honest")
        assert verdict["referee"] == "op" and verdict["winner"] == ("B" if cheater == "solver" else "A")
    with pytest.raises(RevertError, match="nothing to settle"):
        a[POSTER].settle(job)
    a[POSTER].increase_time(FAST.vote_timeout + 1)
    rc = a[POSTER].settle(job)
    honest, cheat = (CHALLENGER, SOLVER) if cheater == "solver" else (SOLVER, CHALLENGER)
    assert rc.event("DisputeSettled")["winner"] == a[honest].address
    after = _balances(chain)
    assert _stakes(chain)[cheat] == stakes[cheat] - STAKE  # the loser is slashed ...
    assert after[honest] - before[honest] == STAKE + (BOUNTY if honest == SOLVER else 0)  # ... to the winner
    assert before[POSTER] - after[POSTER] == (BOUNTY if honest == SOLVER else 0)  # refunded if the solver cheated
    assert a[SOLVER].node()["locked"] == a[CHALLENGER].node()["locked"] == 0
    assert JOB_STATUS[a[POSTER].job(job)["status"]] == ("done" if honest == SOLVER else "failed")
    # top the loser's stake up again for the next test on this chain
    a[cheat].stake(STAKE)


def test_a_party_that_stops_answering_loses_by_deadline(chain, runs):
    a = chain.actors
    solver_p, challenger_p = _party(runs, "cheat"), _party(runs, "honest")
    stakes = _stakes(chain)
    job = _post_and_commit(chain, runs, solver_p)
    a[CHALLENGER].challenge(job, result_root(challenger_p))
    challenger = ChainParty(a[CHALLENGER], job, challenger_p, "challenger")
    assert challenger.act() == f"step {STEPS - 1}"  # the challenger answers; the solver goes quiet
    with pytest.raises(RevertError, match="nothing to settle"):
        a[POSTER].settle(job)
    a[POSTER].increase_time(FAST.round_timeout + 1)
    rc = a[POSTER].settle(job)
    ev = rc.event("DisputeSettled")
    assert ev["winner"] == a[CHALLENGER].address and ev["reason"] == "deadline"
    assert _stakes(chain)[SOLVER] == stakes[SOLVER] - STAKE
    a[SOLVER].stake(STAKE)
