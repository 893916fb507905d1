"""Text generation from a stored model through the repro Llama.

Backends: `repro` (numba kernels; the same tokens on every device for a given seed, request id
and prompt), `reference` (the numpy spec; slow), `native` (torch kernels; fast, not bit-exact).
Temperature 0 is greedy; otherwise tokens are sampled with top-p from repro's counter-based
generator keyed by (seed, request id, token index).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bitswarm.models import ModelError
from bitswarm.models.hf_dir import validate_llama_dir
from bitswarm.store import BlobStore

BACKENDS = {  # flag -> kernels
    "repro": "numba", "reference": "reference", "native": "native", "triton": "triton", "cuda": "cuda",
}


def backend_flag(kernels: str) -> str:
    """The --backend name a person typed for these kernels ("numba" -> "repro")."""
    return next((flag for flag, k in BACKENDS.items() if k == kernels), kernels)


def resolve_model(store: BlobStore, ref: str) -> str:
    """The CID a --model argument names: a CID in the store, or a label (the newest blob carrying it)."""
    from bitswarm.store.cid import is_cid

    if is_cid(ref):
        if not store.has(ref):
            raise ModelError(f"--model {ref} is not in the store at {store.root}; `bitswarm store ls` lists "
                             "what it holds, `bitswarm model import NAME` adds one")
        return ref
    hits = store.find_label(ref)
    if not hits:
        raise ModelError(f"--model {ref!r} is neither a CID nor a label in the store; "
                         "import one with `bitswarm model import NAME`")
    return hits[0]


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


def load(store: BlobStore, cid: str, backend: str = "repro"):
    """(repro Llama, tokenizer) from a stored directory blob, checked against its CID first."""
    # Everything a person can get wrong is checked before transformers, numba and torch load
    # (seconds): an unknown CID is reported at once.
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if not store.has(cid):
        raise ModelError(f"no model {cid} in the store at {store.root}; `bitswarm store ls` lists what it holds")
    if store.kind(cid) != "dir":
        raise ModelError(f"{cid} is a single file, not a model directory")
    path = store.checkout(cid)
    from bitswarm.repro.backend import get_backend
    from bitswarm.repro.config import LlamaConfig, ModelConfigError
    from bitswarm.repro.model import Llama
    from bitswarm.repro.weights import load_params

    try:
        validate_llama_dir(path)
        cfg = LlamaConfig.from_dir(path)
        params = load_params(path, cfg)
    except (ModelError, ModelConfigError) as e:
        raise ModelError(f"{cid} is not a model repro can run: {e}") from None
    return Llama(cfg, params, get_backend(BACKENDS[backend])), open_tokenizer(path)


def load_tokenizer(store: BlobStore, cid: str):
    """A stored model's tokenizer alone, without loading its weights."""
    return open_tokenizer(store.checkout(cid))


def open_tokenizer(model_dir: Path):
    """The tokenizer of a model directory. With a tokenizer.json (every model we store or make),
    the fast tokenizer class directly: AutoTokenizer goes through AutoConfig, which imports torch
    (a second of every repro `generate`, where torch computes nothing); the same class and ids."""
    if (Path(model_dir) / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(model_dir)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def render_prompt(tok, prompt: str, chat: bool) -> str:
    """The prompt as the model sees it, as text: the chat template applied when asked and present."""
    if chat and tok.chat_template:
        return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return prompt


def encode_prompt(tok, prompt: str, chat: bool) -> list[int]:
    if chat and tok.chat_template:
        return list(tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"])
    return list(tok(prompt, add_special_tokens=False)["input_ids"])


def generate_many(
    store: BlobStore,
    cid: str,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    *,
    chat: bool = True,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    request_ids: Sequence[int] | None = None,
    backend: str = "repro",
    on_token: Callable[[int, str], None] | None = None,
) -> list[Generation]:
    from bitswarm.repro import generate as rgen

    if max_new_tokens < 1:
        raise ModelError("--max-new-tokens must be at least 1")
    if temperature < 0:
        raise ModelError("--temperature must be at least 0")
    if not 0 < top_p <= 1:
        raise ModelError("--top-p must be in (0, 1]")
    model, tok = load(store, cid, backend)
    encoded = [encode_prompt(tok, p, chat) for p in prompts]
    limit = model.cfg.max_position_embeddings
    for ids in encoded:
        if len(ids) + max_new_tokens > limit:
            raise ModelError(
                f"prompt ({len(ids)} tokens) + --max-new-tokens ({max_new_tokens}) exceeds the model's "
                f"context of {limit} tokens"
            )
    rids = list(request_ids) if request_ids is not None else list(range(len(prompts)))
    eos = [t for t in (tok.eos_token_id,) if t is not None]
    shown: dict[int, list[int]] = {r: [] for r in rids}
    printed: dict[int, int] = {r: 0 for r in rids}

    def stream(rid: int, token: int) -> None:
        # Hand on whole characters only: a byte-level token may end inside a UTF-8 sequence.
        if on_token is None or token in eos:
            return
        shown[rid].append(token)
        text = tok.decode(shown[rid], skip_special_tokens=True)
        if not text.endswith("\ufffd") and len(text) > printed[rid]:
            on_token(rid, text[printed[rid]:])
            printed[rid] = len(text)

    results = []
    for ids, rid, prompt in zip(encoded, rids, prompts):
        start = time.perf_counter()
        [new] = rgen.generate(model, [ids], max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                              request_ids=[rid], eos_ids=eos, on_token=stream)
        seconds = time.perf_counter() - start
        text = tok.decode(new, skip_special_tokens=True).strip()
        results.append(Generation(cid, prompt, text, len(new), seconds))
    return results


def generate(store: BlobStore, cid: str, prompt: str, max_new_tokens: int = 64, chat: bool = True,
             on_token: Callable[[str], None] | None = None, **kw) -> Generation:
    cb = (lambda rid, piece: on_token(piece)) if on_token else None
    return generate_many(store, cid, [prompt], max_new_tokens, chat=chat, on_token=cb, **kw)[0]
