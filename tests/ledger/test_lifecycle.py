"""Whole job lifecycles through the Python client, on the embedded devnet and on hardhat 2.

The disputes are played with real training runs of the tiny model: an honest run and cheats
(every training and protocol adversary of verify.adversary), their real chained leaves, their
real op traces, and referees that recompute the pinned transition with the repro kernels and
vote with their stake. The ledger cheats (sybil referees, a self-challenge, a challenge without
stake) are played against the same contracts.
"""

from __future__ import annotations

import hashlib

import pytest

from bitswarm.jobs.onchain import (
    ChainParty,
    attest_audit,
    challenge,
    commit_result,
    play_rounds,
    referee_vote,
    reveal_audit,
)
from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import prepare, run_training
from bitswarm.ledger.client import CREDIT, DISPUTE_PHASE, JOB_STATUS, ROLE_REFEREE, ROLE_SOLVER, ROLE_VERIFIER
from bitswarm.ledger.errors import RevertError
from bitswarm.verify import merkle
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.attest import commitment
from bitswarm.verify.dispute import TrainReferee, TrainRun
from bitswarm.verify.game import Party, honest
from bitswarm.verify.trace import count_ops
from bitswarm.verify.transcript import build as build_transcript

from .chains import FAST, hardhat_missing, start_devnet, start_hardhat

pytestmark = pytest.mark.network
STEPS = 6
BOUNTY, STAKE, WINDOW = 50 * CREDIT, 20 * CREDIT, 120
POSTER, SOLVER, CHALLENGER, REFEREES, SYBILS, NO_STAKE = 1, 2, 3, (4, 5, 6), (7, 8), 9
CHEATS = ["bitflip@step=3,op=40", "lazy@step=3", "tracelie@step=2", "short@step=3", "long@step=3",
          "wrongindex@step=3", "inconsistent@step=2", "silent@step=2"]


@pytest.fixture(scope="module", params=["devnet", "hardhat"])
def chain(request, tmp_path_factory):
    if request.param == "hardhat":
        why = hardhat_missing()
        if why:
            pytest.skip(why)
        c = start_hardhat()
    else:
        c = start_devnet(tmp_path_factory.mktemp("devnet"))
    lg = {i: c.ledger(i) for i in (POSTER, SOLVER, CHALLENGER, *REFEREES, *SYBILS, NO_STAKE)}
    for i, roles in [(SOLVER, ROLE_SOLVER | ROLE_VERIFIER), (CHALLENGER, ROLE_SOLVER | ROLE_VERIFIER)] + [
        (r, ROLE_REFEREE) for r in REFEREES
    ]:
        lg[i].register(f"12D3KooWtest{i}", roles)
        lg[i].stake(100 * CREDIT)
    for i in SYBILS:  # the cheat's throwaway referee accounts: the least stake a vote allows
        lg[i].register(f"12D3KooWsybil{i}", ROLE_REFEREE)
        lg[i].stake(FAST.referee_min_stake)
    lg[NO_STAKE].register("12D3KooWnostake", ROLE_VERIFIER)
    c.actors = lg
    yield c
    c.stop()


@pytest.fixture(scope="module")
def runs(tiny_model_store, tmp_path_factory):
    """An honest run and one run per cheat, of one spec."""
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=STEPS).model_copy(update={"seq_len": 16, "global_batch": 2, "checkpoint_every": 2})
    root = tmp_path_factory.mktemp("runs")
    for name in ["honest"] + CHEATS:
        run_training(store, spec, root / name, adversary=None if name == "honest" else name)
    spec_cid = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    return store, spec, root, spec_cid, count_ops(prepare(store, spec))


def _party(runs, which: str) -> Party:
    store, spec, root, _, n = runs
    adv = Adversary.load(root / which)
    return Party(which, TrainRun(root / which, prepare(store, spec), adv), n, adv.tactic() if adv else honest)


def _referee(runs) -> TrainReferee:
    store, spec, *_ = runs
    return TrainReferee(prepare(store, spec))


def _balances(chain) -> dict[int, int]:
    return {i: lg.token_balance() for i, lg in chain.actors.items()}


def _stakes(chain) -> dict[int, int]:
    return {i: lg.node()["staked"] for i, lg in chain.actors.items()}


