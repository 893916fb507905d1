"""Training job specs: one pydantic schema for YAML files, the CLI and (later) the chain.

A spec fixes everything that determines a run's bits: model CID, dataset and its order (seed),
sequence length, steps, global batch, schedule, optimizer, loss and repro version. Micro-batch
size and thread count are not in it: they never change the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bitswarm.errors import BitswarmError
from bitswarm.repro import REPRO_VERSION
from bitswarm.store.cid import is_cid

SYNTHETIC = ("arithmetic",)


class SpecError(BitswarmError, ValueError):
    """A spec file that is missing, unreadable or invalid; names the field and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    kind: Literal["synthetic", "cid", "tensors"] = Field(
        description="built-in synthetic data, a stored JSONL blob (llama), or a stored tensor dataset (policy: a "
        "safetensors blob with 'inputs' and 'targets.<head>', as bitswarm.assist writes from episodes)")
    name: str | None = Field(None, description=f"synthetic dataset name: {', '.join(SYNTHETIC)}")
    cid: str | None = Field(
        None,
        description="CID of a JSONL file: {\"text\"} per line for lm; {\"prompt\", \"completion\", "
        "\"advantage\", optional \"logp_old\"} for grpo (or \"prompt_ids\" and \"completion_ids\", token id lists, "
        "instead of the two texts: the tokens exactly as generated)",
    )
    order: Literal["sampled", "sequential"] = Field(
        "sampled",
        description="sampled: step s draws global_batch records at random from (seed, s); sequential: "
        "step s takes records s*global_batch onwards in file order (each once per pass; for rollout batches)",
    )

    @model_validator(mode="after")
    def _one_source(self):
        if self.kind == "synthetic":
            if self.name not in SYNTHETIC:
                raise ValueError(f"synthetic dataset name must be one of: {', '.join(SYNTHETIC)}")
            if self.cid is not None:
                raise ValueError("a synthetic dataset takes no cid")
            if self.order != "sampled":
                raise ValueError("a synthetic dataset is always sampled; order 'sequential' is for stored JSONL")
        else:
            if self.cid is None or not is_cid(self.cid):
                raise ValueError(f"kind '{self.kind}' needs cid: sha256:<64 hex>")
        return self


class LRSpec(_Strict):
    peak: float = Field(1e-3, gt=0, le=1, description="peak learning rate")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    schedule: Literal["constant", "linear"] = Field(
        "constant", description="after warm-up: constant, or linear decay to min_lr at the last step"
    )
    min_lr: float = Field(0.0, ge=0, description="learning rate at the last step of a linear schedule")


class OptimizerSpec(_Strict):
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="global gradient-norm clip; 0 disables")


class GRPOSpec(_Strict):
    clip_low: float = Field(0.2, ge=0, lt=1, description="ratio clipped below at 1 - clip_low")
    clip_high: float = Field(0.28, ge=0, description="ratio clipped above at 1 + clip_high")


class TrainSpec(_Strict):
    version: Literal[1] = 1
    repro_version: str = Field(REPRO_VERSION, description="version of the reproducibility contract")
    model_kind: Literal["llama", "policy"] = Field(
        "llama", description="llama: a language model (Hugging Face-format directory); policy: a repro.policy "
        "network (an assistant's), trained by behaviour cloning on a tensor dataset")
    model: str = Field(description="CID of the base model (a stored Hugging Face-format or policy directory)")
    dataset: DatasetSpec
    seq_len: int = Field(64, ge=2, le=8192, description="tokens per training sequence")
    steps: int = Field(ge=1, le=10_000_000, description="optimizer steps")
    global_batch: int = Field(ge=1, le=65536, description="sequences per optimizer step")
    lr: LRSpec = LRSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    optimizer_state: str | None = Field(
        None, description="CID of a stored AdamW state (a safetensors blob of both moments and the bias-correction "
        "powers, as train_job.store_optimizer_state writes from a run's final state) to start from instead of "
        "zeros; a swarm peer carries its own across rounds")
    seed: int = Field(0, ge=0, lt=2**64, description="seed of the data order")
    loss: Literal["lm", "grpo", "bc"] = Field(
        "lm", description="next-token loss, GRPO on a rollout dataset, or bc (behaviour cloning: the policy's heads' "
        "cross-entropy)")
    grpo: GRPOSpec = GRPOSpec()
    checkpoint_every: int = Field(10, ge=1, description="steps between checkpoints")

    @field_validator("model", "optimizer_state")
    @classmethod
    def _cid(cls, v: str | None) -> str | None:
        if v is not None and not is_cid(v):
            raise ValueError("must be a CID: sha256:<64 lower-case hex>")
        return v

    @field_validator("repro_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != REPRO_VERSION:
            raise ValueError(f"this build implements repro version {REPRO_VERSION!r}, not {v!r}")
        return v

    @model_validator(mode="after")
    def _loss_fits_model_and_data(self):
        if self.loss == "grpo" and self.dataset.kind != "cid":
            raise ValueError("loss 'grpo' needs a rollout dataset (dataset.kind: cid)")
        if self.model_kind == "policy" and (self.loss != "bc" or self.dataset.kind != "tensors"):
            raise ValueError("model_kind 'policy' trains with loss 'bc' on dataset.kind 'tensors'")
        if self.model_kind == "llama" and (self.loss == "bc" or self.dataset.kind == "tensors"):
            raise ValueError("loss 'bc' and dataset.kind 'tensors' are for model_kind 'policy'")
        if self.model_kind == "policy" and self.optimizer_state is not None:
            raise ValueError("optimizer_state is for model_kind 'llama'")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(spec)"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown field")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_spec(data: dict) -> TrainSpec:
    if not isinstance(data, dict):
        raise SpecError("a spec is a mapping of fields (YAML or JSON object)")
    try:
        return TrainSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(f"invalid spec: {_describe(e)}") from None


def load_spec(path: Path) -> TrainSpec:
    try:
        data = yaml.safe_load(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpecError(f"{path} is not valid YAML: {e}") from None
    return parse_spec(data)


def example_spec(model: str, steps: int = 20, pretrained: bool = False) -> TrainSpec:
    """A valid spec on the built-in arithmetic data; a bad argument is a SpecError naming it.

    `pretrained`: fine-tune (peak learning rate 1e-4); otherwise the rate that teaches a small
    random model something in a few steps (3e-3), which knocks a pretrained model's loss up
    (SmolLM2's went from 2 to 9.5 by step 4)."""
    lr = {"peak": 1e-4, "min_lr": 1e-5} if pretrained else {"peak": 3e-3, "min_lr": 3e-4}
    return parse_spec({
        "model": model,
        "dataset": {"kind": "synthetic", "name": "arithmetic"},
        "seq_len": 64,
        "steps": steps,
        "global_batch": 8,
        "lr": {**lr, "warmup_steps": 2, "schedule": "linear"},
        "seed": 0,
        "checkpoint_every": 5,
    })
