"""Text generation from a stored model (native torch through transformers; greedy decoding).

The bit-exact repro backend with seeded sampling replaces this path for verifiable work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bitswarm.models import ModelError
from bitswarm.models.hf_dir import validate_llama_dir
from bitswarm.store import BlobStore


@dataclass(frozen=True)
class Generation:
    model: str
    prompt: str
    text: str
    new_tokens: int
    seconds: float

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "text": self.text,
            "new_tokens": self.new_tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.new_tokens / self.seconds, 2) if self.seconds else None,
        }


def load(store: BlobStore, cid: str):
    """(model, tokenizer) from a stored directory blob, checked against its CID first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if store.kind(cid) != "dir":
        raise ModelError(f"{cid} is a single file, not a model directory")
    path = store.checkout(cid)
    try:
        validate_llama_dir(path)
    except ModelError as e:
        raise ModelError(f"{cid} is not a model: {e}") from None
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    model.eval()
    return model, tok


def generate(
    store: BlobStore,
    cid: str,
    prompt: str,
    max_new_tokens: int = 64,
    chat: bool = True,
    on_token: Callable[[str], None] | None = None,
) -> Generation:
    import torch
    from transformers.generation.streamers import BaseStreamer

    if max_new_tokens < 1:
        raise ModelError("--max-new-tokens must be at least 1")
    model, tok = load(store, cid)
    if chat and tok.chat_template:
        enc = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
    else:
        enc = tok(prompt, return_tensors="pt")
    prompt_len = enc["input_ids"].shape[1]
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and prompt_len + max_new_tokens > limit:
        raise ModelError(
            f"prompt ({prompt_len} tokens) + --max-new-tokens ({max_new_tokens}) exceeds the model's "
            f"context of {limit} tokens"
        )

    class _Stream(BaseStreamer):
        """Hands on_token only whole characters: a byte-level token may end mid-UTF-8 sequence."""

        first, ids, shown = True, [], 0

        def put(self, value):
            if self.first:  # generate() first hands over the prompt
                self.first = False
                return
            self.ids.extend(value.reshape(-1).tolist())
            text = tok.decode(self.ids, skip_special_tokens=True)
            if on_token is not None and not text.endswith("\ufffd") and len(text) > self.shown:
                on_token(text[self.shown:])
                self.shown = len(text)

        def end(self):
            pass

    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            streamer=_Stream(),
        )
    seconds = time.perf_counter() - start
    new = out[0, prompt_len:]
    return Generation(cid, prompt, tok.decode(new, skip_special_tokens=True).strip(), int(new.shape[0]), seconds)
