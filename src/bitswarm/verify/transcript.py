"""Training transcripts, format version 1: what a solver commits to and a verifier checks.

    {
      "version": 1,
      "kind": "train",
      "spec_cid": CID of the spec (canonical JSON, sorted keys),
      "repro_version": the reproducibility contract version,
      "initial_state_hash": state hash at step 0,
      "state_hashes": [state hash after step 1, ..., after step T],
      "checkpoints": {"<step>": CID of the checkpoint directory, ...},
      "root": Merkle root over state_hashes (verify.merkle; leaf i = step i + 1)
    }

The transcript itself is stored as a blob (canonical JSON, sorted keys, no spaces), so its
CID names exactly this commitment. The root is what goes on chain.
"""

from __future__ import annotations

import json
from pathlib import Path

from bitswarm.repro.hashing import merkle_root
from bitswarm.repro.train import checkpoint_meta, checkpoints, read_step_log
from bitswarm.store import BlobStore

VERSION = 1


class TranscriptError(ValueError):
    pass


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def build(store: BlobStore, run: Path) -> tuple[str, dict]:
    """Store the spec, the checkpoints and the transcript of a finished run; returns (cid, transcript)."""
    run = Path(run)
    spec = json.loads((run / "spec.json").read_text())
    log = read_step_log(run)
    if [r["step"] for r in log] != list(range(1, len(log) + 1)):
        raise TranscriptError(f"{run}/steps.jsonl is not a complete sequence of steps")
    ckpts = {}
    initial = None
    for step, d in checkpoints(run).items():
        meta = checkpoint_meta(d)
        if step == 0:
            initial = meta["state_hash"]
        elif step > len(log) or log[step - 1]["state_hash"] != meta["state_hash"]:
            raise TranscriptError(f"checkpoint {d} does not match the logged hash of step {step}")
        ckpts[str(step)] = store.put_dir(d)
    if initial is None:
        raise TranscriptError(f"{run} lacks the initial checkpoint")
    hashes = [r["state_hash"] for r in log]
    transcript = {
        "version": VERSION,
        "kind": "train",
        "spec_cid": store.put_bytes(canonical_json(spec)),
        "repro_version": spec.get("repro_version"),
        "initial_state_hash": initial,
        "state_hashes": hashes,
        "checkpoints": ckpts,
        "root": merkle_root(hashes),
    }
    return store.put_bytes(canonical_json(transcript), label=f"transcript {run.name}"), transcript


def load(store: BlobStore, cid: str) -> dict:
    """Read and check a stored transcript: version, shape, and that the root matches the hashes."""
    try:
        t = json.loads(store.read_bytes(cid))
    except ValueError as e:
        raise TranscriptError(f"{cid} is not a JSON transcript: {e}") from None
    if not isinstance(t, dict) or t.get("version") != VERSION or t.get("kind") != "train":
        raise TranscriptError(f"{cid} is not a version-{VERSION} training transcript")
    hashes = t.get("state_hashes")
    if not isinstance(hashes, list) or not all(isinstance(h, str) and len(h) == 64 for h in hashes):
        raise TranscriptError(f"{cid}: state_hashes must be a list of 64-hex-digit hashes")
    if merkle_root(hashes) != t.get("root"):
        raise TranscriptError(f"{cid}: root does not match its state hashes")
    return t
