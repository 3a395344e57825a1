#!/usr/bin/env bash
# Serving benchmarks (issue 8), on the VQA variant that scripts/demo.sh made (run it first):
#   cold start: a fresh silo with an empty model cache, blob to first answer (REST call timed by curl);
#   (a) the ceiling: the variant's bundle straight on a device executor, per batch size (its best batch is kept);
#   (b) through the SDK (fleet load) with dynamic batching, 1/8/32/128 concurrent callers, batches capped at
#       BENCH_MAX_BATCH (default "best": (a)'s best batch size in this run);
#   (c) the same with batching off (MaxBatchSize=1).
# One silo and the load generator share this machine. Results: .fleet/bench-serving-*.csv and stdout.
# BENCH_PIN: 0 (default) all share every core;
#   1: the whole silo (1 torch thread) and the ceiling on core 0, the load generator on core 1;
#   device: only the executor thread (1 torch thread) on core 0, standing in for a device, and the rest of the
#   silo (Orleans, decoding, the batch loop) with the load generator on core 1; the ceiling's executor on core 0.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
state="$root/.fleet"
seconds="${BENCH_SECONDS:-10}"
delay="${BENCH_QUEUE_DELAY:-00:00:00.005}"   # Fleet:Serving:MaxQueueDelay of run (b)
pin="${BENCH_PIN:-0}"
max_batch="${BENCH_MAX_BATCH:-best}"
silo_cpu=(); client_cpu=(); ceiling_cpu=(); threads=(); silo_env=()
case "$pin" in
  0) ;;
  1) silo_cpu=(taskset -c 0); client_cpu=(taskset -c 1); ceiling_cpu=(taskset -c 0); threads=(--threads 1)
     silo_env=(Fleet__Silo__Executor__TorchThreads=1) ;;
  device) silo_cpu=(taskset -c 1); client_cpu=(taskset -c 1); threads=(--threads 1 --cpus 0)
     silo_env=(Fleet__Silo__Executor__TorchThreads=1 Fleet__Silo__Executor__Cpus__0=0) ;;
  *) echo "BENCH_PIN must be 0, 1 or device"; exit 2 ;;
esac
[[ -d "$state/azurite" && -f "$state/data/vocab.txt" ]] || { echo "run scripts/demo.sh first (it makes the variant this measures)"; exit 1; }
silo_pid=""; started_azurite=0
cleanup() {
  if [[ -n "$silo_pid" ]] && kill -0 "$silo_pid" 2>/dev/null; then kill "$silo_pid"; wait "$silo_pid" 2>/dev/null || true; fi
  if [[ $started_azurite == 1 ]]; then AZURITE_DIR="$state/azurite" scripts/azurite.sh stop >/dev/null; fi
}
trap cleanup EXIT
dotnet build EfficientVlm.Fleet.sln -c Release -nologo -clp:ErrorsOnly
if ! AZURITE_DIR="$state/azurite" scripts/azurite.sh status >/dev/null 2>&1; then
  AZURITE_DIR="$state/azurite" scripts/azurite.sh start; started_azurite=1
fi
fleet() { Fleet__ClusterId="efficientvlm-demo" "${client_cpu[@]}" dotnet client/EfficientVlm.Cli/bin/Release/net10.0/fleet.dll "$@"; }
key="bench-$RANDOM$RANDOM"
start_silo() { # $1 = max batch size, $2 = work folder
  Urls="http://127.0.0.1:8080" Fleet__ClusterId="efficientvlm-demo" Fleet__Silo__FastFailureDetection=true \
    Fleet__Placement__AllowCpuSilos=true Fleet__Jobs__WorkDirectory="$2" Fleet__Gateway__ApiKeys__0="$key" \
    Fleet__Serving__MaxBatchSize="$1" Fleet__Serving__MaxQueueDelay="$delay" Logging__LogLevel__Default=Warning \
    env "${silo_env[@]}" "${silo_cpu[@]}" \
    dotnet silo/EfficientVlm.Silo/bin/Release/net10.0/EfficientVlm.Silo.dll > "$state/bench-silo.log" 2>&1 &
  silo_pid=$!
  for _ in $(seq 1 240); do curl -sf http://127.0.0.1:8080/ready >/dev/null && return 0; sleep 0.5; done
  echo "silo not ready"; tail -30 "$state/bench-silo.log"; exit 1
}
stop_silo() { kill "$silo_pid"; wait "$silo_pid" 2>/dev/null || true; silo_pid=""; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F); pinned: $pin"
start_silo 32 "$state/bench-work-cold"
variant=$(fleet variants list | grep -o 'vqa-compact-demo-s35-[0-9a-f]*' | head -1)
[[ -n "$variant" ]] || { echo "no VQA variant: run scripts/demo.sh first"; exit 1; }
image=$(ls "$state/data/images/test/"*.png | head -1)
rm -rf "$state/bench-work-cold/cache"
echo "== cold start (fresh silo, empty model cache): blob download + load + first answer, via REST"
for call in first second; do
  curl -s -o /dev/null -w "$call call: %{time_total} s (HTTP %{http_code})\n" -H "X-Api-Key: $key" \
    -F "image=@$image" -F "question=what color is the circle?" "http://127.0.0.1:8080/v1/variants/$variant/vqa"
done

stop_silo

echo "== (a) the ceiling: the bundle on a device executor, no Orleans"
bundle=$(ls -d "$state/bench-work-cold/cache/model/"*/ | head -1)
"${ceiling_cpu[@]}" dotnet bench/EfficientVlm.Bench/bin/Release/net10.0/EfficientVlm.Bench.dll serving-executor --bundle "${bundle%/}" \
  --images "$state/data/images/test" --seconds 5 "${threads[@]}" | tee "$state/bench-serving-ceiling.txt"
if [[ $max_batch == best ]]; then
  max_batch=$(sed -n 's/^best batch: \([0-9]*\).*/\1/p' "$state/bench-serving-ceiling.txt")
  [[ -n "$max_batch" ]] || { echo "the ceiling did not report its best batch"; exit 1; }
fi

echo "== (b) through the SDK, dynamic batching (MaxBatchSize $max_batch, MaxQueueDelay $delay)"
start_silo "$max_batch" "$state/bench-work-cold"
fleet load --variant "$variant" --images "$state/data/images/test" --callers 1,8,32,128 --seconds "$seconds" --csv "$state/bench-serving-batched.csv"
stop_silo

echo "== (c) through the SDK, no batching (MaxBatchSize 1)"
start_silo 1 "$state/bench-work-cold"
fleet load --variant "$variant" --images "$state/data/images/test" --callers 1,8,32,128 --seconds "$seconds" --csv "$state/bench-serving-unbatched.csv"
stop_silo
