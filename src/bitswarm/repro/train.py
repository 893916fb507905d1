"""The bit-exact training loop: micro-batched steps, AdamW, state hashes, checkpoints, resume.

Output directory:
    steps.jsonl                  one line per finished step: {"step", "state_hash", "loss", "grad_norm"}
    checkpoints/step-XXXXXXXX/   state.safetensors + meta.json, every `checkpoint_every` steps
                                 and at step 0 (the initial state, for replays from the start)

Checkpoint size. A SmolLM2-135M state (parameters and both AdamW moments, fp32) is 1.6 GB,
so a 20-step run checkpointed every 5 steps wrote 8 GB. Two rules keep a run near one state:
- by reference: with `initial_by_reference` the step-0 checkpoint is its meta.json alone
  ("initial": true). The initial state is a pure function of the spec (the base model's
  parameters, zero moments, the seed), so whoever loads it rebuilds it (`initial=`) and
  TrainState.load checks it against the hash in the meta as for any checkpoint.
- a budget: with `checkpoint_budget` bytes, after each checkpoint the oldest ones are deleted
  until the rest fit (the newest and step 0 always stay). A replay or a dispute rebuilds
  any state from the newest checkpoint at or before it, so fewer checkpoints cost only
  re-executed steps, never correctness; the step log keeps every state hash.
The state hash after step s covers the parameters, the AdamW moments and bias-correction
powers, the data seed, the step number and the step's results (its mean loss and squared
gradient norm), so what a run reports is committed with the state that produced it
(hashing.state_hash, entries in sorted name order).
Step s's data comes from the counter-based sampler keyed by (seed, s), so a resumed run needs
nothing but the checkpoint to continue with the same bits.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitswarm.errors import BitswarmError
from bitswarm.repro.hashing import merkle_root, state_hash
from bitswarm.repro.nan import canonical
from bitswarm.repro.model import Llama

F32 = np.float32
IGNORE = -100


class TrainError(BitswarmError, RuntimeError):
    pass


@dataclass(frozen=True)
class Hyper:
    lr: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "constant"  # "constant" | "linear" (warm-up, then linear decay to min_lr)
    min_lr: float = 0.0
    total_steps: int = 1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 disables clipping
    loss: str = "lm"  # "lm" | "grpo"
    clip_low: float = 0.2
    clip_high: float = 0.28

    def lr_at(self, step: int) -> np.float32:
        """Learning rate of step `step` (0-based), in IEEE double + - * / only, then fp32."""
        lr = float(self.lr)
        if self.warmup_steps and step < self.warmup_steps:
            return F32(lr * (step + 1) / self.warmup_steps)
        if self.schedule == "linear":
            span = max(self.total_steps - self.warmup_steps, 1)
            frac = (step - self.warmup_steps) / span
            return F32(lr + (self.min_lr - lr) * frac)
        return F32(lr)


@dataclass
class MicroBatch:
    """Sequences of equal length: ids (m, t) int64; targets (m, t) int64, IGNORE where no loss.

    GRPO also needs advantages (m,) and optionally logp_old (m, t) of the generating policy
    (absent, or NaN at a position: the current policy's own value there, i.e. ratio 1).
    """

    ids: np.ndarray
    targets: np.ndarray
    advantages: np.ndarray | None = None
    logp_old: np.ndarray | None = None


class TrainState:
    def __init__(self, params: dict[str, np.ndarray], seed: int):
        self.params = params
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.beta1_pow = F32(1)
        self.beta2_pow = F32(1)
        self.seed = seed
        self.step = 0
        # The last step's results: inside the state hash, so a reported loss is committed.
        self.loss = F32(0)
        self.grad_norm_sq = F32(0)

    def tensors(self) -> dict[str, np.ndarray]:
        t = {f"param.{k}": v for k, v in self.params.items()}
        t |= {f"opt.m.{k}": v for k, v in self.m.items()}
        t |= {f"opt.v.{k}": v for k, v in self.v.items()}
        t["opt.beta1_pow"] = np.array(self.beta1_pow, F32)
        t["opt.beta2_pow"] = np.array(self.beta2_pow, F32)
        t["rng.seed"] = np.array(self.seed, np.uint64)
        t["metric.loss"] = np.array(self.loss, F32)
        t["metric.grad_norm_sq"] = np.array(self.grad_norm_sq, F32)
        return dict(sorted(t.items()))

    def hash(self) -> str:
        return state_hash(self.step, self.tensors().items())

    def optimizer_tensors(self) -> dict[str, np.ndarray]:
        """The AdamW state alone (both moments and the bias-correction powers), named as in
        tensors(): what a later run starts from to keep its moments (TrainSpec.optimizer_state)."""
        return {k: v for k, v in self.tensors().items() if k.startswith("opt.")}

    def optimizer_bytes(self) -> bytes:
        """optimizer_tensors() as a safetensors file, in the layout a checkpoint uses."""
        from safetensors.numpy import save

        return save(_savable(self.optimizer_tensors()))

    def load_optimizer(self, tensors: dict[str, np.ndarray]) -> None:
        """Start from a saved AdamW state instead of zeros: exactly the names optimizer_tensors()
        gives for these parameters, fp32, the same shapes, finite, and powers in (0, 1]."""
        want = {f"opt.{w}.{k}": v.shape for k, v in self.params.items() for w in ("m", "v")}
        want |= {"opt.beta1_pow": (), "opt.beta2_pow": ()}
        missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
        if missing or extra:
            raise TrainError("the optimizer state does not fit this model: "
                             + "; ".join(f"{what} {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
                                         for what, names in (("missing", missing), ("unexpected", extra)) if names))
        for name, shape in want.items():
            t = tensors[name]
            if t.dtype != F32 or t.shape != shape:
                raise TrainError(f"optimizer state {name}: {t.dtype}{list(t.shape)}, this model needs float32{list(shape)}")
            if not np.isfinite(t).all():
                raise TrainError(f"optimizer state {name} holds a NaN or an infinity")
        if any((tensors[k] < 0).any() for k in want if k.startswith("opt.v.")):
            raise TrainError("optimizer state: a second moment (opt.v.*) is negative")
        pows = {k: F32(tensors[k]) for k in ("opt.beta1_pow", "opt.beta2_pow")}
        if any(not (F32(0) < p <= F32(1)) for p in pows.values()):
            raise TrainError(f"optimizer state: the bias-correction powers must lie in (0, 1], not "
                             f"{', '.join(f'{k} = {float(p)}' for k, p in pows.items())}")
        self.m = {k: np.ascontiguousarray(tensors[f"opt.m.{k}"]).copy() for k in self.params}
        self.v = {k: np.ascontiguousarray(tensors[f"opt.v.{k}"]).copy() for k in self.params}
        self.beta1_pow, self.beta2_pow = pows["opt.beta1_pow"], pows["opt.beta2_pow"]

    def save(self, path: Path, state_hash: str | None = None, by_reference: bool = False) -> None:
        """Atomically write a checkpoint directory (temp dir, fsync, rename). Pass the state
        hash when it is already known: hashing a SmolLM2 state takes a sizeable part of a step.
        `by_reference` (the initial state only) writes the meta alone: see the module doc."""
        from safetensors.numpy import save_file

        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        meta = {"step": self.step, "state_hash": state_hash or self.hash(), "seed": self.seed}
        if by_reference:
            if self.step != 0:
                raise TrainError("only the initial state (step 0) can be checkpointed by reference")
            meta["initial"] = True
        else:
            save_file(_savable(self.tensors()), str(tmp / "state.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, initial: Callable[[], "TrainState"] | None = None) -> "TrainState":
        """The state a checkpoint holds, checked against its meta's hash. `initial()` builds the
        spec's initial state, for a step-0 checkpoint written by reference."""
        from safetensors.numpy import load_file

        meta = checkpoint_meta(path)
        if meta.get("initial"):
            if initial is None:
                raise TrainError(f"checkpoint {path} holds the initial state by reference; it is rebuilt from the "
                                 "run's spec (pass initial=)")
            st = initial()
            if st.step != 0 or st.hash() != meta["state_hash"]:
                raise TrainError(f"the initial state rebuilt from the spec does not hash to {meta['state_hash']} "
                                 f"({path}): a different base model or seed")
            return st
        t = load_file(str(Path(path) / "state.safetensors"))
        params = {k[6:]: np.ascontiguousarray(v) for k, v in t.items() if k.startswith("param.")}
        st = cls(params, int(meta["seed"]))
        st.m = {k[6:]: np.ascontiguousarray(v) for k, v in t.items() if k.startswith("opt.m.")}
        st.v = {k[6:]: np.ascontiguousarray(v) for k, v in t.items() if k.startswith("opt.v.")}
        st.beta1_pow, st.beta2_pow = F32(t["opt.beta1_pow"]), F32(t["opt.beta2_pow"])
        st.loss, st.grad_norm_sq = F32(t["metric.loss"]), F32(t["metric.grad_norm_sq"])
        st.step = int(meta["step"])
        if st.hash() != meta["state_hash"]:
            raise TrainError(f"checkpoint {path} is damaged: its state does not hash to {meta['state_hash']}")
        return st


def _savable(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # reshape: ascontiguousarray turns the 0-d scalars (beta powers, seed) into 1-d arrays
    return {k: np.ascontiguousarray(v).reshape(v.shape) for k, v in tensors.items()}


def count_loss_tokens(batches: Sequence[MicroBatch]) -> int:
    return int(sum(int((mb.targets != IGNORE).sum()) for mb in batches))


def _lm_micro_batch(model: Llama, mb: MicroBatch, inv_n: np.float32, hp: Hyper, grads: dict) -> np.ndarray:
    """Forward and backward of one micro-batch of sequences into `grads`; each counted token's loss."""
    B = model.B
    logits, tape = model.forward(mb.ids, keep=True)
    targets = mb.targets.reshape(-1).astype(np.int64)
    counted = targets != IGNORE
    ce = B.cross_entropy_fwd(logits, np.where(counted, targets, -1))
    if hp.loss == "grpo":
        logp = -ce
        t = mb.ids.shape[1]
        adv = np.repeat(np.asarray(mb.advantages, F32), t)
        old = logp if mb.logp_old is None else np.asarray(mb.logp_old, F32).reshape(-1)
        old = np.where(np.isnan(old), logp, old).astype(F32)
        loss, dlogp = B.grpo_token_loss(logp, old, adv, counted.astype(F32), hp.clip_low, hp.clip_high)
        g = (-dlogp) * inv_n  # d mean-loss / d ce, since ce = -logp
        losses = loss[counted]
    else:
        g = np.where(counted, inv_n, F32(0)).astype(F32)
        losses = ce[counted]
    dlogits = B.cross_entropy_bwd(logits, np.where(counted, targets, -1), g.astype(F32))
    model.backward(tape, dlogits, grads)
    return losses


def train_step(model, state: TrainState, batches: Sequence, hp: Hyper) -> dict:
    """One optimizer step over the global batch, micro-batch by micro-batch, in order.

    `model` is a Llama (batches of MicroBatch, loss per token) or any model with
    `loss_count(batch)` and `micro_batch_loss(batch, inv_n, hp, grads)` (repro.policy)."""
    B = model.B
    custom = hasattr(model, "micro_batch_loss")
    n = sum(model.loss_count(mb) for mb in batches) if custom else count_loss_tokens(batches)
    if n == 0:
        raise TrainError(f"step {state.step} has no tokens to learn from")
    inv_n = F32(1) / F32(n)
    grads = model.zero_grads()
    token_losses = []
    for mb in batches:
        if custom:
            token_losses.append(model.micro_batch_loss(mb, inv_n, hp, grads))
        else:
            token_losses.append(_lm_micro_batch(model, mb, inv_n, hp, grads))
    grads = model.finish_grads(grads)
    names = sorted(state.params)
    norm_sq = B.global_grad_norm_sq([grads[k] for k in names])
    if hp.grad_clip > 0:
        scale = B.clip_scale(norm_sq, F32(hp.grad_clip))
        B.scale_grads_([grads[k] for k in names], scale)
    state.beta1_pow, state.beta2_pow = B.advance_pows(state.beta1_pow, state.beta2_pow, F32(hp.beta1), F32(hp.beta2))
    lr = hp.lr_at(state.step)
    for k in names:
        B.adamw_step_(
            state.params[k], grads[k], state.m[k], state.v[k],
            lr=lr, beta1=F32(hp.beta1), beta2=F32(hp.beta2), eps=F32(hp.eps),
            weight_decay=F32(hp.weight_decay), beta1_pow=state.beta1_pow, beta2_pow=state.beta2_pow,
        )
    state.step += 1
    all_losses = np.concatenate(token_losses)[None, :].astype(F32)
    mean_loss = B.row_sum(all_losses)[0] / F32(n)
    # the division above is numpy glue: its NaN (a diverged step) is made the one NaN too
    state.loss, state.grad_norm_sq = canonical(F32(mean_loss)), canonical(F32(norm_sq))
    return {"loss": float(mean_loss), "grad_norm": float(np.sqrt(F32(norm_sq))), "lr": float(lr), "tokens": n}


# -- run directory ------------------------------------------------------------------------

def _ckpt_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:08d}"


def read_step_log(out: Path) -> list[dict]:
    path = Path(out) / "steps.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # a line torn by a crash; everything after it is redone
    return rows


def _write_step_log(out: Path, rows: list[dict]) -> None:
    tmp = out / ".steps.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, out / "steps.jsonl")


def checkpoint_meta(path: Path) -> dict:
    """{"step", "state_hash", "seed"} of a checkpoint directory, without loading its tensors."""
    return json.loads((Path(path) / "meta.json").read_text())


def checkpoints(out: Path) -> dict[int, Path]:
    """The run's checkpoint directories by step, in step order."""
    found = {}
    for p in (Path(out) / "checkpoints").glob("step-*"):
        if p.name[5:].isdigit():
            found[int(p.name[5:])] = p
    return dict(sorted(found.items()))


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = checkpoints(out)
    return ckpts[max(ckpts)] if ckpts else None


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def prune_checkpoints(out: Path, budget: int) -> list[int]:
    """Delete the oldest checkpoints until the rest take at most `budget` bytes; step 0 and the
    newest always stay. Returns the steps deleted."""
    ckpts = checkpoints(out)
    newest = max(ckpts, default=0)
    sizes = {s: _dir_bytes(p) for s, p in ckpts.items()}
    total, gone = sum(sizes.values()), []
    for s in ckpts:  # oldest first
        if total <= budget:
            break
        if s in (0, newest):
            continue
        if ckpts[s].is_symlink():  # a checkpoint borrowed from the store (a verifier's run): only the link goes
            ckpts[s].unlink()
        else:
            shutil.rmtree(ckpts[s])
        total -= sizes[s]
        gone.append(s)
    return gone


def run(
    model: Llama,
    state: TrainState,
    batches_for_step: Callable[[int], Sequence[MicroBatch]],
    hp: Hyper,
    steps: int,
    out: Path,
    checkpoint_every: int,
    resume: bool = False,
    on_step: Callable[[dict], None] | None = None,
    step_fn: Callable[[Llama, "TrainState"], dict] | None = None,
    claim_hash: Callable[["TrainState"], str] | None = None,
    initial_by_reference: bool = False,
    checkpoint_budget: int | None = None,
) -> dict:
    """Train to `steps`, logging every state hash; with resume, continue from the last checkpoint.

    `step_fn(model, state)` replaces the plain step and `claim_hash(state)` the hash logged for
    it (verify's adversaries use them to misbehave: a wrong step, an invented hash).
    `initial_by_reference` and `checkpoint_budget`: see the module doc; `state` must be the
    spec's initial state, which a resume from a step-0 checkpoint by reference starts from.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = []
    if resume and latest_checkpoint(out) is not None:
        ck = latest_checkpoint(out)
        fresh = state
        state = TrainState.load(ck, initial=lambda: fresh)
        model.params = state.params
        log = [r for r in read_step_log(out) if r["step"] <= state.step]
        if len(log) != state.step:
            raise TrainError(f"steps.jsonl in {out} does not reach checkpoint step {state.step}")
        if log and log[-1]["state_hash"] != state.hash():
            raise TrainError(f"checkpoint {ck} does not match the hash logged for step {state.step}")
        _write_step_log(out, log)
    else:
        state.save(_ckpt_dir(out, 0), by_reference=initial_by_reference)
        _write_step_log(out, [])
    model.params = state.params
    with open(out / "steps.jsonl", "a") as f:
        while state.step < steps:
            if step_fn is not None:
                info = step_fn(model, state)
            else:
                info = train_step(model, state, batches_for_step(state.step), hp)
            row = {"step": state.step, "state_hash": claim_hash(state) if claim_hash else state.hash(), **info}
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
            log.append(row)
            if state.step % checkpoint_every == 0 or state.step == steps:
                state.save(_ckpt_dir(out, state.step), row["state_hash"])
                if checkpoint_budget is not None:
                    prune_checkpoints(out, checkpoint_budget)
            if on_step:
                on_step(row)
    hashes = [r["state_hash"] for r in log]
    return {
        "final_state_hash": hashes[-1] if hashes else state.hash(),
        "steps": state.step,
        "step_hashes_root": merkle_root(hashes),
    }
