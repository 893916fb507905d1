"""A Llama-family decoder built only from repro ops, with its explicit backward pass.

The same code runs on every backend (`backend.get_backend`): the numpy reference, the numba
kernels, or plain torch (`native`). Elementwise arithmetic between ops is plain numpy float32,
which is one correctly rounded operation per element on every platform. Orders that matter:

- Linear y = x @ W^T: per output one fma chain over input features (matmul). Backward:
  dx = dy @ W (chain over output features); dW continues its chain over tokens in order.
- Attention per (sequence, head): s = (q · k chain over head_dim) * scale, masked to -inf above
  the diagonal, softmax over the row, o = P @ V (chain over key positions). Masked entries are
  exact zeros, so decoding with a KV cache gives the same bits as a full forward.
- Batched decoding (rows of different lengths in one `KVCache`): row r's new tokens sit at its
  own positions lengths[r], lengths[r] + 1, ... RoPE is elementwise per (token, head, dim), so
  it runs on the tokens flattened to rows with the cos/sin rows gathered per token. Attention
  runs over the padded cache, the slots past a row's own positions scored -inf: the row max
  ignores them, exp(-inf - m) = +0 adds nothing to the sum, and in P @ V their terms are
  +0 * -0 (padded values are -0) = -0, and acc + -0 = acc for every acc (also +-0). Every op is
  row-local, so each row's logits are the bits of decoding that sequence alone.
- Packed prefill (`Llama.prefill`): several prompts' tokens form one block of rows for the
  row-local ops, each token at its own position; attention and the KV cache stay per prompt, so
  each prompt gets the bits of its prefill alone.
- GQA: key/value gradients of a KV head accumulate over its query heads in increasing order.
- Tied embeddings: the lm_head and the embedding lookup keep separate gradient accumulators,
  added once at the end of the step, so micro-batching cannot reorder either chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np

from bitswarm.repro.config import LlamaConfig

F32 = np.float32


class KVCache:
    """Keys (after RoPE) and values per layer, for `Llama.forward` to extend.

    Per layer one preallocated buffer (rows, kv_heads, capacity, head_dim) per tensor, grown by
    doubling; row r holds `lengths[r]` positions. Rows may differ in length (requests decoding
    together): slots past a row's length hold +0 keys and -0 values, which attention masks (see
    the module docstring). `capacity` only sizes the first buffer; it never changes a value.
    """

    def __init__(self, capacity: int = 0):
        self.k: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lengths: np.ndarray | None = None  # (rows,) int64, set by the first forward
        self._capacity = capacity

    @property
    def rows(self) -> int:
        return 0 if self.lengths is None else int(self.lengths.shape[0])

    @property
    def ragged(self) -> bool:
        return self.lengths is not None and bool(np.any(self.lengths != self.lengths[0]))

    @property
    def length(self) -> int:
        """The number of cached positions, shared by every row."""
        if self.lengths is None or self.lengths.size == 0:
            return 0
        if self.ragged:
            raise ValueError("the cache's rows have different lengths; see `lengths`")
        return int(self.lengths[0])

    def _buffers(self, rows: int, hkv: int, capacity: int, dh: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((rows, hkv, capacity, dh), F32), np.full((rows, hkv, capacity, dh), -0.0, F32)

    def _write(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store k, v (rows, kv_heads, t, head_dim) at each row's next positions; returns views of
        this layer's keys and values over positions 0 .. max(lengths) + t - 1."""
        b, hkv, t, dh = k.shape
        lengths = np.zeros(b, np.int64) if self.lengths is None else self.lengths
        need = int(lengths.max(initial=0)) + t
        if len(self.k) <= layer:
            self.k.append(None), self.v.append(None)
            kb, vb = self._buffers(b, hkv, max(need, self._capacity), dh)
        else:
            kb, vb = self.k[layer], self.v[layer]
            if kb.shape[2] < need:
                old = kb.shape[2]
                kb2, vb2 = self._buffers(b, hkv, max(need, 2 * old), dh)
                kb2[:, :, :old], vb2[:, :, :old] = kb, vb
                kb, vb = kb2, vb2
        if b and bool(np.all(lengths == lengths[0])):
            start = int(lengths[0])
            kb[:, :, start:start + t], vb[:, :, start:start + t] = k, v
        else:
            rows = np.arange(b)[:, None]
            pos = lengths[:, None] + np.arange(t)[None, :]  # (b, t): index shape, then (hkv, dh)
            kb[rows, :, pos], vb[rows, :, pos] = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        self.k[layer], self.v[layer] = kb, vb
        return kb[:, :, :need], vb[:, :, :need]

    def _advance(self, b: int, t: int) -> None:
        self.lengths = np.full(b, t, np.int64) if self.lengths is None else self.lengths + t

    def select(self, rows) -> None:
        """Keep only these rows, in this order (the others leave the batch)."""
        rows = np.asarray(rows, np.int64)
        if self.lengths is None:
            raise ValueError("an empty cache has no rows to select")
        self.lengths = self.lengths[rows]
        self.k = [kb[rows] for kb in self.k]
        self.v = [vb[rows] for vb in self.v]

    @classmethod
    def stack(cls, caches: list[KVCache], capacity: int = 0) -> KVCache:
        """One cache holding the rows of `caches` in order (copies; the inputs are unchanged)."""
        caches = [c for c in caches if c.rows]
        out = cls()
        if not caches:
            return out
        layers = len(caches[0].k)
        if any(len(c.k) != layers for c in caches):
            raise ValueError("caches of different models cannot be stacked")
        out.lengths = np.concatenate([c.lengths for c in caches])
        b, longest = out.rows, int(out.lengths.max())
        cap = max(capacity, longest)
        for i in range(layers):
            _, hkv, _, dh = caches[0].k[i].shape
            kb, vb = out._buffers(b, hkv, cap, dh)
            r = 0
            for c in caches:
                n, m = c.rows, int(c.lengths.max())
                kb[r:r + n, :, :m], vb[r:r + n, :, :m] = c.k[i][:, :, :m], c.v[i][:, :, :m]
                r += n
            out.k.append(kb), out.v.append(vb)
        return out


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
        # name -> (weight, its decode form), only inside `decoding()`
        self._decode_weights: dict[str, tuple[np.ndarray, object]] | None = None

    # -- helpers ------------------------------------------------------------------------

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        w = self.params[name]
        if self._decode_weights is None:
            return self.B.matmul(x, w.T)
        made = self._decode_weights.get(name)
        if made is None or made[0] is not w:
            made = self._decode_weights[name] = (w, self.B.decode_weight(w))
        return self.B.matmul(x, made[1])

    def _linears(self, x: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
        """x @ W.T for several weights read by the same x. While decoding, one matmul over the
        weights stacked by rows (q, k, v; gate, up): each output is still its own fma chain over
        the same k, so the bits are those of separate matmuls, with 90 fewer calls per SmolLM2
        token (each a dispatch, a NaN scan and a thread-pool wake). Otherwise separate calls in
        `names` order: the op sequence that traces and disputes index stays as it was."""
        if self._decode_weights is None:
            return [self._linear(x, n) for n in names]
        ws = [self.params[n] for n in names]
        key = "+".join(names)
        made = self._decode_weights.get(key)
        if made is None or any(a is not b for a, b in zip(made[0], ws)):
            made = self._decode_weights[key] = (ws, self.B.decode_weight(np.concatenate(ws)))
        y = self.B.matmul(x, made[1])
        cuts = np.cumsum([w.shape[0] for w in ws])[:-1]
        return [np.ascontiguousarray(part) for part in np.split(y, cuts, axis=1)]

    @contextmanager
    def decoding(self):
        """Linear layers read weights prepared for few-row products while inside (numba: packed
        into panels, `gemv.PackedWT`; same bits, about 2x the bandwidth); backends without
        `decode_weight` are unchanged.

        A prepared weight is a copy that does not follow in-place updates of the parameter, so it
        lives only as long as this context (`generate` holds it for one call, during which nothing
        trains the model) and is made again on the next entry: a stale copy cannot outlive the
        call that made it. Copies are also keyed on the parameter array itself, so a parameter
        replaced by another array is prepared anew. Do not update parameters inside."""
        if getattr(self.B, "decode_weight", None) is None or self._decode_weights is not None:
            yield  # nothing to prepare, or an outer context owns the copies
            return
        self._decode_weights = {}
        try:
            yield
        finally:
            self._decode_weights = None

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

    def _rope_rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos/sin rows for any positions (N,), gathered from the same tables as `_rope`."""
        self._rope(0, int(positions.max()) + 1)
        cos, sin = self._rope_tables
        return cos[positions], sin[positions]

    def _rotate(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, per_token: bool) -> np.ndarray:
        """RoPE of x (b, t, heads, head_dim): with shared positions the tables have t rows (one
        per position, the same for every batch row); per token they have b*t rows and x is
        rotated as (b*t, heads, head_dim), the same elementwise ops on every element."""
        if not per_token:
            return self.B.rope_fwd(x, cos, sin)
        b, t, h, dh = x.shape
        return self.B.rope_fwd(x.reshape(b * t, h, dh), cos, sin).reshape(b, t, h, dh)

    def _lm_head_name(self) -> str:
        return "model.embed_tokens.weight" if self.cfg.tie_word_embeddings else "lm_head.weight"

    # -- attention ----------------------------------------------------------------------

    def _attention(self, q, k, v, start):
        """q: (b, hq, t, dh); k, v: (b, hkv, s, dh) with s = start + t. Returns (o, probs).

        `start` may also be per-row lengths (b,) (a batch of decoding requests): then k, v hold
        s = max(start) + t positions per row and each row's slots past its own are masked."""
        if np.ndim(start):
            return self._ragged_attention(q, k, v, np.asarray(start, np.int64))
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

    def _ragged_attention(self, q, k, v, lengths: np.ndarray):
        """Attention of rows at their own positions: row r's query j sees key slots
        0 .. lengths[r] + j. The query heads of a KV head are the rows of one bmm against that
        KV head's keys (no repeated copy of the cache); every score and output is the same chain
        as in `_attention`, see the module docstring for why the padding changes no bit."""
        B = self.B
        b, hq, t, dh = q.shape
        hkv, s = k.shape[1], k.shape[2]
        group = hq // hkv
        scores = B.bmm(q.reshape(b * hkv, group * t, dh), k.reshape(b * hkv, s, dh).transpose(0, 2, 1)) * self.scale
        future = np.arange(s)[None, None, :] > (lengths[:, None, None] + np.arange(t)[None, :, None])  # (b, t, s)
        np.copyto(scores.reshape(b, hkv, group, t, s), F32(-np.inf), where=future[:, None, None])
        probs = B.softmax(scores.reshape(-1, s)).reshape(b * hkv, group * t, s)
        o = B.bmm(probs, v.reshape(b * hkv, s, dh)).reshape(b, hq, t, dh)
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

    def _check_context(self, end: int) -> None:
        if end > self.cfg.max_position_embeddings:
            raise ValueError(f"{end} positions exceed the model's context of {self.cfg.max_position_embeddings}")

    def _layer(self, i: int, x: np.ndarray, shape: tuple[int, int], rope: tuple, attend, keep: bool):
        """Decoder layer i over the token rows x (b*t, hidden), as (x_out, what backward needs).

        Everything but attention is row-local, so it runs on all rows at once. `rope` is
        (cos, sin, per_token) for `_rotate`; `attend(i, q, k, v)` takes q, k, v positions-first
        (b, t, heads, head_dim) after RoPE and returns (o2 (b*t, hidden), tape entries): the
        caller decides which rows attend to which (a batch in one cache, or packed prompts)."""
        B, cfg, P = self.B, self.cfg, self.params
        b, t = shape
        p = f"model.layers.{i}."
        h, rstd1 = B.rmsnorm_fwd(x, P[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q, k, v = self._linears(h, (p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                                    p + "self_attn.v_proj.weight"))
        q = self._rotate(q.reshape(b, t, cfg.num_heads, cfg.head_dim), *rope)
        k = self._rotate(k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim), *rope)
        # RoPE works on (batch, positions, heads, head_dim); attend makes heads-first copies
        o2, saved = attend(i, q, k, v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim))
        x_mid = x + self._linear(o2, p + "self_attn.o_proj.weight")
        h2, rstd2 = B.rmsnorm_fwd(x_mid, P[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        gate, up = self._linears(h2, (p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"))
        act = B.swiglu_fwd(gate, up)
        x_out = x_mid + self._linear(act, p + "mlp.down_proj.weight")
        if not keep:
            return x_out, None
        return x_out, dict(x=x, h=h, rstd1=rstd1, **saved, o2=o2, x_mid=x_mid, h2=h2, rstd2=rstd2,
                           gate=gate, up=up, act=act)

    def _head(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, normed rows, their rstd) of the final norm and LM head over the rows x."""
        hf, rstd = self.B.rmsnorm_fwd(x, self.params["model.norm.weight"], self.cfg.rms_norm_eps)
        return self._linear(hf, self._lm_head_name()), hf, rstd

    def forward(self, ids: np.ndarray, cache: KVCache | None = None, keep: bool = False):
        """Logits (b*t, vocab) for token ids (b, t); `keep` records what backward needs.

        With a cache, row r's tokens continue at its position cache.lengths[r] (rows may differ:
        a batch of requests decoding together), and the cache grows by t positions per row."""
        B, cfg, P = self.B, self.cfg, self.params
        ids = np.asarray(ids, dtype=np.int64)
        b, t = ids.shape
        lengths = cache.lengths if cache is not None else None
        if lengths is not None and lengths.shape[0] != b:
            raise ValueError(f"{b} rows of ids for a cache of {lengths.shape[0]} rows")
        per_row = lengths is not None and cache.ragged
        if per_row and keep:
            raise ValueError("keep (training) needs one position for all rows")
        start = lengths if per_row else (cache.length if cache is not None else 0)
        self._check_context(int(np.max(start)) + t)
        if per_row:
            cos, sin = self._rope_rows((lengths[:, None] + np.arange(t)[None, :]).reshape(-1))
        else:
            cos, sin = self._rope(start, t)
        tape: dict = {"ids": ids, "layers": []} if keep else {}

        def attend(i, q, k, v):  # the batch's rows attend at their positions in the cache
            q, k, v = _swap_heads_positions(q), _swap_heads_positions(k), _swap_heads_positions(v)
            k_all, v_all = cache._write(i, k, v) if cache is not None else (k, v)
            o, probs = self._attention(q, k_all, v_all, start)
            return _merge_heads(o), {"q": q, "k": k, "v": v, "probs": probs}

        x = B.embedding_fwd(ids.reshape(-1), P["model.embed_tokens.weight"])
        for i in range(cfg.num_layers):
            x, saved = self._layer(i, x, (b, t), (cos, sin, per_row), attend, keep)
            if keep:
                tape["layers"].append(saved)
        if cache is not None:
            cache._advance(b, t)
        logits, hf, rstd = self._head(x)
        if keep:
            tape |= dict(x_final=x, hf=hf, rstd=rstd, b=b, t=t)
        return logits, tape

    def prefill(self, prompts: Sequence[Sequence[int]], caches: Sequence[KVCache]) -> np.ndarray:
        """Logits (len(prompts), vocab) of each prompt's last position, all prompts in one pass;
        caches[i] (empty) receives prompt i's keys and values.

        The prompts' tokens are packed into one block of rows for every row-local op (embedding,
        norms, linears, RoPE at each token's own position 0..len-1, swiglu), so the linears run
        once on many rows instead of once per prompt. Attention runs per prompt on its own slice,
        the same `_attention` call as `forward` of that prompt alone, and the final norm and LM
        head only on each prompt's last row. Every op is row-local or per prompt, so row i and
        caches[i] hold the bits of `forward([prompts[i]], cache=KVCache())[0][-1]` and its cache:
        a prompt's result never depends on the others it is packed with."""
        if len(prompts) != len(caches) or not prompts:
            raise ValueError("one cache per prompt, and at least one prompt")
        if any(c.rows for c in caches) or len({id(c) for c in caches}) < len(caches):
            raise ValueError("prefill writes into empty caches, a different one per prompt")
        lens = [len(p) for p in prompts]
        if min(lens) < 1:
            raise ValueError("an empty prompt has no position to predict from")
        self._check_context(max(lens))
        ends = np.cumsum(lens)
        spans = list(zip(ends - lens, ends))
        ids = np.concatenate([np.asarray(p, np.int64) for p in prompts])
        positions = np.concatenate([np.arange(n) for n in lens])
        rope = (*self._rope_rows(positions), True)

        def attend(i, q, k, v):  # q, k, v: (1, tokens, heads, head_dim); each prompt alone
            outs = []
            for (s, e), cache in zip(spans, caches):
                qi, ki, vi = (_swap_heads_positions(a[:, s:e]) for a in (q, k, v))
                k_all, v_all = cache._write(i, ki, vi)
                outs.append(_merge_heads(self._attention(qi, k_all, v_all, 0)[0]))
            return np.concatenate(outs), {}

        x = self.B.embedding_fwd(ids, self.params["model.embed_tokens.weight"])
        for i in range(self.cfg.num_layers):
            x, _ = self._layer(i, x, (1, len(ids)), rope, attend, keep=False)
        for cache, n in zip(caches, lens):
            cache._advance(1, n)
        return self._head(x[ends - 1])[0]

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
