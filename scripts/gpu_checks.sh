#!/usr/bin/env bash
# The device checks of a GPU session, as one prepared script: build, GPU tests, then the
# GPU figures that benchmarks/RESULTS.md still lacks, each step under its own time limit so
# that a short loan still brings back what finished. Everything goes to $OUT (the device
# tool's output folder) or ./gpu_out.
#
#   STEPS="build tests" bash scripts/gpu_checks.sh     # first device call (<= 500 s)
#   STEPS="fuzz" bash scripts/gpu_checks.sh            # (<= 150 s)
#   STEPS="bench micro floor" bash scripts/gpu_checks.sh   # second call, machine still warm (<= 480 s)
#
# (The device tool allows 600 s per command, so the steps go in two calls.) Steps, with
# their limits:
#   build     python -m pip install --no-build-isolation -e .   (the interpreter with torch)
#   tests     pytest tests: the CUDA and Triton-on-CUDA cases that skip on a CPU machine
#   fuzz      tests/test_fuzz.py on CUDA tensors (triton, cuda), 300 cases per backend
#   bench     pcsr bench --device cuda at 1k,2k,4k,8k, all three variants, every backend
#   micro     pytest benchmarks/ --benchmark-only at 2k (JSON)
#   floor     benchmarks/bench_route_upsample.py: route_upsample against the compute floor
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
STEPS=${STEPS:-"build tests fuzz bench micro floor"}
PY=${PYTHON:-python}

step() {  # step NAME SECONDS CMD...: run CMD under a limit, log to $OUT/NAME.log, record rc
    local name=$1 limit=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/steps.txt"
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   $name: rc=$rc after $((SECONDS - t0))s" | tee -a "$OUT/steps.txt"
    tail -n 5 "$OUT/$name.log"
    return 0
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
    git log -1 --format='commit %h %s' 2>/dev/null
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step build 300 env MAX_JOBS=16 $PY -m pip install -q --no-build-isolation -e .
step tests 200 $PY -m pytest -q tests/test_triton.py tests/test_cuda_compile.py tests/test_ops.py \
    tests/test_cpu_kernels.py tests/test_nonfinite.py tests/test_memory_guard.py -p no:cacheprovider
step fuzz 150 env PCSR_FUZZ_EXAMPLES=300 $PY -m pytest -q tests/test_fuzz.py -k cuda -p no:cacheprovider
step bench 240 $PY -m pcsr bench --device cuda --sizes 1k,2k,4k,8k --variants fsrcnn,carn,srresnet \
    --heavy-fraction 0.3 --budget 2 --csv "$OUT/compare_cuda.csv" --markdown "$OUT/compare_cuda.md"
step micro 120 $PY -m pytest -q benchmarks/ --benchmark-only --bench-size 2k -p no:cacheprovider \
    --benchmark-json="$OUT/micro.json" --benchmark-columns=median,iqr,rounds
step floor 120 $PY benchmarks/bench_route_upsample.py --sizes 4k,8k --variants fsrcnn,carn,srresnet \
    --heavy-fraction 0.3 --csv "$OUT/floor.csv"
echo "done; results in $OUT"