def _post_and_commit(chain, runs, solver_party: Party) -> int:
    store, _, _, spec_cid, n = runs
    a = chain.actors
    job = a[POSTER].post_job(spec_cid, "train", STEPS, BOUNTY, STAKE, WINDOW, ops_per_leaf=n)
    a[SOLVER].claim_job(job)
    transcript_cid, transcript = build_transcript(store, solver_party.comp.run)
    assert transcript["root"] == solver_party.root  # the transcript commits exactly the game's leaves
    commit_result(a[SOLVER], job, solver_party, transcript_cid)
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


def test_verification_pays_only_the_verifier_that_reexecuted(chain, runs):
    """A job with a verification fee. The honest verifier re-executes the audit leaf drawn at
    commit and attests to its trace root; a lazy one commits to the audited leaf itself, copied
    from the transcript. After the window the solver and both reveal, and finalize pays the
    whole fee to the honest verifier, the rest of the bounty to the solver, and unlocks both
    attesters' stake."""
    a = chain.actors
    store, _, _, spec_cid, n = runs
    lazy = a[REFEREES[2]]
    lazy.register(f"12D3KooWtest{REFEREES[2]}", ROLE_REFEREE | ROLE_VERIFIER)
    solver_p, verifier_p = _party(runs, "honest"), _party(runs, "honest")  # two sides, each computing for itself
    fee = 5 * CREDIT
    job = a[POSTER].post_job(spec_cid, "train", STEPS, BOUNTY, STAKE, WINDOW, ops_per_leaf=n, verify_fee=fee)
    a[SOLVER].claim_job(job)
    transcript_cid, _ = build_transcript(store, solver_p.comp.run)
    k = commit_result(a[SOLVER], job, solver_p, transcript_cid).event("AuditDrawn")["audit_leaf"]
    assert a[POSTER].job(job)["audit_leaf"] == k and 0 <= k < STEPS
    attest_audit(a[CHALLENGER], job, verifier_p)
    lazy.attest(job, commitment(solver_p.log[k], lazy.address))
    assert a[POSTER].attesters(job) == [a[CHALLENGER].address, lazy.address]
    with pytest.raises(RevertError, match="challenge window open"):
        reveal_audit(a[SOLVER], job, solver_p)
    a[POSTER].increase_time(WINDOW + 1)
    reveal_audit(a[SOLVER], job, solver_p)
    reveal_audit(a[CHALLENGER], job, verifier_p)
    lazy.reveal(job, solver_p.log[k])
    assert lazy.attestation_of(job)["revealed"] and a[POSTER].audit(job)["revealed"] == 2
    before = _balances(chain)
    rc = a[POSTER].finalize(job)  # everyone revealed: no need to wait out the reveal period
    assert [(e["args"]["verifier"], e["args"]["amount"]) for e in rc.events if e["event"] == "VerifierPaid"] == [
        (a[CHALLENGER].address, fee)
    ]
    assert rc.event("JobFinalized")["solver_paid"] == BOUNTY - fee
    after = _balances(chain)
    assert after[CHALLENGER] - before[CHALLENGER] == fee and after[REFEREES[2]] == before[REFEREES[2]]
    assert after[SOLVER] - before[SOLVER] == BOUNTY - fee
    assert a[CHALLENGER].node()["locked"] == 0 and lazy.node()["locked"] == 0


def _dispute(chain, runs, solver_p: Party, challenger_p: Party, voters=REFEREES[:2]) -> tuple[int, dict]:
    """Post, commit, challenge and play until the chain waits for referees or a deadline."""
    a = chain.actors
    job = _post_and_commit(chain, runs, solver_p)
    challenge(a[CHALLENGER], job, challenger_p)
    play_rounds([ChainParty(a[SOLVER], job, solver_p, "solver"), ChainParty(a[CHALLENGER], job, challenger_p, "challenger")])
    verdicts = []
    if DISPUTE_PHASE[a[POSTER].dispute(job)["phase"]] == "vote":
        for r in voters:
            verdicts.append(referee_vote(a[r], job, solver_p, challenger_p, _referee(runs), runs[4]))
        a[POSTER].increase_time(FAST.vote_timeout + 1)
    else:
        a[POSTER].increase_time(FAST.round_timeout + 1)
    return job, {"verdicts": verdicts, "settled": a[POSTER].settle(job).event("DisputeSettled")}


