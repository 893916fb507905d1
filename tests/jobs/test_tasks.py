"""Swarm tasks: regeneration from (task, seed, index), deterministic sampling, hostile-text-proof rewards."""

from __future__ import annotations

import builtins
import decimal
import math
import random
import socket
import time

import pytest

from bitswarm.jobs.tasks import (
    DEFAULT_TASKS,
    MAX_SCAN_CHARS,
    PRESETS,
    TASKS,
    TINY_TASK,
    TaskError,
    TaskMix,
    TaskRef,
    extract_answer,
    resolve_tasks,
    score,
)

ALL = DEFAULT_TASKS + (TINY_TASK, "tiny_count")
SEED = 2024
# Index 1 of seed 2024 is a propositional_logic entry whose example_answer is the generator's
# fallback (a bare variable, scoring 0.05), so the checks use indices where it is a real conclusion.
INDICES = (0, 2, 3)


@pytest.fixture(autouse=True, scope="module")
def no_network():
    """reasoning-gym must generate everything locally: any connection attempt fails the test.
    Module-scoped autouse, so it is in place before the module-scoped mix builds any dataset."""
    def refuse(*a, **k):
        raise AssertionError("swarm tasks tried to use the network")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def mix() -> TaskMix:
    return TaskMix(ALL)


def wrap(a: str) -> str:
    return f"Some reasoning first.\n<answer>{a}</answer>"


def garbage() -> list[str]:
    rng = random.Random(7)
    raw = bytes(rng.randrange(256) for _ in range(4096))
    return [
        "",
        raw.decode("utf-8", errors="replace"),
        raw.decode("latin-1"),
        "x" * (1 << 20),
        "<answer>" + "1" * (1 << 20) + "</answer>",       # 1 MB inside tags
        "<answer>" * 10_000,
        "</answer>" * 10_000,
        "</answer>junk<answer>",
        "<answer><answer></answer></answer>",
        "<answer> \n\t </answer>",
        "<answer>" * 5000 + "</answer>" * 5000,
        "<ANSWER>1</ANSWER>",
    ]


def hostile_answers() -> list[str]:
    return [
        "\x00\ud800\uffff" * 10, "9" * 4000, "[" * 4000, "(" * 250 + ")" * 250, "¬" * 255 + "P",
        "P∧" * 128, "¬" * 4000 + "P", "1e999999999", "-" * 4000, "\\frac{" * 500, "1/0", "NaN", "Infinity",
        "<answer>1</answer>", "[[0, 1], [1, 2]]", "🙂" * 1000,
    ]


@pytest.mark.parametrize("name", ALL)
def test_entries_regenerate_identically(mix, name):
    fresh = TaskMix(ALL)
    for i in INDICES:
        ref = TaskRef(name, SEED, i)
        e = mix.entry(ref)
        assert e == mix.entry(ref) == fresh.entry(ref)
        assert mix.prompt(ref) == fresh.prompt(ref)
    assert mix.entry(TaskRef(name, SEED, 0)) != mix.entry(TaskRef(name, SEED + 1, 0))


@pytest.mark.parametrize("name", ALL)
def test_correct_answer_scores_one_and_wrong_less(mix, name):
    for i in INDICES:
        ref = TaskRef(name, SEED, i)
        a = mix.reference_answer(ref)
        assert score(ref, wrap(a), mix) == 1.0
        assert score(ref, wrap(f"  {a}\n"), mix) == 1.0           # stripped
        assert score(ref, a, mix) == 0.0                          # no tags, no reward
        assert score(ref, f"<answer>0</answer> {wrap(a)}", mix) == 1.0  # the last answer counts
        assert 0.0 <= score(ref, wrap("x" + a), mix) < 1.0


@pytest.mark.parametrize("name", ALL)
def test_garbage_scores_zero_and_hostile_answers_never_raise(mix, name):
    ref = TaskRef(name, SEED, 0)
    for g in garbage():
        assert score(ref, g, mix) == 0.0, g[:40]
    for h in hostile_answers():
        if extract_answer(wrap(h)) == mix.reference_answer(ref):
            continue  # a short "hostile" answer can be the right one (tiny_count's is often "1")
        t = time.perf_counter()
        s = score(ref, wrap(h), mix)
        assert 0.0 <= s < 1.0 and isinstance(s, float), h[:40]
        assert time.perf_counter() - t < 1.0, h[:40]


