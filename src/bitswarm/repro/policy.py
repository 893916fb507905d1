"""A small policy network built only from repro ops: one-hot features, a SwiGLU layer, softmax heads.

It is the assistant's model (bitswarm.assist) and trains through the same loop, state hashes,
traces and disputes as the Llama: `train.train_step` calls `micro_batch_loss` below.

    x      (m, F)      one-hot of each example's active feature ids (exact 0/1 glue)
    z      (m, 2H)     matmul(x, w_in^T): per output one fma chain over the F features
    h      (m, H)      swiglu(z[:, :H], z[:, H:])
    head k (m, R*C)    matmul(h, w_k^T), read as m*R rows of C logits (R rows per example)

Loss per example: the cross-entropy of every head row that has a target (IGNORE: none), each
head's rows weighted `weight / R` (a head of R rows counts once however many rows it has).
The global loss is the mean over examples. Weight gradients chain over examples in order
(matmul_acc), so splitting a batch into micro-batches never changes a bit. The gradient into h
is one chain: the first head's product continued by every later head's (matmul_acc), heads in
config order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bitswarm.errors import BitswarmError

F32 = np.float32
IGNORE = -100
KIND = "bitswarm-policy"


class PolicyError(BitswarmError, ValueError):
    pass


@dataclass(frozen=True)
class Head:
    name: str
    rows: int      # rows of logits per example
    classes: int   # logits per row
    weight: float = 1.0


@dataclass(frozen=True)
class PolicyConfig:
    features: int            # size of the one-hot input
    active: int              # feature ids per example (-1 pads)
    hidden: int
    heads: tuple[Head, ...] = field(default_factory=tuple)

    def param_shapes(self) -> dict[str, tuple[int, int]]:
        shapes = {"w_in": (2 * self.hidden, self.features)}
        shapes |= {f"head.{h.name}": (h.rows * h.classes, self.hidden) for h in self.heads}
        return dict(sorted(shapes.items()))

    def to_dict(self) -> dict:
        return {"kind": KIND, "features": self.features, "active": self.active, "hidden": self.hidden,
                "heads": [asdict(h) for h in self.heads]}

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyConfig":
        if not isinstance(d, dict) or d.get("kind") != KIND:
            raise PolicyError(f"not a policy config (kind must be {KIND!r})")
        try:
            heads = tuple(Head(str(h["name"]), int(h["rows"]), int(h["classes"]), float(h.get("weight", 1.0)))
                          for h in d["heads"])
            cfg = cls(int(d["features"]), int(d["active"]), int(d["hidden"]), heads)
        except (KeyError, TypeError, ValueError) as e:
            raise PolicyError(f"policy config is malformed: {e!r}") from None
        if min(cfg.features, cfg.active, cfg.hidden) < 1 or not heads or any(
                h.rows < 1 or h.classes < 2 or not h.weight > 0 for h in heads):
            raise PolicyError("policy config needs features, active, hidden >= 1 and heads with rows >= 1, "
                              "classes >= 2 and a positive weight")
        if len({h.name for h in heads}) != len(heads):
            raise PolicyError("policy heads need distinct names")
        return cfg

    @classmethod
    def from_dir(cls, model_dir: Path) -> "PolicyConfig":
        try:
            return cls.from_dict(json.loads((Path(model_dir) / "config.json").read_text()))
        except (OSError, ValueError) as e:
            if isinstance(e, PolicyError):
                raise
            raise PolicyError(f"{model_dir} has no readable config.json: {e}") from None


def init_params(cfg: PolicyConfig, seed: int) -> dict[str, np.ndarray]:
    """Normal(0, 1/sqrt(fan_in)) from numpy's PCG64; the stored model's bytes are what count."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (rows, cols) in cfg.param_shapes().items():
        out[name] = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(F32)
    return out


@dataclass
class PolicyBatch:
    """inputs (m, active) feature ids (-1: none); targets[head] (m, rows) class ids or IGNORE."""

    inputs: np.ndarray
    targets: dict[str, np.ndarray]


