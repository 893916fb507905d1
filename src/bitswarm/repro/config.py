"""The Llama-family architecture numbers repro needs, read from a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bitswarm.errors import BitswarmError


class ModelConfigError(BitswarmError, ValueError):
    """A config.json repro cannot run; the message names the field."""


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int

    @classmethod
    def from_dict(cls, cfg: dict) -> "LlamaConfig":
        if cfg.get("model_type") != "llama":
            raise ModelConfigError(f"model_type {cfg.get('model_type')!r} is not 'llama'")
        for flag in ("attention_bias", "mlp_bias"):
            if cfg.get(flag):
                raise ModelConfigError(f"{flag}=true is not supported by the repro Llama")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ModelConfigError(f"hidden_act {cfg.get('hidden_act')!r} is not 'silu'")
        rope = cfg.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", (cfg.get("rope_scaling") or {}).get("rope_type", "default"))
        if rope_type != "default":
            raise ModelConfigError(f"rope_type {rope_type!r} is not supported (only 'default')")
        try:
            heads = int(cfg["num_attention_heads"])
            c = cls(
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=int(cfg["hidden_size"]),
                intermediate_size=int(cfg["intermediate_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            )
        except KeyError as e:
            raise ModelConfigError(f"config.json lacks {e.args[0]!r}") from None
        if c.num_heads % c.num_kv_heads:
            raise ModelConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if c.head_dim % 2:
            raise ModelConfigError("head_dim must be even for rotary embeddings")
        return c

    @classmethod
    def from_dir(cls, path: Path) -> "LlamaConfig":
        return cls.from_dict(json.loads((Path(path) / "config.json").read_text("utf-8")))

    def as_dict(self) -> dict:
        return asdict(self)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every trainable tensor by its Hugging Face name, in canonical (sorted) order."""
        D, F, V = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (V, D)
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            shapes |= {
                p + "input_layernorm.weight": (D,),
                p + "post_attention_layernorm.weight": (D,),
                p + "self_attn.q_proj.weight": (q, D),
                p + "self_attn.k_proj.weight": (kv, D),
                p + "self_attn.v_proj.weight": (kv, D),
                p + "self_attn.o_proj.weight": (D, q),
                p + "mlp.gate_proj.weight": (F, D),
                p + "mlp.up_proj.weight": (F, D),
                p + "mlp.down_proj.weight": (D, F),
            }
        return dict(sorted(shapes.items()))
