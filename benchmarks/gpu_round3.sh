#!/usr/bin/env bash
# Stage-2 recipe round 3 on one NVIDIA GPU, in one call of under 10 minutes (quality_sweep.py --round3).
#
#   bash benchmarks/gpu_round3.sh OUTDIR              # on the GPU machine
#   bash benchmarks/gpu_round3.sh --cpu-smoke OUTDIR  # the same steps, tiny and on the CPU: checks the script
#
# 1. At once, on the shipped stage 1: the default recipe and 400 iterations, each in both settings
#    (one model per mixed folder, one per degradation folder), dev seeds 3-4, with the naive baseline.
# 2. Beside them, three stage-1 candidates train on the GPU for the same time (TRAIN_S, default 150 s):
#    the skip recipe shipped until then (w32, the control), R without the skip (noskip), width 64 (w64).
# 3. Then the three candidates go through the same dev round as stage 1 of stage 2.
# 4. quality_sweep.py --round3 --reuse joins the rows and applies RULE_BOTH.
# Each sweep writes its rows as each setting finishes, and everything stops at DEADLINE_S (default
# 530 s after the start), so what finished comes back. OUTDIR receives quality_dev_sweep_round3.json,
# the stage-1 candidates (split in parts under 15 MB where larger) and logs.tgz.
# Env: TRAIN_S, DEADLINE_S, S1_NAMES (candidates to train, default "w32 noskip w64"), RECIPES (phase 1's
# variants, default "default it400"; empty for none), WORKERS (per training run, default 3), REUSE
# (earlier round-3 JSON files to join in step 4).
# Assumes this package importable (PYTHONPATH), the model store in $LWAYRT_HOME with
# realesr-animevideov3, and a Python whose torch has CUDA (PYTHON=..., default python3).
set -uo pipefail
mode=gpu
if [[ ${1:-} == --cpu-smoke ]]; then mode=cpu; shift; fi
if [[ $# -ne 1 || ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
OUT=$1
mkdir -p "$OUT" || { echo "error: cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)  # before the cd below: a relative OUTDIR is the caller's
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LW=("$PY" -c 'import sys; from lway_rt.cli import main; sys.exit(main())')
T0=$(date +%s)
DEADLINE=${DEADLINE_S:-530}
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM  # the EXIT trap runs then too

if [[ $mode == gpu ]]; then
  "$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "error: $PY sees no CUDA GPU; use --cpu-smoke to check the script on a CPU" >&2; exit 2; }
  dev=cuda; TRAIN=${TRAIN_S:-150}; jobs_a=4; jobs_b=6; qargs=""; targs=(--batch 32 --workers "${WORKERS:-3}")
else
  dev=cpu; TRAIN=${TRAIN_S:-6}; jobs_a=2; jobs_b=2
  qargs="--iterations 2 --photos 1 --crop 128 --presets sharpen-jpeg420"
  targs=(--batch 2 --workers 0 --crop 32 --embed-dim 16 --blocks 2 --threads 1)
fi
[[ $mode == gpu ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$W/nvidia_smi.log" 2>&1
echo "gpu_round3: $mode, training ${TRAIN}s, deadline ${DEADLINE}s, $(nproc) CPUs, work in $W" >&2
SWEEP=("$PY" benchmarks/quality_sweep.py --round3 --device "$dev" --quality-args "$qargs")

# 1. the recipe rows on the shipped stage 1, in the background (RECIPES= for none)
read -r -a RECIPE_NAMES <<<"${RECIPES-default it400}"
pid_a=
if (( ${#RECIPE_NAMES[@]} )); then
  timeout --kill-after=5 "$(left)" "${SWEEP[@]}" --only-round3 "${RECIPE_NAMES[@]}" --jobs "$jobs_a" \
    --out "$W/round3_recipes.json" >"$W/recipes.log" 2>&1 &
  pid_a=$!
fi

# 2. the stage-1 candidates, side by side on the GPU, for the same time each
declare -A S1=([w32]="--width 32 --skip" [noskip]="--width 32 --no-skip" [w64]="--width 64 --skip"
              [noskip-t200]="--width 32 --no-skip" [degae-t200]="--width 64 --no-skip")
read -r -a NAMES <<<"${S1_NAMES:-w32 noskip w64}"
pids=()
for n in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  timeout --kill-after=5 $(( TRAIN + 75 )) "${LW[@]}" train-degae --out "$W/stage1_$n.safetensors" --log "$W/train_$n.log" \
    --device "$dev" ${S1[$n]} --iters 1000000 --time-limit "$TRAIN" --ckpt-every 250 "${targs[@]}" \
    >"$W/train_$n.out" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "training done at $(( $(date +%s) - T0 ))s: $(ls "$W"/stage1_*.safetensors 2>/dev/null | wc -l) checkpoint(s)" >&2
for n in "${NAMES[@]}"; do tail -n 1 "$W/train_$n.out" >&2; done

# 3. the candidates through the dev round
have=(); for n in "${NAMES[@]}"; do [[ -f $W/stage1_$n.safetensors ]] && have+=("s1-$n"); done
if (( ${#have[@]} )); then
  timeout --kill-after=5 "$(left)" "${SWEEP[@]}" --only-round3 "${have[@]}" --stage1-dir "$W" --jobs "$jobs_b" \
    --out "$W/round3_stage1.json" >"$W/stage1.log" 2>&1
fi
[[ -n $pid_a ]] && wait "$pid_a"
echo "sweeps done at $(( $(date +%s) - T0 ))s" >&2

# 4. one file, the rule over every row that finished
reuse=(); for f in ${REUSE:-} "$W/round3_recipes.json" "$W/round3_stage1.json"; do [[ -f $f ]] && reuse+=("$f"); done
if (( ${#reuse[@]} )); then
  "${SWEEP[@]}" --reuse "${reuse[@]}" --join --out "$OUT/quality_dev_sweep_round3.json" \
    2>&1 | tail -n 1 >&2
fi
cat "$W/recipes.log" "$W/stage1.log" 2>/dev/null | grep -E "s +lway|failed|Error" >&2
for f in "$W"/stage1_*.safetensors; do
  [[ -f $f ]] || continue
  size=$(stat -c %s "$f")
  if (( size < 16000000 )); then cp "$f" "$OUT/"; else split -b 15000000 -d "$f" "$OUT/$(basename "$f").part"; fi
done
(cd "$W" && tar czf "$OUT/logs.tgz" ./*.log ./*.out ./*.json 2>/dev/null)
echo "gpu_round3 done at $(( $(date +%s) - T0 ))s" >&2
