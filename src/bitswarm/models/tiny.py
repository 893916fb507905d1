"""Tiny random Llama-family models with a byte-level tokenizer, for tests that must run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Small enough for a training step in milliseconds, yet with every feature SmolLM2 uses:
# grouped-query attention (4 query heads share 2 KV heads), SwiGLU, RMSNorm, RoPE, tied embeddings.
TINY = dict(
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)
# A second size with a different shape everywhere (4 query heads per KV head, 4 layers), so
# tests that must hold "on two model sizes" do not share one set of dimensions.
SMALL = dict(TINY, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2)
INIT_STD = 0.02
SIZES = {"tiny": TINY, "small": SMALL}


def build_tokenizer():
    """Byte-level tokenizer: 3 special tokens, then one token per byte; no merges, no training data."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # alphabet() is a set; order it by byte value so the ids never depend on hashing.
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet(), key=_byte_of)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in byte_chars:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=TINY["max_position_embeddings"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _byte_of(ch: str) -> int:
    # Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256+n.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    if ord(ch) in printable:
        return ord(ch)
    others = [b for b in range(256) if b not in printable]
    return others[ord(ch) - 256]


def init_model(size: str, seed: int, out_dir: Path) -> None:
    """Write a randomly initialised model + tokenizer; the same (size, seed) gives the same bytes.

    Weights come from numpy's PCG64 in sorted parameter-name order (N(0, 0.02); norms = 1), so
    they do not depend on torch's RNG implementation, the thread count or the platform.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **SIZES[size],
    )
    model = LlamaForCausalLM(config)
    rng = np.random.Generator(np.random.PCG64(seed))
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                values = np.ones(tuple(param.shape), dtype=np.float32)
            else:
                values = rng.normal(0.0, INIT_STD, size=tuple(param.shape)).astype(np.float32)
            param.copy_(torch.from_numpy(values))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
