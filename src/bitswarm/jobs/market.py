"""Jobs on the market: what a job document is, and each role's work on one, per kind.

A job document is the blob whose CID goes on chain as the job's spec_cid: canonical JSON
{"version": 1, "kind": "train" | "infer" | "eval", "spec": {...}, "model_bytes": N}. `spec` is
what the kind's local command takes (a training spec for train; the inference request for infer;
for eval a model scored on a reasoning-gym task set, jobs.eval_job). `model_bytes` lets a solver
decline a job too large for its memory before fetching anything; it is checked against the
fetched model.

Every kind gives the same four things, so the node's roles never branch on kind:
  plan(store, doc)            -> (num_leaves, ops_per_leaf): what the poster posts and a solver checks
  solve(store, doc, out, adv) -> Solved: the solver's Party, the result's CID, the CIDs to serve
  audit(store, doc, result_cid, fetch, out, audit_leaf, samples) -> Audit: the verifier's check of a
      committed result by re-executing sampled leaves (and the audit leaf, whose trace root is
      the verifier's attestation), and, on a mismatch, its own honest Party to challenge with
  referee(store, doc, result_cid, fetch, out) -> (Referee, parties) for ruling on a dispute
Inputs are fetched through `fetch(cid)`, which the node backs with the blob exchange.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bitswarm.errors import BitswarmError
from bitswarm.jobs.spec import SpecError, parse_spec
from bitswarm.jobs.train_job import prepare, run_training
from bitswarm.repro import train as repro_train
from bitswarm.repro.hashing import merkle_root
from bitswarm.store import BlobStore
from bitswarm.store.cid import is_cid
from bitswarm.verify import attest, inference
from bitswarm.verify import transcript as transcripts
from bitswarm.verify.adversary import Adversary
from bitswarm.verify.dispute import TrainReferee, TrainRun
from bitswarm.verify.game import Party, Referee, honest
from bitswarm.verify.replay import replay
from bitswarm.verify.trace import count_ops

DOC_VERSION = 1
KINDS = ("train", "infer", "eval")

Fetch = Callable[[str], None]  # make sure a CID (and a directory blob's contents) is in the local store


class MarketError(BitswarmError):
    """A job document or result that cannot be used; says which and why."""


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def make_doc(store: BlobStore, kind: str, spec: dict) -> dict:
    """A job document for `spec`, checked as its kind's local command would check it."""
    if kind not in KINDS:
        raise MarketError(f"job kind must be one of {', '.join(KINDS)}, not {kind!r}")
    checked = KIND_OF[kind].check(store, spec)
    return {"version": DOC_VERSION, "kind": kind, "spec": checked, "model_bytes": store.size(checked["model"])}


def store_doc(store: BlobStore, doc: dict) -> str:
    return store.put_bytes(canonical(doc), label=f"job {doc['kind']}")