def _release_votes(chain, job):
    for r in (*REFEREES, *SYBILS):
        if chain.actors[POSTER].vote_weight(job, chain.actors[r].address):
            chain.actors[POSTER].release_vote(job, chain.actors[r].address)


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_cheating_solver_is_slashed_whatever_it_tries(chain, runs, cheat):
    a = chain.actors
    before, stakes = _balances(chain), _stakes(chain)
    job, out = _dispute(chain, runs, _party(runs, cheat), _party(runs, "honest"))
    _release_votes(chain, job)
    assert out["settled"]["winner"] == a[CHALLENGER].address, (cheat, out)
    assert all(v["winner"] == "challenger" for v in out["verdicts"]), out
    after = _balances(chain)
    assert _stakes(chain)[SOLVER] == stakes[SOLVER] - STAKE  # the cheat is slashed ...
    assert after[CHALLENGER] - before[CHALLENGER] == STAKE  # ... to the challenger
    assert after[POSTER] == before[POSTER]  # the bounty comes back
    assert {i: s for i, s in _stakes(chain).items() if i != SOLVER} == {i: s for i, s in stakes.items() if i != SOLVER}
    assert all(lg.node()["locked"] == 0 for lg in a.values())
    assert JOB_STATUS[a[POSTER].job(job)["status"]] == "failed"
    a[SOLVER].stake(STAKE)  # top the stake up again for the next test on this chain


def test_an_honest_solver_beats_a_cheating_challenger(chain, runs):
    a = chain.actors
    before, stakes = _balances(chain), _stakes(chain)
    job, out = _dispute(chain, runs, _party(runs, "honest"), _party(runs, "bitflip@step=3,op=40"))
    _release_votes(chain, job)
    assert out["settled"]["winner"] == a[SOLVER].address
    assert [v["referee"] for v in out["verdicts"]] == ["op", "op"]
    d = a[POSTER].dispute(job)
    assert (d["disputed_step"] + 1, d["disputed_op"]) == (3, 40)  # the step and op the cheat flipped a bit in
    after = _balances(chain)
    assert _stakes(chain)[CHALLENGER] == stakes[CHALLENGER] - STAKE
    assert after[SOLVER] - before[SOLVER] == STAKE + BOUNTY and before[POSTER] - after[POSTER] == BOUNTY
    a[CHALLENGER].stake(STAKE)


def test_sybil_referees_buy_nothing(chain, runs):
    """The cheat's two throwaway referee accounts vote for it against one honest referee: stake,
    not head count, decides, and the throwaways lose what they voted with."""
    a = chain.actors
    before, stakes = _balances(chain), _stakes(chain)
    job = _post_and_commit(chain, runs, _party(runs, "bitflip@step=3,op=40"))
    challenge(a[CHALLENGER], job, _party(runs, "honest"))
    solver_p, challenger_p = _party(runs, "bitflip@step=3,op=40"), _party(runs, "honest")
    play_rounds([ChainParty(a[SOLVER], job, solver_p, "solver"), ChainParty(a[CHALLENGER], job, challenger_p, "challenger")])
    for s in SYBILS:
        a[s].vote(job, True)
    assert referee_vote(a[REFEREES[0]], job, solver_p, challenger_p, _referee(runs), runs[4])["winner"] == "challenger"
    a[POSTER].increase_time(FAST.vote_timeout + 1)
    assert a[POSTER].settle(job).event("DisputeSettled")["winner"] == a[CHALLENGER].address
    _release_votes(chain, job)
    after, now = _balances(chain), _stakes(chain)
    for s in SYBILS:
        assert now[s] == 0
    assert now[SOLVER] == stakes[SOLVER] - STAKE
    assert after[CHALLENGER] - before[CHALLENGER] == STAKE + 2 * FAST.referee_min_stake
    assert now[REFEREES[0]] == stakes[REFEREES[0]] and a[REFEREES[0]].node()["locked"] == 0
    a[SOLVER].stake(STAKE)
    for s in SYBILS:
        a[s].stake(FAST.referee_min_stake)


def test_no_self_challenge_and_no_challenge_without_stake(chain, runs):
    a = chain.actors
    with pytest.raises(RevertError, match="stake below minimum"):
        a[POSTER].post_job(runs[3], "train", STEPS, BOUNTY, 0, WINDOW, ops_per_leaf=runs[4])
    job = _post_and_commit(chain, runs, _party(runs, "honest"))
    a[POSTER].register("12D3KooWposter", ROLE_VERIFIER)
    a[POSTER].stake(STAKE)
    cheat = _party(runs, "lazy@step=3")
    with pytest.raises(RevertError, match="poster cannot challenge"):
        challenge(a[POSTER], job, cheat)
    with pytest.raises(RevertError, match="free stake"):
        challenge(a[NO_STAKE], job, cheat)
    # a garbage tree ending in the honest last leaf: a different root, the same (correct) result
    garbage = ["22" * 32] * (STEPS - 1) + [_party(runs, "honest").log[-1]]
    with pytest.raises(RevertError, match="results agree"):
        a[CHALLENGER].challenge(job, merkle.merkle_root(garbage), garbage[-1], merkle.siblings(merkle.proof(garbage, STEPS - 1)))
    a[POSTER].increase_time(WINDOW + 1)
    a[POSTER].finalize(job)
    a[POSTER].request_unbond(STAKE)


