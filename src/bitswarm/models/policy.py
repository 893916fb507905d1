"""Stored policy models (repro.policy): a directory blob of config.json, model.safetensors and,
for a trained one, provenance.json naming the base model, the dataset (and what the dataset says
it was built from, e.g. episode CIDs) and the training spec and state hash that produced it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bitswarm.errors import BitswarmError
from bitswarm.repro.policy import PolicyConfig, PolicyError, init_params, load_policy_params, save_policy
from bitswarm.store import BlobStore

PROVENANCE = "provenance.json"


class PolicyModelError(BitswarmError, ValueError):
    pass


def _put(store: BlobStore, cfg: PolicyConfig, params: dict, label: str, provenance: dict | None = None) -> str:
    with tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
        out = Path(tmp) / "policy"
        save_policy(cfg, params, out)
        if provenance is not None:
            (out / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True))
        cid = store.put_dir(out, label=label)
        shutil.rmtree(out)
    return cid


def init_policy(store: BlobStore, cfg: PolicyConfig, seed: int, label: str | None = None) -> str:
    """A freshly initialised policy (a pure function of cfg and seed), stored; its CID."""
    return _put(store, cfg, init_params(cfg, seed), label or f"policy-init-seed{seed}")


META_KEY = "bitswarm"


def dataset_metadata(info: dict) -> dict[str, str]:
    """A tensor dataset's safetensors metadata: ONE entry, `bitswarm`, holding canonical JSON. With
    several entries the header's bytes (so the CID) changed from process to process: safetensors
    writes its metadata map's keys in a random order."""
    return {META_KEY: json.dumps(info, sort_keys=True, separators=(",", ":"))}


def read_dataset_metadata(store: BlobStore, cid: str) -> dict:
    """What a tensor dataset says of itself (its `bitswarm` metadata entry), or {}."""
    raw = store.read_bytes(cid)
    n = int.from_bytes(raw[:8], "little")
    try:
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__") or {}
        info = json.loads(meta.get(META_KEY, "{}"))
    except (ValueError, AttributeError):
        return {}
    return info if isinstance(info, dict) else {}


def store_trained_policy(store: BlobStore, spec, params: dict, final_state_hash: str, label: str) -> str:
    """The trained policy with its provenance: base model, dataset, spec, final state hash."""
    cfg = PolicyConfig.from_dir(store.checkout(spec.model))
    provenance = {
        "base_model": spec.model,
        "dataset": spec.dataset.cid,
        "dataset_metadata": read_dataset_metadata(store, spec.dataset.cid),
        "spec": spec.model_dump(mode="json"),
        "final_state_hash": final_state_hash,
    }
    return _put(store, cfg, {k: np.ascontiguousarray(v) for k, v in params.items()}, label, provenance)


def load_policy(store: BlobStore, cid: str) -> tuple[PolicyConfig, dict[str, np.ndarray], dict | None]:
    """(config, parameters, provenance or None) of a stored policy; a clear error otherwise."""
    if not store.has(cid):
        raise PolicyModelError(f"model {cid} is not in the store")
    if store.kind(cid) != "dir":
        raise PolicyModelError(f"{cid} is a single file, not a policy model (a directory with config.json)")
    d = store.checkout(cid)
    try:
        cfg = PolicyConfig.from_dir(d)
        params = load_policy_params(d, cfg)
    except PolicyError as e:
        raise PolicyModelError(f"{cid} is not a policy model: {e}") from None
    prov = json.loads((d / PROVENANCE).read_text()) if (d / PROVENANCE).exists() else None
    return cfg, params, prov
