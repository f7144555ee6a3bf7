#!/usr/bin/env bash
# Stage-1 candidates trained side by side on one NVIDIA GPU for a fixed time, then evaluated there.
#
#   bash benchmarks/stage1_gpu_train.sh OUTDIR [SECONDS]        # default 240 s of training per run
#   bash benchmarks/stage1_gpu_train.sh --cpu-smoke OUTDIR      # the same steps, tiny, on the CPU
#
# Three runs of `lwayrt train-degae` share the GPU: the then shipped recipe (R width 32 with input skip, cross-image
# pairing), DegAE's width 64, and width 32 with same-image pairing (LWay's figure, and what stage 2
# does: E reads the very image R must rebuild); all at batch 32 with batch synthesis in worker
# processes (a GPU step is faster than one core's synthesis); `--time-limit` fixes each run's iteration count from its measured rate, and the
# count is recorded in the checkpoint. Each checkpoint is then scored by `lwayrt eval-degae` on the
# held-out photos (same protocol as benchmarks/results/stage1_eval.json).
#
# OUTDIR receives: stage1_{w32,w64,w32same}.safetensors, train_*.log, eval_*.json/.log.
# Budget: SECONDS + ~15 s start-up, then the evaluations, which are CPU-bound (degradation
# synthesis): one takes ~60 s on a CPU core; three side by side on the H200 machine had not
# finished after 90 s. Take the checkpoints out before the evaluations if time is short.
# Needs a Python whose torch has CUDA (PYTHON=...), this package importable, and
# realesr-animevideov3 in the model store ($LWAYRT_HOME) or its package installed.
set -uo pipefail

mode=gpu
if [[ ${1:-} == --cpu-smoke ]]; then mode=cpu; shift; fi
if [[ $# -lt 1 || $# -gt 2 || ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
OUT=$1
SECONDS_PER_RUN=${2:-240}
mkdir -p "$OUT" || { echo "error: cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)  # before the cd below: a relative OUTDIR is the caller's
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
LW=("$PY" -c 'import sys; from lway_rt.cli import main; sys.exit(main())')

if [[ $mode == gpu ]]; then
  "$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "error: $PY sees no CUDA GPU; use --cpu-smoke to check the script on a CPU" >&2; exit 2; }
  dev=cuda; batch=32; workers=4; secs=$SECONDS_PER_RUN; iters=1000000; eval_args=()
else
  dev=cpu; batch=4; workers=2; secs=${2:-8}; iters=1000000; eval_args=(--crops-per-image 1 --draws 2)
fi
nproc_=$(nproc 2>/dev/null || echo 2)
echo "stage1_gpu_train: $mode, ${secs}s per run, batch $batch, $workers workers each, $nproc_ CPUs" >&2

declare -A RUNS=([w32]="--width 32 --skip" [w64]="--width 64 --skip" [w32same]="--width 32 --pairing same --skip")
NAMES=(w32 w64 w32same)
pids=()
for n in "${NAMES[@]}"; do
  extra=()
  [[ $mode == cpu ]] && extra=(--crop 32 --embed-dim 16 --blocks 2 --threads 1)
  # shellcheck disable=SC2086
  timeout --kill-after=10 $(( ${secs%.*} + 120 )) "${LW[@]}" train-degae --out "$OUT/stage1_$n.safetensors" \
    --log "$OUT/train_$n.log" --device "$dev" ${RUNS[$n]} --batch "$batch" --iters "$iters" --workers "$workers" \
    --time-limit "$secs" --ckpt-every 500 "${extra[@]}" >"$OUT/train_$n.out" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
echo "training done (exit $rc)" >&2

epids=()
for n in "${NAMES[@]}"; do  # side by side: each is small next to the GPU
  [[ -f $OUT/stage1_$n.safetensors ]] || continue
  timeout 180 "${LW[@]}" eval-degae --checkpoint "$OUT/stage1_$n.safetensors" --device "$dev" "${eval_args[@]}" \
    --json "$OUT/eval_$n.json" >"$OUT/eval_$n.log" 2>&1 &
  epids+=($!)
done
for p in "${epids[@]}"; do wait "$p" || rc=1; done
for n in "${NAMES[@]}"; do [[ -f $OUT/eval_$n.log ]] && { echo "== $n" >&2; tail -n 2 "$OUT/eval_$n.log" >&2; }; done
exit $rc
