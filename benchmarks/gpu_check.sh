#!/usr/bin/env bash
# repro on a GPU, in one run of at most 8 minutes on one H100/H200 with nothing to download:
#   1. the triton kernel tests, bit for bit against the numpy reference, on the GPU
#   2. the tiny and the SmolLM2-shaped model trained a few steps and decoded on CUDA, compared
#      with the CPU's state hashes and tokens (benchmarks/gpu_expected.json, made here with
#      `.venv/bin/python benchmarks/gpu_check.py --write-expect benchmarks/gpu_expected.json`)
#   3. the SmolLM2-shaped train step and greedy decoding timed against plain torch on the GPU
# Needs python with torch, triton, numpy, numba and pytest (hypothesis for some tests). A
# missing module is named; with wheels in build/gpu-wheels (carried along) it is installed offline.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
status=0

echo "== the machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
missing=$($PY - <<'PY'
import importlib
miss = []
for m in ("numpy", "torch", "triton", "numba", "pytest", "hypothesis", "transformers"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m} {getattr(mod, '__version__', '?')}", flush=True, file=__import__('sys').stderr)
    except ImportError:
        miss.append(m)
print(" ".join(miss))
PY
)
if [ -n "$missing" ]; then
    echo "missing: $missing"
    if [ -d build/gpu-wheels ]; then
        $PY -m pip install --quiet --no-index --find-links build/gpu-wheels $missing || true
    fi
fi
$PY -c "import torch; print('  cuda:', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

echo "== 1/2 triton kernel tests on the GPU"
timeout 240 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/repro/test_triton_*.py \
    tests/repro/test_one_nan.py -k "triton or canonical" || status=1

echo "== 2/2 training, decoding and speed on CUDA against the CPU's bits"
timeout 270 $PY benchmarks/gpu_check.py --expect benchmarks/gpu_expected.json "$@" || status=1
echo "gpu_check: $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