def test_prompt_asks_for_answer_tags(mix):
    ref = TaskRef("basic_arithmetic", SEED, 0)
    p = mix.prompt(ref)
    assert p.startswith(mix.entry(ref)["question"].rstrip()) and "<answer></answer>" in p


def test_tiny_task_is_one_digit_sums(mix):
    assert PRESETS["tiny"] == (TINY_TASK,) and TASKS[TINY_TASK].dataset == "basic_arithmetic"
    for i in range(50):
        e = mix.entry(TaskRef(TINY_TASK, SEED, i))
        a, b = e["question"].removeprefix("Calculate ").removesuffix(".").split(" + ")
        assert 0 <= int(a) <= 10 and 0 <= int(b) <= 10 and e["answer"] == str(int(a) + int(b))


def test_propositional_logic_has_no_answer_and_scores_by_premises(mix):
    ref = TaskRef("propositional_logic", SEED, 0)
    e = mix.entry(ref)
    assert e["answer"] is None and mix.reference_answer(ref) == e["metadata"]["example_answer"]
    assert score(ref, wrap("Z"), mix) == 0.0                      # not one of its variables


def test_binary_matrix_scorer_never_evals_code(mix):
    ref = TaskRef("binary_matrix", SEED, 0)
    code = "[[0]] if setattr(__import__('builtins'), '_bitswarm_pwned', 1) else 0"
    assert score(ref, wrap(code), mix) == 0.0
    assert not hasattr(builtins, "_bitswarm_pwned")
    # A Python-literal matrix is still the dataset's 0.1.
    solution = mix.entry(ref)["metadata"]["solution"]
    assert score(ref, wrap(repr(solution)), mix) == 0.1


def test_generation_leaves_decimal_context_and_stdout_alone(mix, capsys):
    prec = decimal.getcontext().prec
    for name in ("decimal_arithmetic", "bf"):
        ref = TaskRef(name, SEED, 0)
        score(ref, wrap(mix.reference_answer(ref)), mix)
    assert decimal.getcontext().prec == prec
    assert capsys.readouterr().out == ""


def test_scorer_failures_and_odd_results_become_valid_rewards(monkeypatch):
    m = TaskMix(["bf"])
    ref = TaskRef("bf", SEED, 0)
    ds = m._dataset("bf", SEED)
    for result, want in [(RecursionError(), 0.0), (math.nan, 0.0), (2, 1.0), (-1, 0.0)]:
        def fake(answer, entry, result=result):
            if isinstance(result, Exception):
                raise result
            return result
        monkeypatch.setattr(ds, "score_answer", fake)
        assert score(ref, wrap("x"), m) == want


def test_bad_refs_and_completions_raise(mix):
    with pytest.raises(TaskError, match="not in this mix"):
        TaskMix(["bf"]).entry(TaskRef("arc_1d", SEED, 0))
    with pytest.raises(TaskError, match="out of range"):
        mix.entry(TaskRef("bf", SEED, mix.size))
    for bad in [("bf", -1, 0), ("bf", 0, -1), ("bf", True, 0), (3, 0, 0), ("bf", 0, 1.5)]:
        with pytest.raises(TaskError):
            TaskRef(*bad)
    with pytest.raises(TypeError):
        score(TaskRef("bf", SEED, 0), b"<answer>x</answer>", mix)


