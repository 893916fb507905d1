"""Training data for jobs: which sequences step s trains on, decided only by (seed, s).

Sequence i of step s is example `integers(seed, stream=s, n=global_batch, high=len(dataset))[i]`
of repro's counter-based generator (purpose PURPOSE_DATA), so any verifier can rebuild any
step's batch without replaying the ones before it. Sequences are token ids of length seq_len
(right-padded with the pad id; padded positions carry no loss) plus next-token targets.

Synthetic `arithmetic`: sequence i of step s is "a+b=c\\n" problems with a, b in [0, 100)
drawn from the stream (seed, s, PURPOSE_DATA) at offset (global_batch + i * 2 * (seq_len + 1)),
concatenated, tokenized with the model's tokenizer and cut to seq_len + 1 tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from bitswarm.errors import BitswarmError
from bitswarm.repro.rng import integers
from bitswarm.repro.train import IGNORE, MicroBatch
from bitswarm.store import BlobStore

PURPOSE_DATA = 16
MAX_RECORD_TOKENS = 1 << 16  # token ids in one field of a grpo record: far above any seq_len we train at


class DatasetError(BitswarmError, ValueError):
    pass


@dataclass
class Example:
    ids: list[int]          # seq_len + 1 tokens for lm (input and shifted target)
    loss_from: int = 0      # first position of `ids` whose token is a target (grpo: completion start)
    advantage: float = 0.0
    logp_old: list[float] | None = None


def pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def to_micro_batch(examples: list[Example], seq_len: int, pad_id: int, grpo: bool) -> MicroBatch:
    m = len(examples)
    ids = np.full((m, seq_len), pad_id, np.int64)
    targets = np.full((m, seq_len), IGNORE, np.int64)
    adv = np.zeros(m, np.float32)
    # NaN marks "no recorded value": the trainer uses the current policy's there (ratio 1),
    # decided per token so that micro-batching never changes which values are used.
    logp_old = np.full((m, seq_len), np.nan, np.float32) if grpo else None
    for r, e in enumerate(examples):
        toks = e.ids[: seq_len + 1]
        n = len(toks) - 1
        ids[r, : min(len(toks), seq_len)] = toks[:seq_len]
        for pos in range(n):
            if pos + 1 >= e.loss_from:
                targets[r, pos] = toks[pos + 1]
        adv[r] = e.advantage
        if logp_old is not None and e.logp_old is not None:
            lp = e.logp_old
            for pos in range(n):
                k = pos + 1 - e.loss_from
                if 0 <= k < len(lp):
                    logp_old[r, pos] = lp[k]
    return MicroBatch(ids=ids, targets=targets, advantages=adv if grpo else None, logp_old=logp_old)


class ArithmeticData:
    def __init__(self, tok, seq_len: int, global_batch: int, seed: int):
        self.tok, self.seq_len, self.global_batch, self.seed = tok, seq_len, global_batch, seed

    def examples(self, step: int) -> list[Example]:
        per_seq = 2 * (self.seq_len + 1)
        out = []
        for i in range(self.global_batch):
            nums = integers(self.seed, step, per_seq, 100, offset=self.global_batch + i * per_seq,
                            purpose=PURPOSE_DATA)
            text, ids = "", []
            for j in range(0, per_seq, 2):
                a, b = int(nums[j]), int(nums[j + 1])
                text += f"{a}+{b}={a + b}\n"
                ids = self.tok(text, add_special_tokens=False)["input_ids"]
                if len(ids) >= self.seq_len + 1:
                    break
            out.append(Example(ids=ids[: self.seq_len + 1]))
        return out


class JsonlData:
    """A stored JSONL blob: {"text"} lines for lm; for grpo {"prompt", "completion", "advantage"
    [, "logp_old"]}, or the same with token id lists "prompt_ids" and "completion_ids" instead of text."""

    def __init__(self, store: BlobStore, cid: str, tok, seq_len: int, global_batch: int, seed: int, grpo: bool,
                 order: str = "sampled"):
        self.tok, self.seq_len, self.global_batch, self.seed, self.grpo = tok, seq_len, global_batch, seed, grpo
        self.order = order
        raw = store.read_bytes(cid)
        self.records = []
        for n, line in enumerate(raw.decode("utf-8", errors="strict").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise DatasetError(f"dataset {cid} line {n} is not JSON: {e}") from None
            self.records.append(self._check(rec, n, cid))
        if not self.records:
            raise DatasetError(f"dataset {cid} has no records")

    def _check(self, rec, n: int, cid: str) -> Example:
        where = f"dataset {cid} line {n}"
        if not isinstance(rec, dict):
            raise DatasetError(f"{where}: each line must be a JSON object")
        if not self.grpo:
            if not isinstance(rec.get("text"), str):
                raise DatasetError(f"{where}: an lm record needs a string field 'text'")
            return Example(ids=self.tok(rec["text"], add_special_tokens=False)["input_ids"])
        if not isinstance(rec.get("advantage"), (int, float)) or isinstance(rec.get("advantage"), bool):
            raise DatasetError(f"{where}: a grpo record needs a number 'advantage'")
        if "prompt_ids" in rec or "completion_ids" in rec:
            # The tokens exactly as the policy saw and sampled them (end of turn included): text
            # re-tokenized can differ from what was generated, and decoding drops special tokens.
            p, c = (self._token_ids(rec.get(key), key, where) for key in ("prompt_ids", "completion_ids"))
        else:
            for key in ("prompt", "completion"):
                if not isinstance(rec.get(key), str):
                    raise DatasetError(f"{where}: a grpo record needs string fields 'prompt' and 'completion', "
                                       f"or token id lists 'prompt_ids' and 'completion_ids' (no '{key}' here)")
            p = self.tok(rec["prompt"], add_special_tokens=False)["input_ids"]
            c = self.tok(rec["completion"], add_special_tokens=False)["input_ids"]
        lp = rec.get("logp_old")
        if lp is not None and (not isinstance(lp, list) or len(lp) != len(c)):
            raise DatasetError(f"{where}: 'logp_old' must list one number per completion token ({len(c)})")
        return Example(ids=p + c, loss_from=len(p), advantage=float(rec["advantage"]), logp_old=lp)

    def _token_ids(self, value, key: str, where: str) -> list[int]:
        vocab = len(self.tok)
        if (not isinstance(value, list) or not value or len(value) > MAX_RECORD_TOKENS
                or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in value)):
            raise DatasetError(f"{where}: '{key}' must be a list of 1 to {MAX_RECORD_TOKENS} token ids, each an "
                               f"integer from 0 to {vocab - 1} (this model's vocabulary)")
        return value

    def examples(self, step: int) -> list[Example]:
        if self.order == "sequential":
            n = len(self.records)
            return [self.records[(step * self.global_batch + i) % n] for i in range(self.global_batch)]
        idx = integers(self.seed, step, self.global_batch, len(self.records), purpose=PURPOSE_DATA)
        return [self.records[int(i)] for i in idx]


# A tensor dataset (policy training) is one stored safetensors blob: 'inputs' (N, active) integer
# feature ids and 'targets.<head>' (N, rows) integer class ids (IGNORE: no target). Examples are
# drawn exactly as JSONL records are (sampled by (seed, step), or sequential).
MAX_TENSOR_DATASET = 1 << 30


class TensorData:
    def __init__(self, store: BlobStore, cid: str, heads: dict[str, tuple[int, int]], active: int, features: int,
                 global_batch: int, seed: int, order: str = "sampled"):
        from safetensors import SafetensorError
        from safetensors.numpy import load

        self.global_batch, self.seed, self.order = global_batch, seed, order
        if store.size(cid) > MAX_TENSOR_DATASET:
            raise DatasetError(f"tensor dataset {cid} is over {MAX_TENSOR_DATASET >> 20} MiB")
        try:
            t = load(store.read_bytes(cid))
        except (SafetensorError, ValueError) as e:
            raise DatasetError(f"dataset {cid} is not a safetensors tensor dataset: {e}") from None
        x = t.get("inputs")
        if x is None or x.ndim != 2 or x.shape[1] != active or x.dtype.kind not in "iu" or not len(x):
            raise DatasetError(f"dataset {cid}: 'inputs' must be integer feature ids of shape (N > 0, {active})")
        if x.min() < -1 or x.max() >= features:
            raise DatasetError(f"dataset {cid}: feature ids must lie in -1..{features - 1}")
        self.inputs = x.astype(np.int64)
        self.targets = {}
        for name, (rows, classes) in heads.items():
            y = t.get(f"targets.{name}")
            if y is None or y.shape != (len(x), rows) or y.dtype.kind not in "iu":
                raise DatasetError(f"dataset {cid}: 'targets.{name}' must be integers of shape ({len(x)}, {rows})")
            y = y.astype(np.int64)
            if ((y != IGNORE) & ((y < 0) | (y >= classes))).any():
                raise DatasetError(f"dataset {cid}: 'targets.{name}' must lie in 0..{classes - 1} or {IGNORE}")
            self.targets[name] = y
        unknown = set(t) - {"inputs"} - {f"targets.{h}" for h in heads}
        if unknown:
            raise DatasetError(f"dataset {cid} holds tensors the model has no head for: {', '.join(sorted(unknown))}")

    def __len__(self) -> int:
        return len(self.inputs)

    def indices(self, step: int) -> np.ndarray:
        n = len(self.inputs)
        if self.order == "sequential":
            return (step * self.global_batch + np.arange(self.global_batch)) % n
        return integers(self.seed, step, self.global_batch, n, purpose=PURPOSE_DATA).astype(np.int64)
