#!/usr/bin/env bash
# The main job: starts Azurite and one silo on this machine, and drives the fleet through the
# command-line tool (built on the client SDK), from the teacher shipped in models/shapesworld/: the fleet
# distils the compact model (the `cpu` student, half the teacher's depth) from the task-agnostic teacher,
# then makes a VQA variant and an NLVR2 variant on demand (modal-adaptive pruning of the compact model with
# KD from the shipped task teacher, shrink, scores on the test split beside the teacher's), with progress;
# prints each variant's scores, size, speed-up and kept fractions, and asks the VQA variant questions
# through the CLI and the REST gateway (a random API key for this run), expected answers beside the given
# ones. It stops what it started. Everything it writes goes under .fleet/ (data, work, logs, Azurite
# data); a second run reuses what exists (the fleet returns the existing model and variants).
# Budgets: about 10 minutes of training on 2 cores (docs/fleet.md, "The main job").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
state="$root/.fleet"; mkdir -p "$state"
started_azurite=0; silo_pid=""
cleanup() {
  if [[ -n "$silo_pid" ]] && kill -0 "$silo_pid" 2>/dev/null; then kill "$silo_pid"; wait "$silo_pid" 2>/dev/null || true; fi
  if [[ $started_azurite == 1 ]]; then AZURITE_DIR="$state/azurite" scripts/azurite.sh stop >/dev/null; fi
}
trap cleanup EXIT
t0=$(date +%s)

echo "== build (Release)"
[[ -x node_modules/.bin/azurite ]] || npm ci --no-audit --no-fund --loglevel=error
dotnet build EfficientVlm.Fleet.sln -c Release -nologo -clp:ErrorsOnly

echo "== storage"
if AZURITE_DIR="$state/azurite" scripts/azurite.sh status >/dev/null 2>&1; then
  echo "using the Azurite already answering on 127.0.0.1:10000-10002"
else
  AZURITE_DIR="$state/azurite" scripts/azurite.sh start; started_azurite=1
fi

vlm() { dotnet model/EfficientVlm.Tool/bin/Release/net10.0/vlm.dll "$@"; }
# DEMO_SCALE=full: the same job at the budgets of docs/pruning.md ("variants that keep 98.4%") on the full default data
# set (data/shapes; about an hour), as its own compact model, with retrieval and captioning variants as well; the
# default is the 15-minute main job.
DEMO_SCALE="${DEMO_SCALE:-demo}"
case "$DEMO_SCALE" in
  demo)
    model=compact-cpu; vqa_budget=(--train-limit 2048); nlvr2_budget=(); distill_schedule=(); more_tasks=(); stem=()
    echo "== data (ShapesWorld: 4,000 train images, 300 test images with 600 questions, 4,000 + 500 NLVR2 pairs)"
    data="$state/data-v2"
    if [[ ! -f "$data/vocab.txt" ]]; then
      vlm data generate --out "$data" --train-images 4000 --eval-images 300 --train-pairs 4000 --eval-pairs 500
    fi;;
  full)
    model=compact-cpu-full; vqa_budget=(--train-limit 8192 --stem-target 0.5); nlvr2_budget=(--train-limit 12000 --stem-target 0.75 --frozen-mask-epochs 1)
    distill_schedule=(--decay Cosine --warmup 0.05)   # as scripts/compress.sh distils
    more_tasks=(retrieval captioning)                 # the other two tasks' variants too, at compress.sh's budgets
    stem=(--stem-target 0.65 --frozen-mask-epochs 1)  # as compress.sh prunes retrieval's stem (VQA 0.5, NLVR2 0.75)
    echo "== data (ShapesWorld, the default sizes: 20,000 train images, 20,000 NLVR2 pairs; test 2,000 questions, 2,000 pairs)"
    data="${FULL_DATA:-data/shapes}"
    [[ -f "$data/annotations/instances_train.json" ]] || vlm data generate --out "$data" --seed 1;;
  *) echo "DEMO_SCALE must be demo or full"; exit 2;;
esac

echo "== teacher: shipped in models/shapesworld/ (test scores of its card: models/shapesworld/MODEL_CARD.md)"
teachers=models/shapesworld
for name in teacher vqa nlvr2 "${more_tasks[@]}"; do
  [[ -f "$teachers/$name/model.safetensors" ]] || { echo "missing $teachers/$name: the shipped teacher comes with the clone"; exit 1; }
done

echo "== silo (one CPU silo that may take GPU work: development setting, it says so in its log)"
http_port="${FLEET_DEMO_HTTP_PORT:-8080}"
api_key="${FLEET_DEMO_API_KEY:-demo-key-$(date +%s%N | sha256sum | head -c 16)}"
Urls="http://127.0.0.1:$http_port" Fleet__ClusterId="efficientvlm-demo" Fleet__Silo__FastFailureDetection=true \
  Fleet__Placement__AllowCpuSilos=true Fleet__Jobs__WorkDirectory="$state/work" Fleet__Gateway__ApiKeys__0="$api_key" \
  dotnet silo/EfficientVlm.Silo/bin/Release/net10.0/EfficientVlm.Silo.dll > "$state/silo.log" 2>&1 &
