#!/usr/bin/env bash
# Continue training the bundled models on a GPU lent for minutes, as ONE device call
# (<= 9 minutes): both variants at once on the one GPU (two processes), each phase 0
# (backbone + heavy MLP) then phase 1 (light MLP + classifier), from the bundled weights,
# on pre-cut packs of tiles, ending on time (--time-budget); the new weights land in $OUT.
#
# Before the call, here (the GPU machine has no network and no access to the images):
#   python scripts/training_data.py --out data/            # the images (apt-get download, ...)
#   python scripts/make_pack.py data/photos data/art data/synthetic data/skimage \
#       -o data/pack/phase0.pack --tiles 2400 --max-mib 34
#   python scripts/make_pack.py data/photos data/skimage -o data/pack/phase1.pack --tiles 1200 --max-mib 18
# Then (device tool; data/ is git-ignored, so the packs travel by `carry`):
#   run(command="bash scripts/gpu_train.sh", carry=["data/pack"], timeout_s=560)
# and `pcsr eval` / the model card's commands on the returned $OUT/<variant>/model.safetensors.
#
# Per variant, $OUT/<variant>/ holds model.safetensors (the latest weights: a checkpoint
# every SAVE_EVERY steps, so a run cut off still returns weights), train_state.safetensors
# (phase 1 resumes from it) and log.jsonl (losses, the
# images/s reached, the iterations the budget allowed); $OUT/summary.txt the last records.
# That is 7 files: the device tool returns at most 8.
#
# The same command runs on a CPU, slower (DEVICE=cpu AMP=off); tests/test_gpu_train.py runs
# it there at tiny size. Every knob is an environment variable:
#   VARIANTS="fsrcnn carn"  BUDGET=420 (seconds of training per variant, both phases)
#   PACK0, PACK1 (phase 0 / phase 1 data), SPLIT=0.75 (phase 0's share of the budget)
#   CROP=128 QUERIES=0 (0 = all 16,384 queries per crop, the authors' recipe) BATCH=16
#   ITERS0, ITERS1 (caps; the budget decides), AMP=bf16, COMPILE=0, SAVE_EVERY=1000,
#   INIT=bundled (or a checkpoint path; one per variant: INIT_fsrcnn=..., INIT_carn=...; a
#   later call continues from the weights an earlier one returned, carried back with it),
#   DEVICE=cuda, THREADS=4
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
VARIANTS=${VARIANTS:-"fsrcnn carn"}
BUDGET=${BUDGET:-420}
SPLIT=${SPLIT:-0.75}
PACK0=${PACK0:-data/pack/phase0.pack}
PACK1=${PACK1:-data/pack/phase1.pack}
CROP=${CROP:-128}
QUERIES=${QUERIES:-0}
BATCH=${BATCH:-16}
ITERS0=${ITERS0:-1000000}
ITERS1=${ITERS1:-1000000}
AMP=${AMP:-bf16}
COMPILE=${COMPILE:-0}
SAVE_EVERY=${SAVE_EVERY:-1000}
DEVICE=${DEVICE:-cuda}
THREADS=${THREADS:-4}
PY=${PYTHON:-python3}
# The package runs from the checkout: no build (training needs no compiled kernel), and the
# reference backend for any inference (validation is off: evaluation happens afterwards).
export PYTHONPATH="$PWD/python:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PCSR_BACKEND=reference
mkdir -p "$OUT"

lr_of() { case $1 in fsrcnn) echo 5e-4 ;; *) echo 2e-4 ;; esac; }

train_variant() {  # train_variant NAME: phase 0 then phase 1 into $OUT/NAME
    local v=$1 dir=$OUT/$1 init_var="INIT_$1" init
    init=${!init_var:-${INIT:-$1}}
    [ "$init" = bundled ] && init=$v
    local b0 b1 common
    b0=$(awk -v b="$BUDGET" -v s="$SPLIT" 'BEGIN { printf "%d", b * s }')
    common=(--out "$dir" --crop "$CROP" --queries "$QUERIES" --batch "$BATCH" --lr "$(lr_of "$v")" --lr-min 1e-6
            --seed 7 --save-every "$SAVE_EVERY" --log-every 100 --device "$DEVICE" --threads "$THREADS"
            --amp "$AMP" --no-progress --no-phase-files)
    [ "$COMPILE" = 1 ] && common+=(--compile)
    local t0=$SECONDS
    rm -rf "$dir"
    "$PY" -m pcsr train "$PACK0" "${common[@]}" --init "$init" --phases 0 --iters "$ITERS0" "$ITERS1" \
        --time-budget "$b0" || echo "$v phase 0: exit $?"
    b1=$((BUDGET - (SECONDS - t0)))
    [ "$b1" -lt 10 ] && b1=10
    "$PY" -m pcsr train "$PACK1" "${common[@]}" --resume --phases 1 --iters "$ITERS0" "$ITERS1" \
        --time-budget "$b1" || echo "$v phase 1: exit $?"
    echo "$v: $((SECONDS - t0)) s"
}

echo "== env"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
git log -1 --format='commit %h %s' 2>/dev/null
ls -la "$PACK0" "$PACK1"

pids=()
for v in $VARIANTS; do
    train_variant "$v" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

{
    echo "== summary ($(date -u +%F) BUDGET=$BUDGET DEVICE=$DEVICE AMP=$AMP QUERIES=$QUERIES CROP=$CROP BATCH=$BATCH)"
    for v in $VARIANTS; do
        echo "-- $v"
        grep -E '"event": "(start|time_budget|phase_done|stopped)"' "$OUT/$v/log.jsonl" 2>/dev/null | cut -c1-400
        grep '"event": "train"' "$OUT/$v/log.jsonl" 2>/dev/null | tail -n 2
        ls -la "$OUT/$v" 2>/dev/null
    done
} | tee "$OUT/summary.txt"
