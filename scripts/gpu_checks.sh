#!/usr/bin/env bash
# The device checks of a GPU session, as one prepared script for ONE device call (<= 9
# minutes): every step under `timeout`, logs under $OUT, one summary table printed last.
#
#   bash scripts/gpu_checks.sh                         # the default steps below
#   STEPS="tests bench" bash scripts/gpu_checks.sh     # a subset
#
# With the device tool (copy the authors' checkpoints into a git-ignored folder of the
# checkout first, so that they travel with the call; random weights otherwise):
#   mkdir -p official && cp ../shared/reference/official-pcsr/{*.pth,demo_HR.png} official/
#   run(command="PCSR_OFFICIAL_DIR=official bash scripts/gpu_checks.sh", carry=["official"], timeout_s=560)
#
# Steps and limits (seconds; 480 in all, plus start-up):
#   env      versions, GPU, commit                                                    (10)
#   tests    the GPU tests of the Triton kernels: CUDA-graph capture and replay, each
#            tensor-core mode's error bound at the variants' widths, the PSNR budget on
#            the whole demo image, and test_triton.py's cases on CUDA tensors         (170)
#   bench    benchmarks/gpu_precision.py: ceilings (copy bandwidth, bf16/TF32/fp32 matmul),
#            route_upsample per variant x precision at 4K then 2K, checked before timed,
#            eager and CUDA-graph replay, the authors' loop, a per-kernel profiler table
#            of one call (CARN-PCSR 4K, bf16 and ieee); rows appended at once to
#            benchmarks/results/compare_cuda.csv (commit +dirty when the code differs) (290)
#   build    (not default: the Triton path needs no compiled extension; the ops' schemas
#            come from Python when it is absent) pip install --no-deps -e . for the cuda
#            backend (--no-deps: the GPU machine has no package registry)
#   safety   (not default; a second call, STEPS="safety", <= 200 s) the non-finite policy
#            and memory-guard tests, and tests/test_fuzz.py on CUDA tensors (300 cases per
#            backend)
#
# Choosing the default precision from the rows: the most accurate mode (ieee, tf32x3,
# tf32, bf16 in that order) whose 4K time is within 2x of the fastest mode's for every
# variant, and whose PSNR change is within 0.01 dB (the tests step).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
STEPS=${STEPS:-"env tests bench"}
PY=${PYTHON:-python}
CSV=${CSV:-benchmarks/results/compare_cuda.csv}
: >"$OUT/steps.txt"

step() {  # step NAME SECONDS CMD...: run CMD under a limit, log to $OUT/NAME.log, record rc
    local name=$1 limit=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s" >>"$OUT/steps.txt"
    tail -n 3 "$OUT/$name.log"
    return 0
}

step env 10 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; \
    $PY -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)'; \
    git log -1 --format='commit %h %s'; git status --short | head -5"
step build 240 env MAX_JOBS=16 $PY -m pip install -q --no-deps --no-build-isolation -e .
step tests 170 $PY -m pytest -q -p no:cacheprovider \
    tests/test_triton_kernels.py::test_cuda_graph_capture_and_replay \
    tests/test_triton_precision.py::test_tensor_core_error_bounds \
    tests/test_triton_precision.py::test_psnr_change_within_budget \
    "tests/test_triton.py::test_route_upsample" -k "cuda or graph or bounds or psnr"
step safety 200 bash -c "$PY -m pytest -q -p no:cacheprovider tests/test_nonfinite.py tests/test_memory_guard.py \
    -k cuda && PCSR_FUZZ_EXAMPLES=300 $PY -m pytest -q -p no:cacheprovider tests/test_fuzz.py -k cuda"
step bench 290 $PY benchmarks/gpu_precision.py --sizes 4k,2k --variants fsrcnn,carn,srresnet \
    --precisions bf16,tf32,tf32x3,ieee --heavy-fraction 0.3 --rep-ms 150 --csv "$CSV" --out "$OUT"

echo
echo "===== summary ($OUT) ====="
cat "$OUT/env.log" 2>/dev/null
cat "$OUT/steps.txt"
grep -E "passed|failed|error" "$OUT/tests.log" 2>/dev/null | tail -n 3
grep -E "^# |^## " "$OUT/bench.log" 2>/dev/null
sed -n '/^| variant/,$p' "$OUT/bench.log" 2>/dev/null