silo_pid=$!
for _ in $(seq 1 240); do
  if curl -sf "http://127.0.0.1:$http_port/ready" > /dev/null; then break; fi
  kill -0 "$silo_pid" 2>/dev/null || { echo "silo exited; log:"; cat "$state/silo.log"; exit 1; }
  sleep 0.5
done
curl -sf "http://127.0.0.1:$http_port/ready" > /dev/null || { echo "silo not ready after 120 s; log:"; tail -50 "$state/silo.log"; exit 1; }
echo "silo ready (pid $silo_pid, http $http_port, log .fleet/silo.log)"

echo "== client"
fleet() { Fleet__ClusterId="efficientvlm-demo" dotnet client/EfficientVlm.Cli/bin/Release/net10.0/fleet.dll "$@"; }
fleet probe
dataset=$(fleet data upload "$data" --name shapesworld-demo | tail -1)
echo "dataset $dataset"
# general distillation of the compact model from the task-agnostic teacher; its variants are pruned with KD from
# the task teachers (each variant starts at pruning: the teachers come fine-tuned)
task_teachers=()
for task in vqa nlvr2 "${more_tasks[@]}"; do task_teachers+=(--task-teacher "$task=$teachers/$task"); done
fleet models create --id "$model" --preset cpu --teacher "$teachers/teacher" "${task_teachers[@]}" --dataset "$dataset" \
  --distill-epochs 1 --lr 3e-4 "${distill_schedule[@]}" --checkpoint-every 50 --watch
fleet models list
fleet variants create --task vqa --model "$model" --target 0.35 --dataset "$dataset" \
  --prune-epochs 4 --prune-warmup-epochs 1 --prune-lr 3e-4 "${vqa_budget[@]}" --checkpoint-every 100 --watch
fleet variants create --task nlvr2 --model "$model" --target 0.25 --dataset "$dataset" \
  --prune-epochs 4 --prune-warmup-epochs 1 --prune-lr 5e-4 "${nlvr2_budget[@]}" --checkpoint-every 100 --watch
for task in "${more_tasks[@]}"; do
  task_stem=("${stem[@]}"); [[ $task == captioning ]] && task_stem=()
  fleet variants create --task "$task" --model "$model" --target 0.25 --dataset "$dataset" \
    --prune-epochs 2 --prune-warmup-epochs 1 --prune-lr 3e-4 --train-limit 8000 "${task_stem[@]}" --checkpoint-every 100 --watch
done
echo "== the fleet's variants (full test split; speed-up over the task teacher, measured side by side)"
fleet variants list

echo "== calls: the VQA variant on test images (expected: the annotators' commonest answer)"
variant=$(fleet variants list | grep -o "vqa-$model-s35-${dataset:0:8}" | head -1)
nlvr=$(fleet variants list | grep -o "nlvr2-$model-s25-${dataset:0:8}" | head -1)
printf '%-28s %-40s %-10s %s\n' image question expected "given (CLI)"
while IFS=$'\t' read -r image question expected; do
  printf '%-28s %-40s %-10s ' "$(basename "$image")" "$question" "$expected"
  fleet ask --variant "$variant" --image "$image" --question "$question" < /dev/null
done < <(vlm data examples --data "$data" --task vqa --split test --limit 6)
echo "REST (POST /v1/variants/$variant/vqa, multipart):"
while IFS=$'\t' read -r image question expected; do
  printf '%-28s %-40s expected %-10s given ' "$(basename "$image")" "$question" "$expected"
  curl -s -H "X-Api-Key: $api_key" -F "image=@$image" --form-string "question=$question" "http://127.0.0.1:$http_port/v1/variants/$variant/vqa"; echo
done < <(vlm data examples --data "$data" --task vqa --split test --limit 2 --per-image 1)
echo "REST with a corrupt image (problem details, 400):"
head -c 100 /dev/urandom > "$state/corrupt.png"
curl -s -H "X-Api-Key: $api_key" -F "image=@$state/corrupt.png" -F "question=what color?" \
  "http://127.0.0.1:$http_port/v1/variants/$variant/vqa"; echo
echo "NLVR2 variant, test pairs:"
while IFS=$'\t' read -r left right statement expected; do
  printf '%-44s expected %-5s given ' "\"$statement\"" "$expected"
  fleet verify --variant "$nlvr" --left "$left" --right "$right" --statement "$statement" < /dev/null
done < <(vlm data examples --data "$data" --task nlvr2 --split test --limit 3)
fleet aliases set vqa-default "$variant"
IFS=$'\t' read -r image question expected < <(vlm data examples --data "$data" --task vqa --split test --limit 1)
printf 'through the alias vqa-default: %s (expected %s) -> ' "$question" "$expected"
fleet ask --variant vqa-default --image "$image" --question "$question"
echo "serving metrics of this silo:"
curl -s "http://127.0.0.1:$http_port/metrics" | grep -E '^fleet_(requests_total|batch_size_(sum|count)|model_load_seconds_(sum|count))' || true

echo "== done in $(( $(date +%s) - t0 )) s"