def test_a_party_that_stops_answering_loses_by_deadline(chain, runs):
    a = chain.actors
    solver_p, challenger_p = _party(runs, "bitflip@step=3,op=40"), _party(runs, "honest")
    stakes = _stakes(chain)
    job = _post_and_commit(chain, runs, solver_p)
    challenge(a[CHALLENGER], job, challenger_p)
    challenger = ChainParty(a[CHALLENGER], job, challenger_p, "challenger")
    assert challenger.act() == f"step {(STEPS - 1) // 2}"  # the challenger answers; the solver goes quiet
    with pytest.raises(RevertError, match="nothing to settle"):
        a[POSTER].settle(job)
    a[POSTER].increase_time(FAST.round_timeout + 1)
    rc = a[POSTER].settle(job)
    ev = rc.event("DisputeSettled")
    assert ev["winner"] == a[CHALLENGER].address and ev["reason"] == "deadline"
    assert _stakes(chain)[SOLVER] == stakes[SOLVER] - STAKE
    a[SOLVER].stake(STAKE)


@pytest.mark.parametrize("kind", ["infer", "eval"])
def test_inference_and_eval_disputes_are_the_same_game_on_chain(chain, runs, tmp_path, kind):
    """One game: an inference job (a token reported other than the one sampled) and an eval job
    (a bit flipped in a batch's forward) played on the same contract as training."""
    from bitswarm.models.generate import load
    from bitswarm.verify import evaluation, inference

    a = chain.actors
    store, spec, _, spec_cid, _ = runs
    if kind == "infer":
        cid = spec.model
        job = {"model": cid, "prompt_ids": [1, 30, 40, 50, 7], "seed": 3, "request_id": 1, "temperature": 0.8,
               "top_p": 0.9, "max_new_tokens": 6}
        make = lambda: load(store, cid)[0]  # noqa: E731
        inference.run(make(), job, tmp_path / "honest")
        inference.run(make(), job, tmp_path / "cheat", Adversary.parse("token@step=4"))
        comp = lambda d: inference.InferRecord(tmp_path / d, make)  # noqa: E731
        referee, n, leaves = inference.InferReferee(make, job), inference.ops_per_token(make(), job), 6
    else:
        evaluation.run(prepare(store, spec), spec.model_dump(mode="json"), STEPS, tmp_path / "honest")
        evaluation.run(prepare(store, spec), spec.model_dump(mode="json"), STEPS, tmp_path / "cheat",
                       Adversary.parse("bitflip@step=2,op=1"))
        comp = lambda d: evaluation.EvalRecord(tmp_path / d, prepare(store, spec))  # noqa: E731
        referee, n, leaves = evaluation.EvalReferee(prepare(store, spec)), evaluation.ops_per_batch(prepare(store, spec)), STEPS
    solver_p, challenger_p = Party("cheat", comp("cheat"), n), Party("honest", comp("honest"), n)
    stakes = _stakes(chain)
    job_id = a[POSTER].post_job(spec_cid, kind, leaves, BOUNTY, STAKE, WINDOW, ops_per_leaf=n)
    a[SOLVER].claim_job(job_id)
    commit_result(a[SOLVER], job_id, solver_p, spec_cid)
    challenge(a[CHALLENGER], job_id, challenger_p)
    play_rounds([ChainParty(a[SOLVER], job_id, solver_p, "solver"),
                 ChainParty(a[CHALLENGER], job_id, challenger_p, "challenger")])
    verdict = referee_vote(a[REFEREES[0]], job_id, solver_p, challenger_p, referee, n)
    assert verdict["winner"] == "challenger", verdict
    a[POSTER].increase_time(FAST.vote_timeout + 1)
    assert a[POSTER].settle(job_id).event("DisputeSettled")["winner"] == a[CHALLENGER].address
    _release_votes(chain, job_id)
    assert _stakes(chain)[SOLVER] == stakes[SOLVER] - STAKE
    a[SOLVER].stake(STAKE)
