#!/usr/bin/env bash
# The whole model on a GPU (issue 11): a SECOND device call beside scripts/gpu_checks.sh
# (which fills its own 9 minutes with the Triton kernels). This one takes <= 8.5 minutes:
# every step under `timeout`, logs and CSVs under $OUT (8 files, what a call brings back),
# one summary printed last.
#
#   bash scripts/gpu_checks_e2e.sh                          # every step (<= 510 s + start-up)
#   STEPS="env e2e tests" bash scripts/gpu_checks_e2e.sh    # the must-show figures (<= 440 s)
#
# With the device tool (the authors' checkpoints in a git-ignored folder that travels, as
# for gpu_checks.sh; random weights otherwise, and the demo-image PSNR test skips):
#   mkdir -p official && cp ../shared/reference/official-pcsr/{*.pth,demo_HR.png} official/
#   run(command="PCSR_OFFICIAL_DIR=official bash scripts/gpu_checks_e2e.sh", carry=["official"], timeout_s=570)
#
# Steps and limits (seconds):
#   env        versions, GPU, commit                                                    (10)
#   e2e        pcsr bench --e2e at 960x540 -> 3840x2160, CARN-PCSR, SRResNet-PCSR and
#              FSRCNN-PCSR beside CARN-M, SRResNet and FSRCNN, each compiled for the shape
#              and replayed as a CUDA graph, checked against the eager model first:
#              bf16 at batch 1, 2, 4, 8 (frames per second, best batch), then ieee and
#              tf32 at batch 1 (PCSR / original at the same precision; paper and real
#              FLOP ratios). Rows to $OUT/compare_cuda_e2e.csv as they are measured     (280)
#   tests      tests/test_fast_inference.py on CUDA: graph replay equals eager (ieee,
#              bf16), padded backbones equal unpadded, torch.compile (Inductor) equals
#              eager, stream_batches equals direct calls, and |dPSNR| bf16 vs ieee on
#              the whole demo image <= 0.02 dB (CARN-PCSR, FSRCNN-PCSR; printed)       (130)
#   backbones  benchmarks/backbone_forms.py at 4K: each backbone (and original network)
#              as it was (NCHW fp32), channels_last, padded, TF32, bf16, checked then
#              timed; rows to $OUT/backbone_forms_cuda.csv                              (60)
#   overlap    benchmarks/pipeline_overlap.py: CARN-PCSR bf16 batch 4, uint8 frames
#              through stream_batches vs a serial upload-compute-download loop          (30)
#
# The rows of compare_cuda_e2e.csv have compare.py's columns: append them to
# benchmarks/results/compare_cuda.csv (`tail -n +2`), which the device's copy of the
# checkout cannot bring back.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
STEPS=${STEPS:-"env e2e tests backbones overlap"}
PY=${PYTHON:-python}
export PYTHONUNBUFFERED=1
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

E2E="$PY benchmarks/compare.py --e2e --device cuda --sizes 4k --variants carn,srresnet,fsrcnn \
    --repeat 15 --min-repeat 3 --budget 2 --csv $OUT/compare_cuda_e2e.csv"
step env 10 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; \
    $PY -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)'; \
    git log -1 --format='commit %h %s'; git status --short | head -5"
# bf16 first (the 60 fps figure), then the same-precision comparisons in fp32 and TF32
step e2e 280 bash -c "timeout --signal=INT 175 $E2E --precisions bf16 --batch 1,2,4,8; \
    timeout --signal=INT 95 $E2E --precisions ieee,tf32 --batch 1"
step tests 130 $PY -m pytest -q -s -p no:cacheprovider tests/test_fast_inference.py -k "cuda"
step backbones 60 $PY benchmarks/backbone_forms.py --device cuda --size 4k --variants carn,srresnet,fsrcnn \
    --originals --forms nchw,cl,cl+pad,cl+tf32,cl+pad+tf32,cl+bf16,cl+pad+bf16 --repeat 10 --budget 1 \
    --csv "$OUT/backbone_forms_cuda.csv"
step overlap 30 $PY benchmarks/pipeline_overlap.py --variant carn --size 4k --batch 4 --frames 48 --precision bf16

echo
echo "===== summary ($OUT) ====="
cat "$OUT/env.log" 2>/dev/null
cat "$OUT/steps.txt"
grep -E "FAILED|passed|failed|error|d = " "$OUT/tests.log" 2>/dev/null | tail -n 8
grep -E "FAILED" "$OUT/e2e.log" "$OUT/backbones.log" 2>/dev/null | head -n 10
grep -E "\(graph\): PCSR" "$OUT/e2e.log" 2>/dev/null
grep -E "^\| (variant|carn|srresnet|fsrcnn) " "$OUT/e2e.log" 2>/dev/null
grep -E "^\| .*(backbone|network)|^\| \| " "$OUT/backbones.log" 2>/dev/null
grep -E "^\||pipeline / compute|outputs equal" "$OUT/overlap.log" 2>/dev/null
