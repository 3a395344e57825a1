#!/usr/bin/env bash
# Issue #20's speed measurement: each task's shipped teacher against the variants scripts/compress.sh made, side by side
# in one process per task (`bench task-latency`: the serving call a user waits for, on the first test records, every
# repeat timing each model once in alternating order; speed-up = ratio of medians, spread = p10-p90 of the per-repeat
# ratios), at batch 1 and 32. Run it on a machine doing nothing else.
# Knobs: RUNS (compress.sh's folder, default runs/compress), DATA, THREADS (torch threads, default 1: the serving
# setting that is fastest at batch 1, docs/pruning.md), REPEATS (default 60), VARIANTS_<TASK> (comma-separated shrunk
# folders; default $RUNS/<task>/shrunk, and for NLVR2 also $RUNS/nlvr2-stem*/shrunk when there).
# Output: stdout and $RUNS/bench-variants.txt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
RUNS="${RUNS:-runs/compress}"; DATA="${DATA:-data/shapes}"; THREADS="${THREADS:-1}"; REPEATS="${REPEATS:-60}"; T=models/shapesworld
dotnet build bench/EfficientVlm.Bench -c Release -nologo -clp:ErrorsOnly
bench() { dotnet bench/EfficientVlm.Bench/bin/Release/net10.0/EfficientVlm.Bench.dll "$@"; }
out="$RUNS/bench-variants.txt"
: > "$out"
for task in vqa nlvr2 retrieval captioning; do
  var="VARIANTS_${task^^}"
  variants="${!var:-}"
  if [[ -z $variants ]]; then
    found=()
    for dir in "$RUNS/$task/shrunk" "$RUNS/$task"-stem*/shrunk; do [[ -f $dir/config.json ]] && found+=("$dir"); done
    [[ ${#found[@]} -gt 0 ]] || { echo "bench-variants: no $task variant under $RUNS (scripts/compress.sh $task makes one)"; continue; }
    variants=$(IFS=,; echo "${found[*]}")
  fi
  repeats=$REPEATS; [[ $task == captioning ]] && repeats=$(( REPEATS / 2 ))   # beam search: slow at batch 32
  echo "== $task: $T/$task against $variants" | tee -a "$out"
  bench task-latency --models "$T/$task,$variants" --data "$DATA" --batches 1,32 --repeats "$repeats" --warmup 5 \
    --threads "$THREADS" | tee -a "$out"
done
