"""Eval jobs on the market: a model scored on a reasoning-gym task set (the "eval" kind of market.KIND_OF).

The job document fixes everything: the spec's tasks, weights, seed and item count name the
items (`refs`: TaskMix(tasks, weights, size=MIX_SIZE).sample(seed, round 0, peer "eval",
items)), and `check` fills in each item's prompt token ids (the chat template applied) so that
nothing depends on the solver's tokenizer. The solver runs verify.task_eval (every item
max_new_tokens long, no early stop, request id = item index, sampling seed = the spec's seed).

What the leaves commit: the generated tokens (with the hash of each logits row), one chain over
all items. What they do not commit: the scores. A score is a deterministic function of the
committed tokens: decode the item's tokens with the model's tokenizer (skipping special tokens),
extract_answer, and the task's own scorer (tasks.score, reasoning-gym pinned in pyproject). The
result blob is the task-eval record plus "scores" (per item its ref, completion, answer and
score; the mean, math.fsum over items / items), and a verifier recomputes every score from the
tokens and refuses to attest a result whose reported scores differ, with the reason in Audit.why.
That refusal is not a dispute: the token leaves agree, so the game has nothing to bisect (on
chain a challenge must name a different last leaf); the verifier simply does not attest, and
whoever reads the result must recompute the scores the same way rather than trust them.
"""

from __future__ import annotations

import json
import math
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bitswarm.jobs import market, tasks
from bitswarm.repro.hashing import merkle_root
from bitswarm.store import BlobStore
from bitswarm.store.cid import is_cid
from bitswarm.verify import attest, task_eval
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.game import Party, honest

MIX_SIZE = 10_000  # entries per task dataset the refs index into
SAMPLE_PEER = "eval"  # the TaskMix.sample peer name the items are drawn for (round 0)
RESULT = "result.json"


class TaskRefSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # documents arrive from the network: no coercion
    dataset: str = Field(description="task name (a key of jobs.tasks.TASKS)")
    seed: int = Field(ge=0, lt=2**64, description="reasoning-gym dataset seed")
    index: int = Field(ge=0, lt=MIX_SIZE, description="entry index in that dataset")


