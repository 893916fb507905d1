"""Runs a training spec: resolves the model and data from the store, then repro's training loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitswarm.errors import BitswarmError
from bitswarm.jobs.datasets import ArithmeticData, JsonlData, pad_id, to_micro_batch
from bitswarm.jobs.spec import TrainSpec, parse_spec
from bitswarm.models.generate import open_tokenizer
from bitswarm.repro import train as repro_train
from bitswarm.repro.backend import get_backend, set_threads
from bitswarm.repro.config import LlamaConfig
from bitswarm.repro.model import Llama
from bitswarm.repro.weights import load_params
from bitswarm.store import BlobStore

SPEC_FILE = "spec.json"


class JobError(BitswarmError, RuntimeError):
    pass


# A run's checkpoints on disk, by default: one SmolLM2-135M state (1.6 GB) fits, two do not.
CHECKPOINT_BUDGET = 2 * 10**9


def hyper_from(spec: TrainSpec) -> repro_train.Hyper:
    return repro_train.Hyper(
        lr=spec.lr.peak, warmup_steps=spec.lr.warmup_steps, schedule=spec.lr.schedule, min_lr=spec.lr.min_lr,
        total_steps=spec.steps, beta1=spec.optimizer.beta1, beta2=spec.optimizer.beta2, eps=spec.optimizer.eps,
        weight_decay=spec.optimizer.weight_decay, grad_clip=spec.optimizer.grad_clip, loss=spec.loss,
        clip_low=spec.grpo.clip_low, clip_high=spec.grpo.clip_high,
    )


def _check_run_dir(out: Path, spec: TrainSpec, resume: bool) -> None:
    spec_file = out / SPEC_FILE
    if spec_file.exists():
        if not resume:
            raise JobError(f"{out} already holds a run; pass --resume to continue it, or choose a new --out")
        previous = parse_spec(json.loads(spec_file.read_text()))
        if previous != spec:
            raise JobError(f"{out} holds a run of a different spec; --resume needs the same spec")
    elif out.exists() and any(out.iterdir()):
        raise JobError(f"{out} is not empty and holds no run; choose an empty or new --out")


@dataclass
class Prepared:
    """Everything a spec determines, ready to train or to re-execute any step."""

    model: Llama
    state: repro_train.TrainState
    batches_for_step: Callable[[int], list]
    hyper: repro_train.Hyper
    seq_len: int
    micro_batch: int
    # The spec's initial state, rebuilt from the stored model (the parameters above may have been
    # trained in place since): what a step-0 checkpoint written by reference holds.
    initial_state: Callable[[], repro_train.TrainState]


def prepare(store: BlobStore, spec: TrainSpec, backend: str = "numba", micro_batch: int | None = None) -> Prepared:
    mb = micro_batch or spec.global_batch
    if mb < 1 or spec.global_batch % mb:
        raise JobError(f"--micro-batch {mb} must divide the global batch of {spec.global_batch}")
    B = get_backend(backend)
    model_dir = store.checkout(spec.model)
    if spec.model_kind == "policy":
        return _prepare_policy(store, spec, B, model_dir, mb)
    cfg = LlamaConfig.from_dir(model_dir)
    if spec.seq_len > cfg.max_position_embeddings:
        raise JobError(f"seq_len {spec.seq_len} exceeds the model's context of {cfg.max_position_embeddings}")
    tok = open_tokenizer(model_dir)
    if spec.dataset.kind == "synthetic":
        data = ArithmeticData(tok, spec.seq_len, spec.global_batch, spec.seed)
    else:
        data = JsonlData(store, spec.dataset.cid, tok, spec.seq_len, spec.global_batch, spec.seed, spec.loss == "grpo",
                         spec.dataset.order)
    pad = pad_id(tok)

    def batches_for_step(step: int):
        ex = data.examples(step)
        return [to_micro_batch(ex[i : i + mb], spec.seq_len, pad, spec.loss == "grpo") for i in range(0, len(ex), mb)]

    params = load_params(model_dir, cfg)
    model = Llama(cfg, params, B)
    # RoPE tables are constants of the model: built here, never inside a step, so every step
    # calls the same op sequence (an adversary's op=I and a trace's op I name the same call).
    model._rope(0, spec.seq_len)
    moments = load_optimizer_state(store, spec.optimizer_state) if spec.optimizer_state else None

    def start(params: dict) -> repro_train.TrainState:
        st = repro_train.TrainState(params, spec.seed)
        if moments is not None:
            try:
                st.load_optimizer(moments)
            except repro_train.TrainError as e:
                raise JobError(f"optimizer_state {spec.optimizer_state}: {e}") from None
        return st

    def initial_state() -> repro_train.TrainState:
        return start(load_params(store.checkout(spec.model), cfg))

    return Prepared(model, start(params), batches_for_step, hyper_from(spec), spec.seq_len, mb, initial_state)


OPTIMIZER_STATE_LABEL = "optimizer-state"


def store_optimizer_state(store: BlobStore, state: repro_train.TrainState) -> str:
    """Store a state's AdamW part (a safetensors blob) for a later spec's optimizer_state."""
    return store.put_bytes(state.optimizer_bytes(), label=OPTIMIZER_STATE_LABEL)


def load_optimizer_state(store: BlobStore, cid: str) -> dict[str, np.ndarray]:
    """The tensors of a stored optimizer state; checked against the model by TrainState.load_optimizer."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        return load(store.read_bytes(cid))
    except (SafetensorError, ValueError) as e:
        raise JobError(f"optimizer_state {cid} is not a safetensors file of AdamW moments ({e})") from None


