"""Tiny models: deterministic from their seed, Llama-family with GQA, byte-level tokenizer."""

import json

import pytest

from bitswarm.models import ModelError
from bitswarm.models.importer import init_model
from bitswarm.models.tiny import SPECIAL_TOKENS, build_tokenizer


def test_same_seed_same_cid_other_seed_other_cid(store, tiny_model_store):
    _, cid0 = tiny_model_store
    assert init_model(store, "tiny", 0) == cid0
    assert init_model(store, "tiny", 1) != cid0


def test_tiny_config_is_llama_with_grouped_query_attention(tiny_model_store):
    s, cid = tiny_model_store
    cfg = json.loads((s.checkout(cid) / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]
    assert cfg["vocab_size"] == len(SPECIAL_TOKENS) + 256
    assert s.label(cid) == "tiny-seed0"


def test_unknown_size(store):
    with pytest.raises(ModelError, match="unknown model size 'huge'; sizes: tiny, small"):
        init_model(store, "huge", 0)


@pytest.mark.parametrize("text", ["hello world", "ünïcödé ✓ 漢字", "", "line\nbreak\ttab", "<|im_end|> literal"])
def test_tokenizer_round_trips_any_text(text):
    tok = build_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_tokenizer_ids_are_bytes_after_specials():
    tok = build_tokenizer()
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2]
    assert tok("A", add_special_tokens=False)["input_ids"] == [len(SPECIAL_TOKENS) + ord("A")]
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
