"""Converts a GGUF file to a safetensors + tokenizer directory (weights de-quantized to fp32)."""

from __future__ import annotations

from pathlib import Path

from bitswarm.models import ModelError


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise ModelError(f"GGUF file not found: {gguf_file}")
    try:
        tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"could not read {gguf_file} as a GGUF model: {e}") from None
    if model.config.model_type != "llama":
        raise ModelError(f"{gguf_file} holds a {model.config.model_type!r} model, not a Llama-family one")
    # The de-quantized weights are plain fp32; without this save_pretrained would record a
    # GGUF quantization config that makes later loads look for the GGUF file again.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