def test_extract_answer():
    assert extract_answer("<answer> 42 </answer>") == "42"
    assert extract_answer("<answer>1</answer> then <answer>2</answer>") == "2"
    assert extract_answer("<answer>1</answer> then <answer>2") == "1"          # truncated last one
    assert extract_answer("<answer><answer>x</answer></answer>") == "x"
    assert extract_answer("<answer>a\nb</answer>") == "a\nb"
    assert extract_answer("<answer></answer>") == ""
    for none in ["", "42", "</answer>", "<answer>", "</answer><answer>", "<Answer>1</Answer>"]:
        assert extract_answer(none) is None
    big = "<answer>early</answer>" + "x" * MAX_SCAN_CHARS                     # only the tail is read
    assert extract_answer(big) is None
    assert extract_answer(big + "<answer>late</answer>") == "late"


def test_sample_is_deterministic_and_keyed(mix):
    refs = mix.sample(1, 5, "peerA", 32)
    assert refs == mix.sample(1, 5, "peerA", 32) == TaskMix(ALL).sample(1, 5, "peerA", 32)
    assert mix.sample(1, 5, "peerA", 8) == refs[:8] and mix.sample(1, 5, "peerA", 0) == []
    for seed, rnd, peer in [(2, 5, "peerA"), (1, 6, "peerA"), (1, 5, "peerB")]:
        assert mix.sample(seed, rnd, peer, 32) != refs
    assert all(r.dataset in ALL and r.seed == 1 and 0 <= r.index < mix.size for r in refs)
    assert len({r.dataset for r in mix.sample(0, 0, "p", 400)}) == len(ALL)
    with pytest.raises(TaskError):
        mix.sample(-1, 0, "p", 1)
    with pytest.raises(TaskError):
        mix.sample(0, 0, "p", -1)


def test_sample_follows_weights():
    m = TaskMix(["bf", "arc_1d", "tiny_sum"], weights=[3, 0, 1], size=100)
    names = [r.dataset for r in m.sample(0, 0, "p", 4000)]
    assert "arc_1d" not in names
    assert math.isclose(names.count("bf") / len(names), 0.75, abs_tol=0.03)
    assert m.weights == (0.75, 0.0, 0.25)


def test_unknown_names_list_the_allowed_ones():
    for make in (lambda: TaskMix(["arc_1d", "nope"]), lambda: resolve_tasks("nope,bf"), lambda: TaskMix([])):
        with pytest.raises(TaskError) as e:
            make()
        assert all(n in str(e.value) for n in ALL) and "tiny" in str(e.value)
    assert isinstance(TaskError("x"), ValueError)


def test_resolve_tasks():
    assert resolve_tasks("tiny") == (TINY_TASK,)
    assert resolve_tasks("default") == DEFAULT_TASKS
    assert resolve_tasks(" bf, arc_1d ") == ("bf", "arc_1d")
    assert resolve_tasks(["bf"]) == ("bf",)


@pytest.mark.parametrize(
    "weights", [[1], [1, 2, 3], [-1, 1], [0, 0], [math.nan, 1], [math.inf, 1], [True, 1], ["1", 1]])
def test_weights_validation(weights):
    with pytest.raises(TaskError):
        TaskMix(["bf", "arc_1d"], weights=weights)


def test_mix_validation():
    bad = [{"size": 0}, {"size": 1.5}, {"configs": {"arc_1d": {}}}, {"configs": {"bf": {"seed": 1}}},
           {"configs": {"bf": {"difficulty": 9}}}, {"configs": {"bf": {"no_such_field": 1}}}]
    for kwargs in bad:
        with pytest.raises(TaskError):
            TaskMix(["bf"], **kwargs)
    with pytest.raises(TaskError):
        TaskMix(["bf", "bf"])
    with pytest.raises(TaskError):
        TaskMix("bf")
    m = TaskMix(["bf"], configs={"bf": {"difficulty": 2}})
    ref = TaskRef("bf", SEED, 0)
    assert m.entry(ref) != TaskMix(["bf"]).entry(ref)
    assert score(ref, wrap(m.reference_answer(ref)), m) == 1.0


def test_dataset_cache_is_bounded():
    from bitswarm.jobs import tasks

    m = TaskMix(["tiny_sum"], size=10)
    for seed in range(3 * tasks._CACHE_SIZE):
        m.entry(TaskRef("tiny_sum", seed, 0))
    assert len(m._cache) == tasks._CACHE_SIZE
