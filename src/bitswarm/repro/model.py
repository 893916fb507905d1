"""A Llama-family decoder built only from repro ops, with its explicit backward pass.

The same code runs on every backend (`backend.get_backend`): the numpy reference, the numba
kernels, or plain torch (`native`). Elementwise arithmetic between ops is plain numpy float32,
which is one correctly rounded operation per element on every platform. Orders that matter:

- Linear y = x @ W^T: per output one fma chain over input features (matmul). Backward:
  dx = dy @ W (chain over output features); dW continues its chain over tokens in order.
- Attention per (sequence, head): s = (q · k chain over head_dim) * scale, masked to -inf above
  the diagonal, softmax over the row, o = P @ V (chain over key positions). Masked entries are
  exact zeros, so decoding with a KV cache gives the same bits as a full forward.
- GQA: key/value gradients of a KV head accumulate over its query heads in increasing order.
- Tied embeddings: the lm_head and the embedding lookup keep separate gradient accumulators,
  added once at the end of the step, so micro-batching cannot reorder either chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bitswarm.repro.config import LlamaConfig

F32 = np.float32


@dataclass
class KVCache:
    """Keys and values (after RoPE) per layer: (batch, kv_heads, positions, head_dim)."""

    k: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.k[0].shape[2] if self.k else 0


def _swap_heads_positions(x: np.ndarray) -> np.ndarray:
    """(b, t, h, dh) <-> (b, h, t, dh), as a contiguous copy (RoPE is positions-first,
    attention heads-first)."""
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3))


def _merge_heads(x: np.ndarray) -> np.ndarray:
    b, h, t, dh = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(b * t, h * dh))


class Llama:
    def __init__(self, cfg: LlamaConfig, params: dict[str, np.ndarray], backend):
        self.cfg, self.params, self.B = cfg, params, backend
        self.scale = F32(1) / np.sqrt(F32(cfg.head_dim))
        self._rope_tables: tuple[np.ndarray, np.ndarray] | None = None  # grown on demand

    # -- helpers ------------------------------------------------------------------------

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return self.B.matmul(x, self.params[name].T)

    def _linear_bwd(self, dy: np.ndarray, x: np.ndarray, name: str, grads) -> np.ndarray:
        if grads is not None:
            self.B.matmul_acc(dy.T, x, grads[name])
        return self.B.matmul(dy, self.params[name])

    def _rope(self, start: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin rows for positions start..start+t-1. The table grows by doubling (up to the
        context length), so decoding does not rebuild it for every new token; each row depends
        only on its position, so the size never changes a value."""
        need = start + t
        have = self._rope_tables
        if have is None or have[0].shape[0] < need:
            size = 0 if have is None else have[0].shape[0]
            n = max(need, min(max(2 * size, 64), self.cfg.max_position_embeddings))
            have = self.B.rope_tables(np.arange(n, dtype=np.int64), self.cfg.head_dim, self.cfg.rope_theta)
            self._rope_tables = have
        return have[0][start:need], have[1][start:need]

    def _lm_head_name(self) -> str:
        return "model.embed_tokens.weight" if self.cfg.tie_word_embeddings else "lm_head.weight"

    # -- attention ----------------------------------------------------------------------

    def _attention(self, q, k, v, start: int):
        """q: (b, hq, t, dh); k, v: (b, hkv, s, dh) with s = start + t. Returns (o, probs)."""
        B, cfg = self.B, self.cfg
        b, hq, t, dh = q.shape
        s = k.shape[2]
        group = cfg.num_heads // cfg.num_kv_heads
        kk = np.repeat(k, group, axis=1).reshape(b * hq, s, dh)
        vv = np.repeat(v, group, axis=1).reshape(b * hq, s, dh)
        scores = B.bmm(q.reshape(b * hq, t, dh), kk.transpose(0, 2, 1)) * self.scale
        future = np.arange(s)[None, :] > (start + np.arange(t))[:, None]
        scores[:, future] = -np.inf
        probs = B.softmax(scores.reshape(b * hq * t, s)).reshape(b * hq, t, s)
        o = B.bmm(probs, vv).reshape(b, hq, t, dh)
        return o, probs

    def _attention_bwd(self, do, q, k, v, probs):
        B, cfg = self.B, self.cfg
        b, hq, t, dh = q.shape
        hkv, group = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads
        do3 = do.reshape(b * hq, t, dh)
        vv = np.repeat(v, group, axis=1).reshape(b * hq, t, dh)
        kk = np.repeat(k, group, axis=1).reshape(b * hq, t, dh)
        dp = B.bmm(do3, vv.transpose(0, 2, 1))
        rowdot = B.row_dot(dp.reshape(-1, t), probs.reshape(-1, t)).reshape(b * hq, t, 1)
        ds = (probs * (dp - rowdot)) * self.scale
        dq = B.bmm(ds, kk).reshape(b, hq, t, dh)
        # KV-head-major so that each accumulator dk[kvh] is contiguous
        dk = np.zeros((hkv, b, t, dh), F32)
        dv = np.zeros((hkv, b, t, dh), F32)
        ds4, p4, q4 = ds.reshape(b, hq, t, t), probs.reshape(b, hq, t, t), q
        do4 = do3.reshape(b, hq, t, dh)
        for kvh in range(hkv):
            for g in range(group):  # query heads of this KV head, in increasing order
                h = kvh * group + g
                B.bmm_acc(ds4[:, h].transpose(0, 2, 1), q4[:, h], dk[kvh])
                B.bmm_acc(p4[:, h].transpose(0, 2, 1), do4[:, h], dv[kvh])
        return dq, np.ascontiguousarray(dk.transpose(1, 0, 2, 3)), np.ascontiguousarray(dv.transpose(1, 0, 2, 3))

    # -- forward / backward -------------------------------------------------------------

    def forward(self, ids: np.ndarray, cache: KVCache | None = None, keep: bool = False):
        """Logits (b*t, vocab) for token ids (b, t); `keep` records what backward needs."""
        B, cfg, P = self.B, self.cfg, self.params
        ids = np.asarray(ids, dtype=np.int64)
        b, t = ids.shape
        start = cache.length if cache is not None else 0
        if start + t > cfg.max_position_embeddings:
            raise ValueError(
                f"{start + t} positions exceed the model's context of {cfg.max_position_embeddings}"
            )
        cos, sin = self._rope(start, t)
        tape: dict = {"ids": ids, "layers": []} if keep else {}
        x = B.embedding_fwd(ids.reshape(-1), P["model.embed_tokens.weight"])
        for i in range(cfg.num_layers):
            p = f"model.layers.{i}."
            h, rstd1 = B.rmsnorm_fwd(x, P[p + "input_layernorm.weight"], cfg.rms_norm_eps)
            # RoPE works on (batch, positions, heads, head_dim); attention on heads-first copies
            q = self._linear(h, p + "self_attn.q_proj.weight").reshape(b, t, cfg.num_heads, cfg.head_dim)
            k = self._linear(h, p + "self_attn.k_proj.weight").reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
            v = self._linear(h, p + "self_attn.v_proj.weight").reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
            q = _swap_heads_positions(B.rope_fwd(q, cos, sin))
            k = _swap_heads_positions(B.rope_fwd(k, cos, sin))
            v = _swap_heads_positions(v)
            if cache is not None:
                if len(cache.k) <= i:
                    cache.k.append(k), cache.v.append(v)
                else:
                    cache.k[i] = np.concatenate([cache.k[i], k], axis=2)
                    cache.v[i] = np.concatenate([cache.v[i], v], axis=2)
                k_all, v_all = cache.k[i], cache.v[i]
            else:
                k_all, v_all = k, v
            o, probs = self._attention(q, k_all, v_all, start)
            o2 = _merge_heads(o)
            x_mid = x + self._linear(o2, p + "self_attn.o_proj.weight")
            h2, rstd2 = B.rmsnorm_fwd(x_mid, P[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
            gate = self._linear(h2, p + "mlp.gate_proj.weight")
            up = self._linear(h2, p + "mlp.up_proj.weight")
            act = B.swiglu_fwd(gate, up)
            x_out = x_mid + self._linear(act, p + "mlp.down_proj.weight")
            if keep:
                tape["layers"].append(dict(x=x, h=h, rstd1=rstd1, q=q, k=k, v=v, probs=probs, o2=o2,
                                           x_mid=x_mid, h2=h2, rstd2=rstd2, gate=gate, up=up, act=act))
            x = x_out
        hf, rstd = B.rmsnorm_fwd(x, P["model.norm.weight"], cfg.rms_norm_eps)
        logits = self._linear(hf, self._lm_head_name())
        if keep:
            tape |= dict(x_final=x, hf=hf, rstd=rstd, b=b, t=t)
        return logits, tape

    def backward(self, tape: dict, dlogits: np.ndarray, grads: dict[str, np.ndarray]) -> None:
        """Accumulate parameter gradients of sum(dlogits * logits) into `grads` (in place).

        With tied embeddings `grads` must also hold "lm_head.weight" (a separate accumulator
        for the head's use of the embedding); `finish_grads` folds it in once per step.
        """
        B, cfg, P = self.B, self.cfg, self.params
        b, t = tape["b"], tape["t"]
        cos, sin = self._rope(0, t)
        # grads["lm_head.weight"] is the head's own accumulator even when the table is tied.
        B.matmul_acc(dlogits.T, tape["hf"], grads["lm_head.weight"])
        dhf = B.matmul(dlogits, P[self._lm_head_name()])
        dx = B.rmsnorm_bwd(dhf, tape["x_final"], P["model.norm.weight"], tape["rstd"], grads["model.norm.weight"])
        for i in reversed(range(cfg.num_layers)):
            p, L = f"model.layers.{i}.", tape["layers"][i]
            dact = self._linear_bwd(dx, L["act"], p + "mlp.down_proj.weight", grads)
            dgate, dup = B.swiglu_bwd(dact, L["gate"], L["up"])
            dh2 = self._linear_bwd(dgate, L["h2"], p + "mlp.gate_proj.weight", grads)
            dh2 = dh2 + self._linear_bwd(dup, L["h2"], p + "mlp.up_proj.weight", grads)
            dx_mid = dx + B.rmsnorm_bwd(dh2, L["x_mid"], P[p + "post_attention_layernorm.weight"],
                                        L["rstd2"], grads[p + "post_attention_layernorm.weight"])
            do2 = self._linear_bwd(dx_mid, L["o2"], p + "self_attn.o_proj.weight", grads)
            do = _swap_heads_positions(do2.reshape(b, t, cfg.num_heads, cfg.head_dim))
            dq, dk, dv = self._attention_bwd(do, L["q"], L["k"], L["v"], L["probs"])
            dq = B.rope_bwd(_swap_heads_positions(dq), cos, sin).reshape(b * t, -1)
            dk = B.rope_bwd(_swap_heads_positions(dk), cos, sin).reshape(b * t, -1)
            dh = self._linear_bwd(dq, L["h"], p + "self_attn.q_proj.weight", grads)
            dh = dh + self._linear_bwd(dk, L["h"], p + "self_attn.k_proj.weight", grads)
            dh = dh + self._linear_bwd(_merge_heads(dv), L["h"], p + "self_attn.v_proj.weight", grads)
            dx = dx_mid + B.rmsnorm_bwd(dh, L["x"], P[p + "input_layernorm.weight"], L["rstd1"],
                                        grads[p + "input_layernorm.weight"])
        B.embedding_bwd(tape["ids"].reshape(-1), dx, grads["model.embed_tokens.weight"])

    def zero_grads(self) -> dict[str, np.ndarray]:
        grads = {name: np.zeros_like(arr) for name, arr in self.params.items()}
        if self.cfg.tie_word_embeddings:
            grads["lm_head.weight"] = np.zeros_like(self.params["model.embed_tokens.weight"])
        return grads

    def finish_grads(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Fold the tied head's accumulator into the embedding's: one add per element."""
        if self.cfg.tie_word_embeddings:
            head = grads.pop("lm_head.weight")
            grads["model.embed_tokens.weight"] = head + grads["model.embed_tokens.weight"]
        return grads
