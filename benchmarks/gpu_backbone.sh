#!/usr/bin/env bash
# The quality benchmark on a second, larger backbone, on one NVIDIA GPU, in calls of under 10 minutes.
#
#   bash benchmarks/gpu_backbone.sh OUTDIR [QUALITY_ARG...]              # on the GPU machine
#   bash benchmarks/gpu_backbone.sh --cpu-smoke OUTDIR [QUALITY_ARG...]  # the same steps, tiny, on the CPU
#
# What runs: benchmarks/quality.py exactly as the README's benchmark rows (seeds 1-2, all four evaluation
# presets, six photos, 200 iterations, the shipped recipe and stage 1, naive beside lway), with MODEL
# (default realesrgan-x4plus, an RRDBNet of 16.7M weights, 27x the default backbone) in both settings
# (one model per mixed folder; one per degradation folder) and over adaptation seed offsets 0, 1, 2.
# Nothing is chosen from these numbers: they report how the recipe fixed on the compact backbone carries.
# Each run is split into units (one quality.py process per seed, and per preset in the per-folder
# setting), JOBS (default 2) at a time, in the order offset 0, 1, 2, mixed folders first; everything
# stops at DEADLINE_S (default 470 s after the start). SETTINGS (default "all preset"), OFFSETS
# (default "0 1 2") and SEEDS (data seeds, default "1 2": the benchmark's) pick the runs; EXTRA adds quality.py
# arguments to every unit (e.g. "--detail-cap 1.2", split at spaces; QUALITY_ARGs after OUTDIR are added each as
# one argument, for a path with spaces) and TAG (default empty) ends the merged files' names.
# Measured on an H200 (fp32): the GPU is the bottleneck, ~7 adaptation steps a second in all whether 2
# processes share it (0.30 s a step each) or 10 (1.4 s), so one run takes ~2.2 min in the mixed setting (2 seeds x 2 methods x 200 steps) and ~8 min per folder (8
# folders x 2 x 200): the whole grid is ~30 min, several calls. Scoring runs on the GPU in full fp32
# (--score-device cuda; a CPU core would take ~3 s per crop with this backbone); if a first tiny unit
# fails on it, the CPU scores.
# Then each (setting, offset) whose units all finished is merged (quality.py --merge) into
# quality_<MODEL>_<all|preset>_adaptseed<offset><TAG>.json. OUTDIR receives results.tgz (units, merged
# files, logs, nvidia-smi) and summary.txt. Exits 1 if a unit or a merge failed (or a run was not merged).
# Assumes this package importable (PYTHONPATH), the model store in $LWAYRT_HOME holding MODEL, and a
# Python whose torch has CUDA (PYTHON=..., default python3).
set -uo pipefail
mode=gpu
if [[ ${1:-} == --cpu-smoke ]]; then mode=cpu; shift; fi
if [[ $# -lt 1 || ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
OUT=$1; shift
ARGS=("$@")  # more quality.py arguments for every unit, each kept whole
mkdir -p "$OUT" || { echo "error: cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)  # before the cd below: a relative OUTDIR is the caller's
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODEL=${MODEL:-realesrgan-x4plus}
T0=$(date +%s)
DEADLINE=${DEADLINE_S:-470}
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
W=$(mktemp -d); mkdir -p "$W/units" "$W/logs" "$W/merged" "$W/failed"
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM  # the EXIT trap runs then too
rc=0

if [[ $mode == gpu ]]; then
  "$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "error: $PY sees no CUDA GPU; use --cpu-smoke to check the script on a CPU" >&2; exit 2; }
  dev=(--device cuda --score-device cuda); JOBS=${JOBS:-2}; qargs=()
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$W/logs/nvidia_smi.log" 2>&1
else
  dev=(--device cpu); JOBS=${JOBS:-2}
  qargs=(--iterations 2 --photos 1 --crop 96 --patch-size 16 --batch-size 1)
fi
PRESETS=(motion-blur box-downscale sharpen-jpeg420 resize-sensor-noise)
SEEDS=(${SEEDS:-1 2})
EXTRA=(${EXTRA:-})
TAG=${TAG:-}
OFFSETS=(${OFFSETS:-0 1 2})
SETTINGS=" ${SETTINGS:-all preset} "
echo "gpu_backbone: $mode, $MODEL, $JOBS jobs, deadline ${DEADLINE}s, $(nproc) CPUs, work in $W" >&2

unit() {  # NAME ARGS...: one quality.py process, stopped at the deadline
  local name=$1; shift
  local t; t=$(left)
  if (( t < 15 )); then echo "skipped $name (deadline)" >&2; touch "$W/failed/$name"; return 1; fi
  if timeout --kill-after=5 "$t" "$PY" benchmarks/quality.py --model "$MODEL" --threads 1 "${dev[@]}" \
      --methods naive lway "${qargs[@]}" "${EXTRA[@]}" "${ARGS[@]}" "$@" --out "$W/units/$name.json" >"$W/logs/$name.log" 2>&1; then
    echo "done $name at $(( $(date +%s) - T0 ))s" >&2
  else
    local code=$?
    echo "failed $name at $(( $(date +%s) - T0 ))s (rc $code): $(tail -n 1 "$W/logs/$name.log")" >&2
    touch "$W/failed/$name"; return 1
  fi
}

# 0. a tiny unit first: falls back to CPU scoring if the GPU path fails
if [[ $mode == gpu ]] && ! unit preflight --iterations 2 --photos 1 --presets box-downscale --seeds "${SEEDS[0]}" --folder all; then
  echo "preflight failed: scoring on the CPU" >&2; dev=(--device cuda)
fi
rm -f "$W/units/preflight.json" "$W/failed/preflight"  # a failed preflight is a fallback, not a failure

# 1. every unit, JOBS at a time, offset 0 first
for o in "${OFFSETS[@]}"; do
  for s in "${SEEDS[@]}"; do
    [[ $SETTINGS == *" all "* ]] || break
    while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
    unit "all_o${o}_s${s}" --folder all --seeds "$s" --adapt-seed-offset "$o" &
  done
  for p in "${PRESETS[@]}"; do
    [[ $SETTINGS == *" preset "* ]] || break
    for s in "${SEEDS[@]}"; do
      while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
      unit "preset_o${o}_${p}_s${s}" --folder preset --presets "$p" --seeds "$s" --adapt-seed-offset "$o" &
    done
  done
done
wait
echo "units done at $(( $(date +%s) - T0 ))s" >&2
failed=$(ls "$W/failed" | tr '\n' ' ')
if [[ -n $failed ]]; then echo "failed or skipped units: $failed" | tee -a "$OUT/summary.txt" >&2; rc=1; fi

# 2. one file per (setting, offset) whose units all finished
for o in "${OFFSETS[@]}"; do
  for setting in $SETTINGS; do
    parts=()
    if [[ $setting == all ]]; then for s in "${SEEDS[@]}"; do parts+=("$W/units/all_o${o}_s${s}.json"); done
    else for p in "${PRESETS[@]}"; do for s in "${SEEDS[@]}"; do parts+=("$W/units/preset_o${o}_${p}_s${s}.json"); done; done; fi
    missing=0; for f in "${parts[@]}"; do [[ -f $f ]] || missing=$((missing + 1)); done
    name="quality_${MODEL}_${setting}_adaptseed${o}${TAG}"
    if (( missing )); then
      echo "$name: $missing of ${#parts[@]} units missing, not merged" | tee -a "$OUT/summary.txt" >&2; rc=1; continue
    fi
    if ! "$PY" benchmarks/quality.py --merge "$W/merged/$name.json" "${parts[@]}" >"$W/logs/merge_$name.log" 2>&1; then
      echo "$name: merge failed: $(tail -n 1 "$W/logs/merge_$name.log")" | tee -a "$OUT/summary.txt" >&2; rc=1; continue
    fi
    "$PY" - "$W/merged/$name.json" <<'EOF' | tee -a "$OUT/summary.txt" >&2
import json, sys
r = json.load(open(sys.argv[1])); g = r["gain_over_unadapted"]
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: lway {g['lway']['mean_db']:+.3f} dB, worst {g['lway']['min_db']:+.3f}, "
      f"naive {g['naive']['mean_db']:+.3f}; done-when {r['done_when']}")
for m, checks in r.get("done_when_detail_cap", {}).items():
    print(f"  {m}: {g[m]['mean_db']:+.3f} dB, worst {g[m]['min_db']:+.3f}; done-when {checks}")
EOF
  done
done
(cd "$W" && tar czf "$OUT/results.tgz" units merged logs) || rc=1
echo "gpu_backbone done at $(( $(date +%s) - T0 ))s (exit $rc)" | tee -a "$OUT/summary.txt" >&2
exit $rc