class PolicyNet:
    def __init__(self, cfg: PolicyConfig, params: dict[str, np.ndarray], backend):
        self.cfg, self.params, self.B = cfg, params, backend
        want = cfg.param_shapes()
        for name, shape in want.items():
            if name not in params or params[name].shape != shape or params[name].dtype != F32:
                raise PolicyError(f"policy parameter {name} must be float32 of shape {shape}")

    def one_hot(self, inputs: np.ndarray) -> np.ndarray:
        ids = np.asarray(inputs)
        if ids.ndim != 2 or ids.shape[1] != self.cfg.active or not np.issubdtype(ids.dtype, np.integer):
            raise PolicyError(f"policy inputs must be integer feature ids of shape (m, {self.cfg.active})")
        if ids.size and (ids.min() < -1 or ids.max() >= self.cfg.features):
            raise PolicyError(f"feature ids must lie in -1..{self.cfg.features - 1}")
        x = np.zeros((ids.shape[0], self.cfg.features + 1), F32)  # last column takes the -1 pads
        np.put_along_axis(x, np.where(ids < 0, self.cfg.features, ids), F32(1), axis=1)
        return np.ascontiguousarray(x[:, : self.cfg.features])

    def forward(self, inputs: np.ndarray, keep: bool = False):
        """Logits per head, each (m * rows, classes); with `keep`, the tape for backward."""
        B, H = self.B, self.cfg.hidden
        x = self.one_hot(inputs)
        z = B.matmul(x, self.params["w_in"].T)
        gate, up = np.ascontiguousarray(z[:, :H]), np.ascontiguousarray(z[:, H:])
        h = B.swiglu_fwd(gate, up)
        logits = {hd.name: B.matmul(h, self.params[f"head.{hd.name}"].T).reshape(-1, hd.classes)
                  for hd in self.cfg.heads}
        return logits, ({"x": x, "gate": gate, "up": up, "h": h} if keep else None)

    def probabilities(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Per head (m, rows, classes) softmax probabilities."""
        logits, _ = self.forward(inputs)
        m = np.asarray(inputs).shape[0]
        return {hd.name: self.B.softmax(logits[hd.name]).reshape(m, hd.rows, hd.classes) for hd in self.cfg.heads}

    # -- training (called by repro.train.train_step) -----------------------------------------

    def zero_grads(self) -> dict[str, np.ndarray]:
        return {k: np.zeros_like(v) for k, v in self.params.items()}

    def finish_grads(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return grads

    def _counted(self, mb: PolicyBatch) -> np.ndarray:
        """Which examples have at least one target (the loss is the mean over them)."""
        has = np.zeros(mb.inputs.shape[0], bool)
        for hd in self.cfg.heads:
            has |= (self._targets(mb, hd) != IGNORE).any(axis=1)
        return has

    def loss_count(self, mb: PolicyBatch) -> int:
        return int(self._counted(mb).sum())

    def _targets(self, mb: PolicyBatch, hd: Head) -> np.ndarray:
        t = np.asarray(mb.targets.get(hd.name))
        m = mb.inputs.shape[0]
        if t.shape != (m, hd.rows) or not np.issubdtype(t.dtype, np.integer):
            raise PolicyError(f"targets for head {hd.name!r} must be integers of shape ({m}, {hd.rows})")
        bad = (t != IGNORE) & ((t < 0) | (t >= hd.classes))
        if bad.any():
            raise PolicyError(f"head {hd.name!r} targets must lie in 0..{hd.classes - 1} (or {IGNORE})")
        return t.astype(np.int64)

    def micro_batch_loss(self, mb: PolicyBatch, inv_n: np.float32, hp, grads: dict[str, np.ndarray]) -> np.ndarray:
        """Forward and backward of one micro-batch into `grads`; returns each counted example's loss."""
        B, m = self.B, mb.inputs.shape[0]
        logits, tape = self.forward(mb.inputs, keep=True)
        per_example = np.zeros(m, F32)
        dh = None
        for hd in self.cfg.heads:
            t = self._targets(mb, hd).reshape(-1)
            counted = t != IGNORE
            scale = F32(hd.weight) / F32(hd.rows)
            ce = B.cross_entropy_fwd(logits[hd.name], np.where(counted, t, -1))
            ce = np.where(counted, ce, F32(0)).astype(F32).reshape(m, hd.rows)
            per_example = (per_example + B.row_sum(ce) * scale).astype(F32)
            g = np.where(counted, inv_n * scale, F32(0)).astype(F32)
            dlogits = B.cross_entropy_bwd(logits[hd.name], np.where(counted, t, -1), g).reshape(m, -1)
            w = self.params[f"head.{hd.name}"]
            B.matmul_acc(np.ascontiguousarray(dlogits.T), tape["h"], grads[f"head.{hd.name}"])
            dh = B.matmul(dlogits, w) if dh is None else B.matmul_acc(dlogits, w, dh)
        dgate, dup = B.swiglu_bwd(dh, tape["gate"], tape["up"])
        dz = np.concatenate([dgate, dup], axis=1)
        B.matmul_acc(np.ascontiguousarray(dz.T), tape["x"], grads["w_in"])
        return per_example[self._counted(mb)]


def save_policy(cfg: PolicyConfig, params: dict[str, np.ndarray], out: Path) -> None:
    from bitswarm.repro.weights import save_params

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    save_params(params, out / "model.safetensors")


def load_policy_params(model_dir: Path, cfg: PolicyConfig) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = Path(model_dir) / "model.safetensors"
    if not path.exists():
        raise PolicyError(f"{model_dir} has no model.safetensors")
    t = load_file(str(path))
    params = {k: np.ascontiguousarray(v) for k, v in t.items()}
    for name, shape in cfg.param_shapes().items():
        if name not in params or params[name].shape != shape or params[name].dtype != F32:
            raise PolicyError(f"{path}: {name} must be float32 of shape {shape}")
    extra = set(params) - set(cfg.param_shapes())
    if extra:
        raise PolicyError(f"{path} holds unknown tensors: {', '.join(sorted(extra))}")
    return dict(sorted(params.items()))