def _prepare_policy(store: BlobStore, spec: TrainSpec, B, model_dir: Path, mb: int) -> Prepared:
    """A repro.policy network on a tensor dataset: same loop, hashes and disputes as a Llama."""
    from bitswarm.jobs.datasets import TensorData
    from bitswarm.repro.policy import PolicyBatch, PolicyConfig, PolicyError, PolicyNet, load_policy_params

    try:
        cfg = PolicyConfig.from_dir(model_dir)
    except PolicyError as e:
        raise JobError(f"model {spec.model} is not a policy (model_kind 'policy'): {e}") from None
    data = TensorData(store, spec.dataset.cid, {h.name: (h.rows, h.classes) for h in cfg.heads}, cfg.active,
                      cfg.features, spec.global_batch, spec.seed, spec.dataset.order)

    def batches_for_step(step: int):
        idx = data.indices(step)
        return [PolicyBatch(data.inputs[idx[i : i + mb]], {k: v[idx[i : i + mb]] for k, v in data.targets.items()})
                for i in range(0, len(idx), mb)]

    def initial_state() -> repro_train.TrainState:
        return repro_train.TrainState(load_policy_params(store.checkout(spec.model), cfg), spec.seed)

    params = load_policy_params(model_dir, cfg)
    return Prepared(PolicyNet(cfg, params, B), repro_train.TrainState(params, spec.seed), batches_for_step,
                    hyper_from(spec), spec.seq_len, mb, initial_state)


def run_training(
    store: BlobStore,
    spec: TrainSpec,
    out: Path,
    backend: str = "numba",
    threads: int | None = None,
    micro_batch: int | None = None,
    resume: bool = False,
    on_step: Callable[[dict], None] | None = None,
    adversary: str | None = None,
    checkpoint_budget: int | None = CHECKPOINT_BUDGET,
) -> dict:
    """Train as the spec says. `adversary` (NAME[@step=K]) makes this run cheat on purpose,
    for testing verification; it is recorded in the run directory. The initial checkpoint is
    written by reference and older checkpoints are deleted beyond `checkpoint_budget` bytes
    (None: keep all); see repro.train."""
    from bitswarm.verify.adversary import Adversary, do_step

    out = Path(out)
    adv = Adversary.parse(adversary) if adversary else None
    _check_run_dir(out, spec, resume)
    set_threads(threads)
    p = prepare(store, spec, backend, micro_batch)
    if adv is not None:
        from bitswarm.verify.trace import count_ops

        # Checked before anything is written: a fault that could never fire is an error. Ops are
        # counted in the canonical order (the whole global batch as one micro-batch).
        canonical = p if p.micro_batch == spec.global_batch else prepare(store, spec, backend)
        adv.check(spec.steps, count_ops(canonical) if adv.name == "bitflip" else None)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SPEC_FILE).exists():
        (out / SPEC_FILE).write_text(json.dumps(spec.model_dump(mode="json"), indent=2))
    if adv is not None:
        adv.save(out)
    step_fn = claim = None
    if adv is not None:
        step_fn = lambda model, state: do_step(model, state, p.batches_for_step, p.hyper, adv)  # noqa: E731
        claim = lambda state: adv.claimed_hash(state.step, state.hash())  # noqa: E731
    result = repro_train.run(
        p.model, p.state, p.batches_for_step, p.hyper, spec.steps, out, spec.checkpoint_every,
        resume=resume, on_step=on_step, step_fn=step_fn, claim_hash=claim,
        initial_by_reference=True, checkpoint_budget=checkpoint_budget,
    )
    result["kernels"] = p.model.B.name  # "numba" for --backend repro
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def load_run_spec(out: Path) -> TrainSpec:
    try:
        return parse_spec(json.loads((Path(out) / SPEC_FILE).read_text()))
    except FileNotFoundError:
        raise JobError(f"{out} holds no training run ({SPEC_FILE} is missing)") from None


def model_from_run(store: BlobStore, out: Path, label: str | None = None) -> dict:
    """Store a finished run's trained weights as a model (the base model's config and tokenizer
    with the final checkpoint's parameters) and return {"model": CID, ...}."""
    from bitswarm.models.importer import store_trained

    out = Path(out)
    spec = load_run_spec(out)
    try:
        result = json.loads((out / "result.json").read_text())
    except FileNotFoundError:
        raise JobError(f"the run in {out} has not finished (no result.json); `bitswarm train --resume` continues it") from None
    final = repro_train.checkpoints(out).get(result["steps"])
    if final is None:
        raise JobError(f"the run in {out} has no checkpoint of its last step {result['steps']}")
    state = repro_train.TrainState.load(final)  # re-hashed against its meta: a damaged checkpoint is refused
    if repro_train.checkpoint_meta(final)["state_hash"] != result["final_state_hash"]:
        raise JobError(f"the last checkpoint in {out} is not the state result.json reports")
    if not store.has(spec.model):
        raise JobError(f"the run's base model {spec.model} is not in the store; fetch or import it first")
    if spec.model_kind == "policy":
        from bitswarm.models.policy import store_trained_policy

        cid = store_trained_policy(store, spec, state.params, result["final_state_hash"],
                                   label=label or f"policy-{result['final_state_hash'][:16]}")
        return {"model": cid, "base_model": spec.model, "dataset": spec.dataset.cid, "steps": result["steps"],
                "final_state_hash": result["final_state_hash"], "run": str(out)}
    cid = store_trained(store, spec.model, state.params, label=label or f"trained-{result['final_state_hash'][:16]}")
    return {"model": cid, "base_model": spec.model, "steps": result["steps"],
            "final_state_hash": result["final_state_hash"], "run": str(out)}
