"""Golden hashes: the bits repro produces, committed, so that an upgrade of numba, llvmlite or
numpy (or an edit of a kernel's order) that changes them fails here instead of making two
honest nodes disagree in production.

golden.json holds the values and the versions that produced them. When a change of bits is
intended, regenerate with `UPDATE_GOLDEN_HASHES=1 pytest tests/invariant` and give the
reason in the commit message.

The golden values are one set for every bit-exact backend: numba (compiled for this CPU, and
for generic x86-64 in a fresh process with a fresh kernel cache, so "any CPU" stays tested),
the numpy reference, and triton (interpreted here; `benchmarks/gpu_check.sh` runs it on a GPU).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bitswarm.jobs.spec import example_spec
from bitswarm.jobs.train_job import run_training
from bitswarm.models.generate import encode_prompt, generate_many, load
from bitswarm.models.importer import init_model
from bitswarm.store import BlobStore
from bitswarm.verify import inference

GOLDEN = Path(__file__).with_name("golden.json")
BACKENDS = ("numba", "reference", "triton")  # the bit-exact ones (native is not: it has no golden bits)
VERSIONS = ("numba", "llvmlite", "numpy", "transformers", "safetensors")


GENERIC_CPU = {"NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": ""}  # x86-64 with no vector unit, no fma


def _measure(tmp_path: Path, backends=BACKENDS) -> dict:
    store = BlobStore(tmp_path / "store")
    cid = init_model(store, "tiny", 0)
    spec = example_spec(cid, steps=2).model_copy(update={"seq_len": 12, "global_batch": 2, "checkpoint_every": 2})
    out: dict = {"tiny_model_cid": cid, "train": {}, "generate": {}, "inference_root": {}}
    for backend in backends:
        r = run_training(store, spec, tmp_path / f"run-{backend}", backend=backend)
        out["train"][backend] = {"final_state_hash": r["final_state_hash"], "step_hashes_root": r["step_hashes_root"]}
        flag = "repro" if backend == "numba" else backend  # triton runs interpreted here
        greedy, sampled = (generate_many(store, cid, ["2+3="], 6, chat=False, backend=flag, **kw)[0]
                           for kw in ({}, {"temperature": 0.9, "top_p": 0.9, "seed": 7}))
        model, tok = load(store, cid, flag)
        out["generate"][backend] = {"greedy": greedy.text, "sampled": sampled.text}
        for mode, sampling in (("greedy", {"temperature": 0.0, "top_p": 1.0}), ("sampled", {"temperature": 0.9, "top_p": 0.9})):
            job = {"model": cid, "prompt_ids": encode_prompt(tok, "2+3=", chat=False), "seed": 7, "request_id": 0,
                   **sampling, "max_new_tokens": 4}
            rec = inference.run(model, job, tmp_path / f"infer-{backend}-{mode}")
            out["inference_root"].setdefault(backend, {})[mode] = {"tokens": rec["tokens"], "root": rec["root"]}
    return out


def _check(got: dict, backends=BACKENDS) -> None:
    golden = json.loads(GOLDEN.read_text())
    versions = {name: importlib.metadata.version(name) for name in VERSIONS}
    changed = {k: f"{golden['versions'].get(k)} -> {v}" for k, v in versions.items() if golden["versions"].get(k) != v}
    why = f" (installed versions changed: {changed})" if changed else " (same library versions: a kernel changed)"
    assert got["tiny_model_cid"] == golden["tiny_model_cid"], "tiny_model_cid differs from golden.json" + why
    for key in ("train", "generate", "inference_root"):
        for backend in backends:
            want = golden[key][backend if backend in golden[key] else "numba"]
            assert got[key][backend] == want, f"{key} on {backend} differs from tests/invariant/golden.json" + why


def test_the_bits_are_the_golden_ones(tmp_path):
    if os.environ.get("GOLDEN_BACKENDS"):  # the generic-CPU run below, in its own process
        _check(_measure(tmp_path, os.environ["GOLDEN_BACKENDS"].split(",")), os.environ["GOLDEN_BACKENDS"].split(","))
        return
    got = _measure(tmp_path)
    versions = {name: importlib.metadata.version(name) for name in VERSIONS}
    if os.environ.get("UPDATE_GOLDEN_HASHES"):
        GOLDEN.write_text(json.dumps({"versions": versions, **got}, indent=2) + "\n")
        pytest.skip(f"golden hashes rewritten to {GOLDEN}")
    _check(got)
    # Every bit-exact backend agrees with every other: the golden values are one set, not one per backend.
    assert len({json.dumps(v, sort_keys=True) for v in got["train"].values()}) == 1
    assert len({json.dumps(v, sort_keys=True) for v in got["inference_root"].values()}) == 1


def test_generic_x86_64_gives_the_golden_bits(tmp_path):
    """The numba kernels compiled afresh for a CPU with no vector unit and no fma instruction
    (llvm.fma then runs in software): the same bits."""
    env = {**os.environ, **GENERIC_CPU, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "GOLDEN_BACKENDS": "numba"}
    env.pop("UPDATE_GOLDEN_HASHES", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::test_the_bits_are_the_golden_ones"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
