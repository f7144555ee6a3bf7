#!/usr/bin/env bash
# Reproduces the CPU serve-bench results in README.md (and benchmarks/results/serve_bench_cpu*.json/png).
#
#   bash benchmarks/serve_bench_cpu.sh            # all three runs
#   bash benchmarks/serve_bench_cpu.sh STEP       # one of them: compare (torch vs ONNX Runtime), tuning (session
#                                                 # options), load (tiles, concurrency)
#
# OUT (default benchmarks/results, where the committed files are: a run replaces them), LWAYRT, MODEL.
# Every run verifies each backend against torch fp32 before timing it, and records the machine, the
# package versions, the load average and the exact command in its JSON. Compare ratios within one
# run: absolute times only hold for the machine (and the load) that produced them.
set -euo pipefail
what=${1:-all}
case $what in
  all|compare|tuning|load) ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "error: unknown step '$what' (all, compare, tuning, load)" >&2; exit 2 ;;
esac
if [[ -n ${OUT:-} ]]; then  # before the cd below: a relative OUT is the caller's
  mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
fi
cd "$(dirname "$0")/.."
LWAYRT=${LWAYRT:-.venv/bin/lwayrt}
OUT=${OUT:-benchmarks/results}
MODEL=${MODEL:-realesr-animevideov3}

if [[ $what == all || $what == compare ]]; then
  # torch eager vs ONNX Runtime (CPU provider, default session options) at two sizes.
  "$LWAYRT" serve-bench --model "$MODEL" --backend torch --backend ort-cpu --size 128 --size 256 \
    --min-iters 30 --min-time-s 5 --json "$OUT/serve_bench_cpu.json" --chart "$OUT/serve_bench_cpu.png"
fi

if [[ $what == all || $what == tuning ]]; then
  # ONNX Runtime session options (threads, graph optimisation, memory arena, execution mode) at 256x256,
  # beside torch eager and its CPU options (channels-last, bf16 autocast).
  "$LWAYRT" serve-bench --model "$MODEL" --size 256 --min-iters 15 --min-time-s 5 \
    --backend torch --backend torch+threads=1 --backend torch+cl --backend torch+bf16 \
    --backend ort-cpu --backend ort-cpu+threads=1 --backend ort-cpu+opt=basic --backend ort-cpu+opt=disable \
    --backend ort-cpu+noarena --backend ort-cpu+parallel \
    --json "$OUT/serve_bench_cpu_ort_tuning.json" --chart "$OUT/serve_bench_cpu_ort_tuning.png"
fi

if [[ $what == all || $what == load ]]; then
  # Whole image vs 128-px tiles (16-px overlap, as recorded), and 1 vs 2 closed-loop workers (throughput under load).
  "$LWAYRT" serve-bench --model "$MODEL" --size 256 --backend torch --backend ort-cpu \
    --tile 0 --tile 128 --tile-overlap 16 --concurrency 1 --concurrency 2 --min-iters 10 --min-time-s 3 \
    --json "$OUT/serve_bench_cpu_tiles_load.json" --chart "$OUT/serve_bench_cpu_tiles_load.png"
fi
