#!/usr/bin/env bash
# The main job: starts Azurite and one silo on this machine, and drives the fleet through the
# command-line tool (built on the client SDK): a small ShapesWorld data set and a briefly
# pre-trained teacher are made locally, then the fleet distils the compact model and creates a VQA
# variant and an NLVR2 variant on demand (fine-tune the teacher, prune + shrink the compact model,
# score it), with progress, prints each variant's numbers, and calls them through the CLI and the REST
# gateway (with a random API key for this run). It stops what it started. Everything it writes goes
# under .fleet/ (data, runs, logs, Azurite data); a second run reuses what exists (the fleet returns
# the existing model and variant). The budgets are tiny so that it ends in minutes on 2 cores: the
# scores show the machinery, not the method (docs/training.md and docs/pruning.md have real runs).
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
echo "== data (ShapesWorld, small)"
if [[ ! -f "$state/data/vocab.txt" ]]; then
  vlm data generate --out "$state/data" --train-images 1000 --eval-images 100 --train-pairs 400 --eval-pairs 100
fi

echo "== teacher (pre-trained here, briefly: ITC + ITM + MLM)"
if [[ ! -f "$state/runs/teacher/best/model.safetensors" ]]; then
  vlm train pretrain --preset demo-teacher --data "$state/data" --out "$state/runs/teacher" --epochs 1 --batch 32 \
    --checkpoint-every 10 > "$state/pretrain.log" 2>&1 || { tail -20 "$state/pretrain.log"; exit 1; }
  tail -1 "$state/pretrain.log"
fi

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
dataset=$(fleet data upload "$state/data" --name shapesworld-small | tail -1)
echo "dataset $dataset"
fleet models create --id compact-demo --preset demo --teacher "$state/runs/teacher/best" --dataset "$dataset" \
  --distill-epochs 1 --checkpoint-every 10 --watch
fleet models list
fleet variants create --task vqa --model compact-demo --target 0.35 --dataset "$dataset" \
  --finetune-epochs 1 --prune-epochs 4 --train-limit 1024 --eval-limit 200 --checkpoint-every 10 --watch
fleet variants create --task nlvr2 --model compact-demo --target 0.25 --dataset "$dataset" \
  --finetune-epochs 1 --prune-epochs 4 --eval-limit 100 --checkpoint-every 10 --watch
echo "== the fleet's variants (test split; speed-up over the task teacher, measured side by side)"
fleet variants list

echo "== calls (VQA variant, test images)"
variant=$(fleet variants list | grep -o 'vqa-compact-demo-s35-[0-9a-f]*' | head -1)
for q in "$state/data/images/test/"*.png; do images+=("$q"); done
for i in 0 1 2; do
  image="${images[$i]}"
  for question in "what color is the circle?" "how many shapes are there?"; do
    printf '%-28s %-28s -> ' "$(basename "$image")" "$question"
    fleet ask --variant "$variant" --image "$image" --question "$question"
  done
done
echo "REST (POST /v1/variants/$variant/vqa, multipart):"
curl -s -H "X-Api-Key: $api_key" -F "image=@${images[0]}" -F "question=what color is the circle?" \
  "http://127.0.0.1:$http_port/v1/variants/$variant/vqa"; echo
echo "REST with a corrupt image (problem details, 400):"
head -c 100 /dev/urandom > "$state/corrupt.png"
curl -s -H "X-Api-Key: $api_key" -F "image=@$state/corrupt.png" -F "question=what color?" \
  "http://127.0.0.1:$http_port/v1/variants/$variant/vqa"; echo
nlvr=$(fleet variants list | grep -o 'nlvr2-compact-demo-s25-[0-9a-f]*' | head -1)
pair=$(ls "$state/data/nlvr2/images/test/" | head -2 | tr '\n' ' ')
read -r left right <<< "$pair"
printf 'NLVR2 %s + %s: "there is a circle" -> ' "$left" "$right"
fleet verify --variant "$nlvr" --left "$state/data/nlvr2/images/test/$left" --right "$state/data/nlvr2/images/test/$right" --statement "there is a circle"
fleet aliases set vqa-default "$variant"
printf 'through the alias vqa-default: '
fleet ask --variant vqa-default --image "${images[0]}" --question "what color is the circle?"
echo "serving metrics of this silo:"
curl -s "http://127.0.0.1:$http_port/metrics" | grep -E '^fleet_(requests_total|batch_size_(sum|count)|model_load_seconds_(sum|count))' || true

echo "== done in $(( $(date +%s) - t0 )) s"
