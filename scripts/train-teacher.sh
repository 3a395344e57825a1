#!/usr/bin/env bash
# Reproduces the shipped ShapesWorld teacher (models/shapesworld/, MODEL_CARD.md there) from a fresh clone:
# data, the supervised grounded VQA stage of the CPU teacher, the task-agnostic teacher (ITC + ITM + MLM on
# that backbone), the NLVR2, retrieval and captioning teachers fine-tuned from it, a package per model
# (fp16, vocabulary, answer list, SHA-256 manifest), and test scores per question type / statement family
# in $RUNS/results.jsonl. Every stage resumes from its last checkpoint when the script is run again, and a
# finished stage is skipped. Knobs (environment): DATA, RUNS, OUT (package folder), VQA_EPOCHS, VQA_LR,
# NLVR_EPOCHS, NLVR_LR, PRE_EPOCHS, FT_EPOCHS, FT_LR, THREADS. See docs/training.md, "The CPU teacher".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DATA="${DATA:-data/shapes}"; RUNS="${RUNS:-runs/teacher}"; OUT="${OUT:-models/shapesworld}"
VQA_EPOCHS="${VQA_EPOCHS:-5}"; VQA_LR="${VQA_LR:-1e-3}"
NLVR_EPOCHS="${NLVR_EPOCHS:-2}"; NLVR_LR="${NLVR_LR:-5e-4}"
PRE_EPOCHS="${PRE_EPOCHS:-1}"; FT_EPOCHS="${FT_EPOCHS:-1}"; FT_LR="${FT_LR:-3e-4}"
THREADS="${THREADS:-2}"
dotnet build model/EfficientVlm.Tool -c Release -nologo -clp:ErrorsOnly
vlm() { dotnet model/EfficientVlm.Tool/bin/Release/net10.0/vlm.dll "$@"; }
[[ -f "$DATA/annotations/instances_train.json" ]] || vlm data generate --out "$DATA" --seed 1
mkdir -p "$RUNS"
stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$RUNS/stages.log"; }

stage() { # name, then the vlm arguments; a stage with a result is done; up to three attempts, each resuming
  local name=$1; shift
  if [[ -f "$RUNS/$name/result.json" ]]; then stamp "$name: done before"; return; fi
  local t0=$(date +%s)
  for attempt in 1 2 3; do
    if vlm "$@" --threads "$THREADS" --out "$RUNS/$name"; then stamp "$name: $(( $(date +%s) - t0 )) s"; return 0; fi
    stamp "$name: attempt $attempt failed"
  done
  stamp "$name: FAILED"; return 1
}

common=(--data "$DATA" --batch 32 --decay cosine --warmup 0.05 --eval-limit 500)
stage vqa train teacher --preset cpu-teacher "${common[@]}" --epochs "$VQA_EPOCHS" --lr "$VQA_LR" --mlm-weight 1 --checkpoint-every 250
stage nlvr2 train finetune --task nlvr2 --init "$RUNS/vqa/best" "${common[@]}" --epochs "$NLVR_EPOCHS" --lr "$NLVR_LR" --checkpoint-every 250
stage pretrain train pretrain --init "$RUNS/vqa/best" "${common[@]}" --epochs "$PRE_EPOCHS" --lr "$FT_LR" --checkpoint-every 250
stage retrieval train finetune --task retrieval --init "$RUNS/pretrain/best" "${common[@]}" --epochs "$FT_EPOCHS" --lr "$FT_LR" --checkpoint-every 250
stage captioning train finetune --task captioning --init "$RUNS/pretrain/best" "${common[@]}" --epochs "$FT_EPOCHS" --lr "$FT_LR" --checkpoint-every 250

# packages: the task-agnostic teacher and one per task
declare -A from=([teacher]=pretrain [vqa]=vqa [nlvr2]=nlvr2 [retrieval]=retrieval [captioning]=captioning)
for name in teacher vqa nlvr2 retrieval captioning; do
  vlm model package --model "$RUNS/${from[$name]}/best" --data "$DATA" --out "$OUT/$name" >/dev/null
  stamp "packaged $OUT/$name ($(du -sh "$OUT/$name" | cut -f1))"
done

# test scores of the packages, as a user would measure them
rm -f "$RUNS/results.jsonl"
for name in vqa nlvr2; do
  vlm eval --model "$OUT/$name" --data "$DATA" --split test --by-form --results "$RUNS/results.jsonl" --label "$name" --threads "$THREADS"
done
vlm eval --model "$OUT/retrieval" --data "$DATA" --split test --results "$RUNS/results.jsonl" --label retrieval --threads "$THREADS"
vlm eval --model "$OUT/captioning" --data "$DATA" --split test --results "$RUNS/results.jsonl" --label captioning --threads "$THREADS"
stamp "done: scores in $RUNS/results.jsonl"
