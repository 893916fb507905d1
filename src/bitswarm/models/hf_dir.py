"""Checks that a directory is a Hugging Face-format Llama-family checkpoint before it is stored."""

from __future__ import annotations

import json
from pathlib import Path

from bitswarm.models import ModelError

LLAMA_FAMILY = ("llama",)
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def read_config(path: Path) -> dict:
    cfg_file = Path(path) / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text("utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path} has no config.json; a model directory is what save_pretrained writes") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{cfg_file} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_file} must hold a JSON object")
    return cfg


def validate_llama_dir(path: Path) -> dict:
    """Return the config if `path` holds a Llama-family model with weights and a tokenizer."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path} is not a directory")
    cfg = read_config(path)
    model_type = cfg.get("model_type")
    if model_type not in LLAMA_FAMILY:
        raise ModelError(
            f"{path} holds a {model_type!r} model; bitswarm runs Llama-family models "
            f"(model_type one of: {', '.join(LLAMA_FAMILY)})"
        )
    if not any(any(path.glob(g)) for g in WEIGHT_GLOBS):
        raise ModelError(f"{path} has no weights (*.safetensors or pytorch_model*.bin)")
    if not any((path / t).is_file() for t in TOKENIZER_FILES):
        raise ModelError(f"{path} has no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    return cfg
