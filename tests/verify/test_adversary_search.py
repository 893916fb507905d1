"""An adversary search over the local dispute game: the honest side wins every game.

The strategy space: a cheat's computation (a faulty training run: a flipped bit at any step and
op, other data, skipped or lazy steps, a wrong learning rate, a trace that lies about its own
state — or an honest computation), the side it plays (solver or challenger), and at every query
of the game an action: answer honestly, lie, forge a proof, answer for another index, go silent;
at the trace commitment: honest, one op short, one op long, a forged root, silent. Inference
games draw the same tactics against a cheat that flips a bit or reports another token, eval games
against a cheat that flips a bit of a batch's forward or of its loss sum.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import prepare, run_training
from bitswarm.models.generate import load
from bitswarm.verify import evaluation, inference
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.dispute import TrainReferee, TrainRun
from bitswarm.verify.game import TACTICS, TRACE_TACTICS, Party, honest, play
from bitswarm.verify.inference import InferRecord, InferReferee, ops_per_token
from bitswarm.verify.trace import count_ops

STEPS = 5
CHEATS = ["bitflip@step=1,op=0", "bitflip@step=2,op=40", "bitflip@step=4,op=77", "bitflip@step=5,op={last}",
          "data@step=3", "skip@step=2", "lr@step=5", "lazy@step=3", "tracelie@step=1", None]
INFER_CHEATS = ["bitflip@step=2,op=5", "bitflip@step=5,op=30", "token@step=3", None]
JOB = {"prompt_ids": [1, 30, 40, 50, 7], "seed": 2, "request_id": 4, "temperature": 0.9, "top_p": 0.95, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def training(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=STEPS).model_copy(update={"seq_len": 12, "global_batch": 2, "checkpoint_every": 2})
    root = tmp_path_factory.mktemp("search")
    n = count_ops(prepare(store, spec))
    runs = {}
    for name in CHEATS:
        name = name.format(last=n - 1) if name else None
        out = root / (name or "honest").replace("@", "-").replace(",", "-").replace("=", "")
        run_training(store, spec, out, adversary=name)
        # One computation per run, shared by every game: its traces are computed once.
        runs[name] = TrainRun(out, prepare(store, spec), Adversary.parse(name) if name else None)
    return {"runs": runs, "n": n, "referee": TrainReferee(prepare(store, spec)), "cheats": list(runs)}


@pytest.fixture(scope="module")
def inferring(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    root = tmp_path_factory.mktemp("search-infer")
    make = lambda: load(store, cid)[0]  # noqa: E731
    job = {"model": cid, **JOB}
    recs = {}
    for name in INFER_CHEATS:
        out = root / (name or "honest").replace("@", "-").replace(",", "-").replace("=", "")
        inference.run(make(), job, out, Adversary.parse(name) if name else None)
        recs[name] = InferRecord(out, make)
    return {"runs": recs, "n": ops_per_token(make(), job), "referee": InferReferee(make, job),
            "cheats": list(recs)}


@pytest.fixture(scope="module")
def evaluating(tiny_model_store, tmp_path_factory):
    store, cid = tiny_model_store
    spec = example_spec(cid, steps=STEPS).model_copy(update={"seq_len": 12, "global_batch": 2})
    root = tmp_path_factory.mktemp("search-eval")
    n = evaluation.ops_per_batch(prepare(store, spec))
    recs = {}
    for name in ["bitflip@step=1,op=0", "bitflip@step=3,op=20", f"bitflip@step=5,op={n - 1}", None]:
        out = root / (name or "honest").replace("@", "-").replace(",", "-").replace("=", "")
        evaluation.run(prepare(store, spec), spec.model_dump(mode="json"), STEPS, out, Adversary.parse(name) if name else None)
        recs[name] = evaluation.EvalRecord(out, prepare(store, spec))
    return {"runs": recs, "n": n, "referee": evaluation.EvalReferee(prepare(store, spec)), "cheats": list(recs)}


def scripted(actions: list[str], trace_action: str):
    """A tactic that plays the drawn actions in order, then answers honestly."""
    queue = list(actions)

    def tactic(kind: str, _index: int) -> str:
        if kind == "trace":
            return trace_action
        return queue.pop(0) if queue else "honest"

    return tactic


@st.composite
def cheater(draw, cheats):
    # Honest answers weigh more, so that games reach the trace, the op bisection and the referee
    # as often as they end early on a bad proof.
    return {
        "cheat": draw(st.sampled_from(cheats)),
        "side": draw(st.sampled_from(["solver", "challenger"])),
        "actions": draw(st.lists(st.sampled_from(["honest"] * 12 + list(TACTICS)), max_size=24)),
        "trace": draw(st.sampled_from(["honest"] * 4 + list(TRACE_TACTICS))),
    }


def play_one(world, c) -> None:
    n = world["n"]
    honest_p = Party("honest", world["runs"][None], n, honest)
    cheat_p = Party("cheat", world["runs"][c["cheat"]], n, scripted(c["actions"], c["trace"]))
    solver, challenger = (cheat_p, honest_p) if c["side"] == "solver" else (honest_p, cheat_p)
    out = play(solver, challenger, world["referee"], n)
    if out.agree:  # nothing to dispute: the cheat's computation committed exactly the honest result
        assert cheat_p.root == honest_p.root
        return
    assert out.winner == "honest", (c, out)
    assert out.rounds <= out.round_bound


def _games(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_games(120)
@given(st.data())
def test_training_search(training, data):
    play_one(training, data.draw(cheater(training["cheats"])))


@_games(40)
@given(st.data())
def test_inference_search(inferring, data):
    play_one(inferring, data.draw(cheater(inferring["cheats"])))


@_games(40)
@given(st.data())
def test_eval_search(evaluating, data):
    play_one(evaluating, data.draw(cheater(evaluating["cheats"])))


@pytest.mark.slow
@_games(500)
@given(st.data())
def test_eval_search_long(evaluating, data):
    play_one(evaluating, data.draw(cheater(evaluating["cheats"])))


@pytest.mark.slow
@_games(2000)
@given(st.data())
def test_training_search_long(training, data):
    play_one(training, data.draw(cheater(training["cheats"])))


@pytest.mark.slow
@_games(500)
@given(st.data())
def test_inference_search_long(inferring, data):
    play_one(inferring, data.draw(cheater(inferring["cheats"])))
