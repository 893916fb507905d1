"""Training transcripts, format version 3 (3: state hashes over BLAKE3 tensor hashes, hashing v2): what a solver commits to and a verifier checks.

    {
      "version": 3,
      "kind": "train",
      "spec_cid": CID of the spec (canonical JSON, sorted keys),
      "repro_version": the reproducibility contract version,
      "initial_state_hash": state hash at step 0,
      "state_hashes": [state hash after step 1, ..., after step T],
      "checkpoints": {"<step>": CID of the checkpoint directory, ...},
      "root": Merkle root over the chained leaves (verify.merkle; leaf i = step i + 1)
    }

The leaves are chained (`chain_leaves`): c_{-1} = the initial state hash, c_k = sha256(c_{k-1} |
state hash after step k+1). So a leaf commits the whole history up to it: two runs that agree
on their last leaf agree on every step and every reported loss, and a run that invents one
step's hash differs from there to its last leaf.

The transcript itself is stored as a blob (canonical JSON, sorted keys, no spaces), so its
CID names exactly this commitment. The root is what goes on chain.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bitswarm.errors import BitswarmError
from bitswarm.repro.hashing import merkle_root
from bitswarm.repro.train import checkpoint_meta, checkpoints, read_step_log
from bitswarm.store import BlobStore

VERSION = 3


class TranscriptError(BitswarmError, ValueError):
    pass


def chain_leaves(initial_hash: str, state_hashes: list[str]) -> list[str]:
    """The committed leaves of a training run: each state hash chained onto the one before."""
    out, prev = [], bytes.fromhex(initial_hash)
    for h in state_hashes:
        prev = hashlib.sha256(prev + bytes.fromhex(h)).digest()
        out.append(prev.hex())
    return out


def run_leaves(run: Path) -> list[str]:
    """chain_leaves of a run directory, from its initial checkpoint and its step log."""
    ckpts = checkpoints(run)
    if 0 not in ckpts:
        raise TranscriptError(f"{run} lacks the initial checkpoint (step 0)")
    return chain_leaves(checkpoint_meta(ckpts[0])["state_hash"], [r["state_hash"] for r in read_step_log(run)])


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
        "root": merkle_root(chain_leaves(initial, hashes)),
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
    initial = t.get("initial_state_hash")
    if not (isinstance(initial, str) and len(initial) == 64):
        raise TranscriptError(f"{cid}: initial_state_hash must be a 64-hex-digit hash")
    if merkle_root(chain_leaves(initial, hashes)) != t.get("root"):
        raise TranscriptError(f"{cid}: root does not match its state hashes")
    return t
