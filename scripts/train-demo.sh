#!/usr/bin/env bash
# The training pipeline at demo scale, every stage through `vlm`: teacher pre-training, general
# distillation into the compact student, fine-tuning of both for the four tasks, and test scores
# appended to $RUNS/results.jsonl. Rerunning resumes finished-or-interrupted stages (each run
# folder keeps its last checkpoint) and evaluates only the models that have no row yet. Budget
# knobs (environment): IMAGES (pre-training and distillation images), PRE_EPOCHS, FT_ITEMS
# (fine-tuning records per task), FT_EPOCHS,
# TEST_LIMIT, CAPTION_TEST_LIMIT, DATA, RUNS; ITM_HARD_SHARE (teacher pre-training's share of hard ITM
# negatives, 1 = the method) and TA_EPOCHS (NLVR2 domain pre-training by text assignment before each
# NLVR2 fine-tuning, on the pre-training images; 0 = none); POSITION_INIT (the start of the teacher's vision
# positions; empty = the preset's, CLIP's D^-0.5). See docs/training.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DATA="${DATA:-data/shapes}"; RUNS="${RUNS:-runs/demo}"
IMAGES="${IMAGES:-4000}"; PRE_EPOCHS="${PRE_EPOCHS:-2}"; FT_ITEMS="${FT_ITEMS:-2000}"; FT_EPOCHS="${FT_EPOCHS:-2}"
TEST_LIMIT="${TEST_LIMIT:-500}"; CAPTION_TEST_LIMIT="${CAPTION_TEST_LIMIT:-200}"
ITM_HARD_SHARE="${ITM_HARD_SHARE:-1}"; TA_EPOCHS="${TA_EPOCHS:-0}"; POSITION_INIT="${POSITION_INIT:-}"
dotnet build model/EfficientVlm.Tool -c Release -nologo -clp:ErrorsOnly
vlm() { dotnet model/EfficientVlm.Tool/bin/Release/net10.0/vlm.dll "$@"; }
[[ -f "$DATA/vocab.txt" ]] || vlm data generate --out "$DATA" --seed 1
mkdir -p "$RUNS"
stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$RUNS/stages.log"; }

# up to three attempts of a command (the TorchSharp Scalar crash, docs/platform.md, can hit any run); what, then the command
attempts() {
  local what=$1; shift
  for attempt in 1 2 3; do
    "$@" && return 0
    stamp "$what: attempt $attempt failed"
  done
  stamp "$what: FAILED 3 times (see its output); going on"
  return 1
}

stage() { # name, then the vlm arguments; skipped when the run already has a result
  local name=$1; shift
  if [[ -f "$RUNS/$name/result.json" ]]; then stamp "$name: done before"; return; fi
  local t0=$(date +%s)
  rm -f "$RUNS/$name"/evaluated-* # a model trained (further) here is evaluated again
  # a failed run resumes from its last checkpoint when run again
  if attempts "$name" vlm "$@" --out "$RUNS/$name"; then stamp "$name: $(( $(date +%s) - t0 )) s"; fi
}

stage teacher train pretrain --data "$DATA" --preset demo-teacher --train-limit "$IMAGES" --eval-limit 200 --epochs "$PRE_EPOCHS" --lr 3e-4 \
  --itm-hard-share "$ITM_HARD_SHARE" ${POSITION_INIT:+--position-init "$POSITION_INIT"}
stage student train distill --data "$DATA" --teacher "$RUNS/teacher/best" --preset demo --train-limit "$IMAGES" --eval-limit 200 --epochs "$PRE_EPOCHS" --lr 3e-4
for task in vqa nlvr2 retrieval captioning; do
  for who in teacher student; do
    init="$RUNS/$who/best"
    if [[ $task == nlvr2 && $TA_EPOCHS -gt 0 ]]; then
      stage "$who-nlvr-ta" train nlvr-pretrain --data "$DATA" --init "$init" --train-limit "$IMAGES" --eval-limit 200 --epochs "$TA_EPOCHS" --lr 2e-4
      init="$RUNS/$who-nlvr-ta/best"
    fi
    stage "$who-$task" train finetune --task "$task" --data "$DATA" --init "$init" --train-limit "$FT_ITEMS" --eval-limit 200 --epochs "$FT_EPOCHS" --lr 2e-4
  done
done
for task in vqa nlvr2 retrieval captioning; do
  limit=$TEST_LIMIT; [[ $task == captioning ]] && limit=$CAPTION_TEST_LIMIT
  for who in teacher student; do
    [[ -f "$RUNS/$who-$task/result.json" ]] || { stamp "$who-$task: no model to evaluate"; continue; }
    # one row per model and test size in results.jsonl, however often the script is rerun
    done_marker="$RUNS/$who-$task/evaluated-test-$limit"
    if [[ -f "$done_marker" ]]; then stamp "$who-$task evaluation: done before"; continue; fi
    attempts "$who-$task evaluation" \
      vlm eval --model "$RUNS/$who-$task/best" --data "$DATA" --split test --limit "$limit" --results "$RUNS/results.jsonl" --label "$who" \
      && touch "$done_marker" || true
  done
done
stamp "all stages and evaluations done"