def load_doc(store: BlobStore, cid: str) -> dict:
    """Read and check a job document (the spec_cid of a job on chain)."""
    try:
        doc = json.loads(store.read_bytes(cid))
    except ValueError as e:
        raise MarketError(f"job document {cid} is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != DOC_VERSION or doc.get("kind") not in KINDS:
        raise MarketError(f"{cid} is not a version-{DOC_VERSION} job document")
    try:
        KIND_OF[doc["kind"]].check(None, doc.get("spec"))
    except MarketError as e:
        raise MarketError(f"job document {cid}: {e}") from None
    if not isinstance(doc.get("model_bytes"), int) or doc["model_bytes"] < 0:
        raise MarketError(f"job document {cid}: model_bytes must be a non-negative integer")
    return doc


def inputs(doc: dict) -> list[str]:
    """The CIDs a job reads besides its document (model, dataset, optimizer state)."""
    spec = doc["spec"]
    cids = [spec["model"]]
    if spec.get("dataset", {}).get("kind") in ("cid", "tensors"):
        cids.append(spec["dataset"]["cid"])
    if spec.get("optimizer_state"):
        cids.append(spec["optimizer_state"])
    return cids


_OPS: dict[bytes, int] = {}  # a document's ops per leaf: a pure function of it, counted once per process


def _train_ops(store: BlobStore, doc: dict, prepared=None) -> int:
    key = canonical(doc)
    if key not in _OPS:
        _OPS[key] = count_ops(prepared or prepare(store, parse_spec(doc["spec"])))
    return _OPS[key]


def _train_plan(store: BlobStore, doc: dict) -> tuple[int, int]:
    """One leaf per step, each step's traced op count."""
    return parse_spec(doc["spec"]).steps, _train_ops(store, doc)


@dataclass
class Solved:
    party: Party
    result_cid: str
    serve: list[str] = field(default_factory=list)


def _train_solve(store: BlobStore, doc: dict, out: Path, adversary: str | None = None,
                 on_step: Callable[[dict], None] | None = None) -> Solved:
    """Train in `out` (resuming whatever a crash left there, with the same adversary) and store
    the transcript and checkpoints."""
    spec = parse_spec(doc["spec"])
    out = Path(out)
    resume = (out / "spec.json").exists()
    done = resume and len(repro_train.read_step_log(out)) == spec.steps and (out / "result.json").exists()
    if not done:
        run_training(store, spec, out, resume=resume, adversary=adversary, on_step=on_step)
    cid, t = transcripts.build(store, out)
    adv = Adversary.load(out)
    p = prepare(store, spec)
    party = Party("solver", TrainRun(out, p, adv), _train_ops(store, doc, p), adv.tactic() if adv else honest)
    if party.root != t["root"]:
        raise MarketError(f"the run in {out} does not match its own transcript")
    return Solved(party, cid, [cid, t["spec_cid"], *t["checkpoints"].values()])


def audit_targets(n_leaves: int, samples: int, seed: int, audit_leaf: int | None) -> list[int]:
    """The leaves a verifier re-executes: `samples` drawn with its secret seed, plus the audit
    leaf the chain drew (whose trace root is the attestation), in order."""
    rng = random.Random(seed)
    return sorted(set(rng.sample(range(n_leaves), min(samples, n_leaves)))
                  | ({audit_leaf} if audit_leaf is not None else set()))


@dataclass
class Audit:
    ok: bool
    checked: list[int]  # leaves re-executed
    mismatch: int | None = None  # the first leaf found wrong
    attestation: str | None = None  # trace root of the audit leaf (None without one)
    party: Party | None = None  # the verifier's own honest side, when it will challenge
    serve: list[str] = field(default_factory=list)
    why: str = ""


def _materialize(store: BlobStore, t: dict, spec_json: dict, run: Path, fetch: Fetch, upto: int | None = None) -> Path:
    """A run directory a verifier or referee can replay from: the solver's spec, its step log (its
    hashes), and the checkpoints the replays need (fetched, hash-checked by the store, and
    checked against the logged hashes when loaded)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "spec.json").write_text(json.dumps(spec_json, indent=2))
    rows = [{"step": i + 1, "state_hash": h} for i, h in enumerate(t["state_hashes"])][:upto]
    (run / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _link_checkpoint(store: BlobStore, t: dict, run: Path, step: int, fetch: Fetch) -> None:
    cid = t["checkpoints"][str(step)]
    fetch(cid)
    target = run / "checkpoints" / f"step-{step:08d}"
    if target.is_symlink() and not target.exists():
        target.unlink()  # the store's checkout it pointed to was cleaned away
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(store.checkout(cid), target_is_directory=True)  # read-only use: no copy


def _base_for(t: dict, step: int) -> int:
    """The newest published checkpoint at or before `step`."""
    return max(int(s) for s in t["checkpoints"] if int(s) <= step)


def _train_audit(store: BlobStore, doc: dict, result_cid: str, fetch: Fetch, out: Path, *, root: str, last_leaf: str,
                 audit_leaf: int | None, samples: int, seed: int, lazy: bool = False) -> Audit:
    """Check a committed training result by re-executing `samples` random steps and the audit
    leaf's step (traced: its trace root is the attestation). `lazy` is the cheat a verifier
    might try: attest without re-executing (it copies the solver's published leaf)."""
    spec = parse_spec(doc["spec"])
    fetch(result_cid)
    try:
        t = transcripts.load(store, result_cid)
    except transcripts.TranscriptError as e:
        return Audit(False, [], 0, why=f"unreadable transcript: {e}")
    leaves = transcripts.chain_leaves(t["initial_state_hash"], t["state_hashes"])
    if len(leaves) != spec.steps or t["root"] != root or leaves[-1] != last_leaf:
        return Audit(False, [], 0, why="the transcript is not what the solver committed on chain")
    run = _materialize(store, t, doc["spec"], Path(out) / "solver", fetch)
    _link_checkpoint(store, t, run, 0, fetch)  # the start every leaf chains from
    if lazy:  # copies what is public instead of re-executing: the attestation it can make
        return Audit(True, [], attestation=leaves[audit_leaf] if audit_leaf is not None else None)
    p = prepare(store, spec)  # one model for every replay (a replay loads its own checkpoint)
    n = _train_ops(store, doc, p)
    targets = audit_targets(spec.steps, samples, seed, audit_leaf)
    checked, attestation = [], None
    for k in targets:  # leaf k is the state after step k+1
        base = _base_for(t, k)
        _link_checkpoint(store, t, run, base, fetch)
        # Loading it checks its tensors against its meta; its meta must hold the logged hash.
        want = t["initial_state_hash"] if base == 0 else t["state_hashes"][base - 1]
        if repro_train.checkpoint_meta(run / "checkpoints" / f"step-{base:08d}")["state_hash"] != want:
            return Audit(False, checked, base, why=f"checkpoint {base} does not hold the logged state")
        comp = TrainRun(run, p)
        if k == audit_leaf:
            party = Party("verifier", comp, n)
            trace = comp.trace(k)
            attestation = attest.attestation(party, k)
            ok = trace.after == leaves[k]
        else:
            ok = replay(run, p, start=k + 1, stop=k + 1).ok
        checked.append(k)
        if not ok:
            return _challenger(store, doc, t, run, Path(out) / "verifier", k, checked, fetch)
    return Audit(True, checked, attestation=attestation)


def _challenger(store: BlobStore, doc: dict, t: dict, solver_run: Path, own: Path, k: int, checked: list[int],
                fetch: Fetch) -> Audit:
    """The verifier's own run: the solver's agreed prefix up to the last published checkpoint
    before the wrong step, then honest steps to the end (resumed from there)."""
    spec = parse_spec(doc["spec"])
    base = _base_for(t, k)
    if not (own / "result.json").exists():
        shutil.rmtree(own, ignore_errors=True)
        own.mkdir(parents=True)
        (own / "spec.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=2))
        rows = [{"step": i + 1, "state_hash": h} for i, h in enumerate(t["state_hashes"][:base])]
        (own / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for s in (0, base):
            src = solver_run / "checkpoints" / f"step-{s:08d}"
            if not src.exists():
                _link_checkpoint(store, t, solver_run, s, fetch)
            dst = own / "checkpoints" / f"step-{s:08d}"
            if not dst.exists():
                shutil.copytree(src, dst)
        run_training(store, spec, own, resume=True)
    cid, own_t = transcripts.build(store, own)
    p = prepare(store, spec)
    party = Party("challenger", TrainRun(own, p), _train_ops(store, doc, p))
    return Audit(False, checked, k, party=party, serve=[cid, own_t["spec_cid"], *own_t["checkpoints"].values()],
                 why=f"step {k + 1} does not reproduce")


def _train_referee(store: BlobStore, doc: dict, result_cid: str, fetch: Fetch, out: Path, k: int) -> tuple[Referee, dict]:
    """A referee for a disputed leaf k of this job, and the sides it may take the agreed state
    from: the solver's published run (the agreed before is the solver's own leaf k-1; its
    checkpoints are hash-checked against it by TrainReferee)."""
    spec = parse_spec(doc["spec"])
    fetch(result_cid)
    t = transcripts.load(store, result_cid)
    run = _materialize(store, t, doc["spec"], Path(out) / "solver", fetch)
    _link_checkpoint(store, t, run, 0, fetch)
    if k > 0:
        _link_checkpoint(store, t, run, _base_for(t, k - 1), fetch)
    side = Party("solver", TrainRun(run, prepare(store, spec)), _train_ops(store, doc))
    return TrainReferee(prepare(store, spec)), {"solver": side, "challenger": side}


# -- inference ---------------------------------------------------------------------------------

class InferSpec(BaseModel):
    """An inference job: the model's completion of one prompt, every token committed."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="CID of a stored model")
    prompt: str = Field(min_length=1, max_length=20_000, description="the prompt text (the chat template is applied)")
    prompt_ids: list[int] | None = Field(None, description="the prompt's token ids (filled in when the job is made)")
    max_new_tokens: int = Field(16, ge=1, le=4096, description="tokens to generate (no early stop)")
    temperature: float = Field(0.0, ge=0, le=100, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="sampling seed")
    request_id: int = Field(0, ge=0, le=2**32 - 1, description="selects the random stream")

    @field_validator("model")
    @classmethod
    def _cid(cls, v: str) -> str:
        if not is_cid(v):
            raise ValueError("must be a CID (64 hex digits)")
        return v


def _model_factory(store: BlobStore, cid: str):
    from bitswarm.models.generate import load

    return lambda: load(store, cid)[0]


def _infer_job(doc: dict) -> dict:
    spec = doc["spec"]
    return {k: spec[k] for k in inference.JOB_KEYS}


def _infer_plan(store: BlobStore, doc: dict) -> tuple[int, int]:
    job = _infer_job(doc)
    return job["max_new_tokens"], inference.ops_per_token(_model_factory(store, job["model"])(), job)


def _infer_solve(store: BlobStore, doc: dict, out: Path, adversary: str | None = None, on_step=None) -> Solved:
    job, out = _infer_job(doc), Path(out)
    factory = _model_factory(store, job["model"])
    if not (out / inference.FILE).exists():
        if out.exists():
            shutil.rmtree(out)  # a generation a crash cut short: it is redone from the start
        inference.run(factory(), job, out, Adversary.parse(adversary) if adversary else None)
    cid = store.put_file(out / inference.FILE, label="inference record")
    comp = inference.InferRecord(out, factory)
    n = _infer_plan(store, doc)[1]
    return Solved(Party("solver", comp, n, comp.adversary.tactic() if comp.adversary else honest), cid, [cid])


def fetch_record(store: BlobStore, result_cid: str, fetch: Fetch, run: Path, module, job: dict, what: str) -> dict | str:
    """A solver's record, fetched and written where `module` (verify.inference, verify.task_eval)
    reads it, or why it cannot be used (unreadable, or of another job)."""
    fetch(result_cid)
    run.mkdir(parents=True, exist_ok=True)
    (run / module.FILE).write_bytes(store.read_bytes(result_cid))
    try:
        rec = module.load(run)
    except BitswarmError as e:
        return f"unreadable {what}: {e}"
    if {k: rec.get(k) for k in module.JOB_KEYS} != job:
        return f"the {what} is of another job"
    return rec


def _infer_record(store: BlobStore, doc: dict, result_cid: str, fetch: Fetch, run: Path) -> dict | str:
    return fetch_record(store, result_cid, fetch, run, inference, _infer_job(doc), "inference record")


def _infer_audit(store: BlobStore, doc: dict, result_cid: str, fetch: Fetch, out: Path, *, root: str, last_leaf: str,
                 audit_leaf: int | None, samples: int, seed: int, lazy: bool = False) -> Audit:
    job = _infer_job(doc)
    run = Path(out) / "solver"
    rec = _infer_record(store, doc, result_cid, fetch, run)
    if isinstance(rec, str):
        return Audit(False, [], 0, why=rec)
    commits = rec["commitments"]
    if len(commits) != job["max_new_tokens"] or merkle_root(commits) != root or commits[-1] != last_leaf:
        return Audit(False, [], 0, why="the record is not what the solver committed on chain")
    if lazy:
        return Audit(True, [], attestation=commits[audit_leaf] if audit_leaf is not None else None)
    factory = _model_factory(store, job["model"])
    comp = inference.InferRecord(run, factory)
    party = Party("verifier", comp, _infer_plan(store, doc)[1])
    targets = audit_targets(len(commits), samples, seed, audit_leaf)
    checked, attestation = [], None
    for j in targets:
        checked.append(j)
        if comp.trace(j).after != commits[j]:
            own = Path(out) / "verifier"
            if not (own / inference.FILE).exists():
                shutil.rmtree(own, ignore_errors=True)
                inference.run(factory(), job, own)
            cid = store.put_file(own / inference.FILE, label="inference record (challenger)")
            return Audit(False, checked, j, party=Party("challenger", inference.InferRecord(own, factory), party.n),
                         serve=[cid], why=f"token {j + 1} does not reproduce")
        if j == audit_leaf:
            attestation = attest.attestation(party, j)
    return Audit(True, checked, attestation=attestation)


def _infer_referee(store: BlobStore, doc: dict, result_cid: str, fetch: Fetch, out: Path, k: int):
    job = _infer_job(doc)
    run = Path(out) / "solver"
    rec = _infer_record(store, doc, result_cid, fetch, run)
    if isinstance(rec, str):
        raise MarketError(f"the solver's record cannot be used: {rec}")
    factory = _model_factory(store, job["model"])
    side = Party("solver", inference.InferRecord(run, factory), _infer_plan(store, doc)[1])
    return inference.InferReferee(factory, job), {"solver": side, "challenger": side}


def _infer_check(store: BlobStore | None, spec) -> dict:
    try:
        s = InferSpec.model_validate(spec)
    except ValidationError as e:
        raise MarketError(f"invalid inference job: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    if s.prompt_ids is None and store is not None:
        from bitswarm.models.generate import encode_prompt, load_tokenizer

        s.prompt_ids = encode_prompt(load_tokenizer(store, s.model), s.prompt, chat=True)
    if s.prompt_ids is None:
        raise MarketError("an inference job document must carry its prompt's token ids")
    return s.model_dump(mode="json")


def _train_check(store: BlobStore | None, spec) -> dict:
    try:
        return parse_spec(spec).model_dump(mode="json")
    except SpecError as e:
        raise MarketError(str(e)) from None


@dataclass(frozen=True)
class Kind:
    check: Callable  # (store | None, spec) -> the spec as the document holds it
    plan: Callable
    solve: Callable
    audit: Callable
    referee: Callable
    judge: Callable  # (store, doc) -> a Referee with its own kernels, for ruling from one's own recomputation


KIND_OF = {
    "train": Kind(_train_check, _train_plan, _train_solve, _train_audit, _train_referee,
                  lambda store, doc: TrainReferee(prepare(store, parse_spec(doc["spec"])))),
    "infer": Kind(_infer_check, _infer_plan, _infer_solve, _infer_audit, _infer_referee,
                  lambda store, doc: inference.InferReferee(_model_factory(store, doc["spec"]["model"]), _infer_job(doc))),
}


def plan(store: BlobStore, doc: dict) -> tuple[int, int]:
    """(num_leaves, ops_per_leaf): what the poster posts and a solver checks before claiming."""
    return KIND_OF[doc["kind"]].plan(store, doc)


def solve(store: BlobStore, doc: dict, out: Path, adversary: str | None = None, on_step=None) -> Solved:
    """Run the job in `out` (resuming what a crash left) and store its result; returns the
    solver's side of any dispute, the result's CID and the CIDs to serve."""
    return KIND_OF[doc["kind"]].solve(store, doc, out, adversary, on_step)


def audit(store: BlobStore, doc: dict, result_cid: str, fetch: Fetch, out: Path, **kw) -> Audit:
    """Re-execute sampled leaves of a committed result (and the drawn audit leaf, whose trace root
    is the attestation); on a mismatch, the verifier's own honest side to challenge with."""
    return KIND_OF[doc["kind"]].audit(store, doc, result_cid, fetch, out, **kw)


def referee(store: BlobStore, doc: dict, result_cid: str, fetch: Fetch, out: Path, k: int,
            own: bool = False) -> tuple[Referee, dict]:
    """A referee for leaf k of this job and the sides it may take the agreed state from: the
    solver's published result, or with `own` the referee's own honest computation of the job
    (for when the solver's data is unavailable or does not reach the agreed leaf: the agreed
    before is honest whenever one side is, so an honest recomputation reaches it)."""
    kind = KIND_OF[doc["kind"]]
    if not own:
        return kind.referee(store, doc, result_cid, fetch, out, k)
    side = kind.solve(store, doc, Path(out) / "own").party
    return kind.judge(store, doc), {"solver": side, "challenger": side}


from bitswarm.jobs import eval_job  # noqa: E402,F401  registers KIND_OF["eval"] (it imports this module)