class EvalSpec(BaseModel):
    """An eval job: a model's completions of `items` task prompts, every token committed, scored by
    the tasks' own scorers."""

    model_config = ConfigDict(extra="forbid", strict=True)  # documents arrive from the network: no coercion
    model: str = Field(description="CID of a stored model")
    tasks: str = Field(description="a task preset (default, tiny) or comma-separated task names")
    weights: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
        None, description="sampling weight per task, non-negative, not all zero (default: equal)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the item draw and of sampling")
    items: int = Field(ge=1, le=1000, description="how many task entries to evaluate")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="tokens generated per item (no early stop)")
    temperature: float = Field(0.0, ge=0, le=100, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    refs: list[TaskRefSpec] | None = Field(None, description="the items' task entries (filled in when the job is made)")
    prompt_ids: list[list[int]] | None = Field(None, description="the items' prompt token ids, chat template "
                                                                 "applied (filled in when the job is made)")

    @field_validator("model")
    @classmethod
    def _cid(cls, v: str) -> str:
        if not is_cid(v):
            raise ValueError("must be a CID (64 hex digits)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "EvalSpec":
        names = tasks.resolve_tasks(self.tasks)
        if self.weights is not None and (len(self.weights) != len(names) or not any(self.weights)):
            raise ValueError(f"weights: one per task ({len(names)}), not all zero, are needed; got {self.weights}")
        for name, xs in (("refs", self.refs), ("prompt_ids", self.prompt_ids)):
            if xs is not None and len(xs) != self.items:
                raise ValueError(f"{name} holds {len(xs)} items, the job has {self.items}")
        if self.refs is not None and any(r.dataset not in names for r in self.refs):
            raise ValueError(f"refs name a task outside {', '.join(names)}")
        if self.prompt_ids is not None and any(not p or min(p) < 0 for p in self.prompt_ids):
            raise ValueError("every item's prompt_ids must be non-empty token ids")
        return self


@lru_cache(maxsize=8)
def _mix(names: tuple[str, ...], weights: tuple[float, ...] | None) -> tasks.TaskMix:
    return tasks.TaskMix(names, weights, size=MIX_SIZE)


def mix_of(spec: dict, weighted: bool = True) -> tasks.TaskMix:
    """The spec's task mix; unweighted for scoring, which regenerates entries from refs alone."""
    w = spec.get("weights") if weighted else None
    return _mix(tasks.resolve_tasks(spec["tasks"]), tuple(w) if w is not None else None)


def refs_of(spec: dict) -> list[tasks.TaskRef]:
    return [tasks.TaskRef(r["dataset"], r["seed"], r["index"]) for r in spec["refs"]]


def _check(store: BlobStore | None, spec) -> dict:
    try:
        s = EvalSpec.model_validate(spec)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "spec"
        raise market.MarketError(f"invalid eval job: {where}: {err['msg']}") from None
    if store is not None and (s.refs is None or s.prompt_ids is None):
        from bitswarm.models.generate import encode_prompt, load_tokenizer

        try:
            mix = mix_of(s.model_dump())
        except tasks.TaskError as e:
            raise market.MarketError(f"invalid eval job: {e}") from None
        refs = mix.sample(s.seed, 0, SAMPLE_PEER, s.items)
        tok = load_tokenizer(store, s.model)
        s.refs = [TaskRefSpec(dataset=r.dataset, seed=r.seed, index=r.index) for r in refs]
        s.prompt_ids = [encode_prompt(tok, mix.prompt(r), chat=True) for r in refs]
    if s.refs is None or s.prompt_ids is None:
        raise market.MarketError("an eval job document must carry its items' task refs and prompt token ids")
    return s.model_dump(mode="json")


def _job(doc: dict) -> dict:
    spec = doc["spec"]
    return {k: spec[k] for k in task_eval.JOB_KEYS}


def _plan(store: BlobStore, doc: dict) -> tuple[int, int]:
    job = _job(doc)
    return task_eval.num_leaves(job), task_eval.ops_per_token(market._model_factory(store, job["model"])(), job)


def scores(store: BlobStore, doc: dict, tokens: list[list[int]]) -> dict:
    """Each item's completion, answer and score, and the mean: a function of the tokens alone."""
    from bitswarm.models.generate import load_tokenizer

    tok, mix = load_tokenizer(store, doc["spec"]["model"]), mix_of(doc["spec"], weighted=False)
    items = []
    for ref, toks in zip(refs_of(doc["spec"]), tokens):
        text = tok.decode(toks, skip_special_tokens=True)
        items.append({"ref": {"dataset": ref.dataset, "seed": ref.seed, "index": ref.index}, "completion": text,
                      "answer": tasks.extract_answer(text), "score": tasks.score(ref, text, mix)})
    return {"items": items, "mean": math.fsum(i["score"] for i in items) / len(items)}


def _result(store: BlobStore, doc: dict, run: Path, label: str) -> str:
    """The result blob of the record in `run`: the record plus its scores, stored. Rewritten every
    time (a deterministic function of the record), so a crash mid-write leaves nothing to trust."""
    rec = task_eval.load(run)
    (run / RESULT).write_text(json.dumps({**rec, "scores": scores(store, doc, rec["tokens"])}, indent=1))
    return store.put_file(run / RESULT, label=label)


def _fresh_run(store: BlobStore, doc: dict, out: Path, adversary: str | None = None) -> None:
    """Generate the record in `out` unless a finished one is there (a cut-short one is redone)."""
    if (out / task_eval.FILE).exists():
        return
    if out.exists():
        shutil.rmtree(out)
    job = _job(doc)
    task_eval.run(market._model_factory(store, job["model"])(), job, out,
                  Adversary.parse(adversary) if adversary else None)


def _solve(store: BlobStore, doc: dict, out: Path, adversary: str | None = None, on_step=None) -> market.Solved:
    out = Path(out)
    _fresh_run(store, doc, out, adversary)
    cid = _result(store, doc, out, "eval result")
    comp = task_eval.TaskEvalRecord(out, market._model_factory(store, doc["spec"]["model"]))
    n = _plan(store, doc)[1]
    return market.Solved(Party("solver", comp, n, comp.adversary.tactic() if comp.adversary else honest), cid, [cid])


def _record(store: BlobStore, doc: dict, result_cid: str, fetch: market.Fetch, run: Path) -> dict | str:
    """The solver's result, its record written where TaskEvalRecord reads it, or why it cannot be used."""
    return market.fetch_record(store, result_cid, fetch, run, task_eval, _job(doc), "eval result")


def _score_mismatch(store: BlobStore, doc: dict, rec: dict) -> str | None:
    """Why the reported scores are not those of the committed tokens, or None."""
    reported, truth = rec.get("scores"), scores(store, doc, rec["tokens"])
    if not isinstance(reported, dict) or not isinstance(reported.get("items"), list):
        return "the result reports no scores"
    if len(reported["items"]) != len(truth["items"]):
        return f"the result scores {len(reported['items'])} items, the job has {len(truth['items'])}"
    for i, (got, want) in enumerate(zip(reported["items"], truth["items"])):
        if got == want:
            continue
        if not isinstance(got, dict):
            return f"item {i}'s reported score is not an object"
        key = next((k for k in want if got.get(k) != want[k]), None)
        if key is None:
            return f"item {i}'s reported score holds fields the job does not define ({sorted(set(got) - set(want))})"
        return f"item {i}'s reported {key} {got.get(key)!r} is not what its committed tokens give ({want[key]!r})"
    if reported.get("mean") != truth["mean"]:
        return f"the reported mean score {reported.get('mean')!r} is not the items' mean ({truth['mean']!r})"
    return None


def _audit(store: BlobStore, doc: dict, result_cid: str, fetch: market.Fetch, out: Path, *, root: str,
           last_leaf: str, audit_leaf: int | None, samples: int, seed: int, lazy: bool = False) -> market.Audit:
    """Re-execute sampled leaves (and the audit leaf): a wrong token is challenged with the
    verifier's own honest record. Then recompute every score from the tokens: a result whose
    reported scores differ fails without an attestation (and without a challenge: its leaves agree)."""
    job = _job(doc)
    run = Path(out) / "solver"
    rec = _record(store, doc, result_cid, fetch, run)
    if isinstance(rec, str):
        return market.Audit(False, [], 0, why=rec)
    commits = rec["commitments"]
    if merkle_root(commits) != root or commits[-1] != last_leaf:
        return market.Audit(False, [], 0, why="the result is not what the solver committed on chain")
    if lazy:
        return market.Audit(True, [], attestation=commits[audit_leaf] if audit_leaf is not None else None)
    factory = market._model_factory(store, job["model"])
    comp = task_eval.TaskEvalRecord(run, factory)
    party = Party("verifier", comp, _plan(store, doc)[1])
    targets = market.audit_targets(len(commits), samples, seed, audit_leaf)
    checked, attestation = [], None
    for k in targets:
        checked.append(k)
        if comp.trace(k).after != commits[k]:
            own = Path(out) / "verifier"
            _fresh_run(store, doc, own)
            cid = _result(store, doc, own, "eval result (challenger)")
            item, j = divmod(k, job["max_new_tokens"])
            return market.Audit(False, checked, k, party=Party("challenger", task_eval.TaskEvalRecord(own, factory),
                                                                party.n),
                                serve=[cid], why=f"token {j + 1} of item {item} does not reproduce")
        if k == audit_leaf:
            attestation = attest.attestation(party, k)
    why = _score_mismatch(store, doc, rec)
    if why:
        return market.Audit(False, checked, why=f"{why}; the tokens reproduce, so this is not disputable: "
                                                "not attesting")
    return market.Audit(True, checked, attestation=attestation)


def _referee(store: BlobStore, doc: dict, result_cid: str, fetch: market.Fetch, out: Path, k: int):
    job = _job(doc)
    run = Path(out) / "solver"
    rec = _record(store, doc, result_cid, fetch, run)
    if isinstance(rec, str):
        raise market.MarketError(f"the solver's result cannot be used: {rec}")
    factory = market._model_factory(store, job["model"])
    side = Party("solver", task_eval.TaskEvalRecord(run, factory), _plan(store, doc)[1])
    return task_eval.TaskEvalReferee(factory, job), {"solver": side, "challenger": side}


KIND = market.Kind(_check, _plan, _solve, _audit, _referee,
                   lambda store, doc: task_eval.TaskEvalReferee(market._model_factory(store, doc["spec"]["model"]), _job(doc)))
market.KIND_OF["eval"] = KIND
