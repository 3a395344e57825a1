#!/usr/bin/env bash
# Reproduces the shipped ShapesWorld teacher (models/shapesworld/, MODEL_CARD.md there) from a fresh clone:
# data, the supervised grounded VQA stage of the CPU teacher, the task-agnostic teacher (ITC + ITM + MLM on
# that backbone), X-VLM's NLVR2 domain pre-training (text assignment) and NLVR2 on top of it, the retrieval
# and captioning teachers, a package per model (fp16, vocabulary, answer list, SHA-256 manifest), and test
# scores per question type / statement family in $RUNS/results.jsonl. Every stage resumes from its last
# checkpoint when the script is run again (and retries after a crash), and a finished stage is skipped.
# Knobs (environment): DATA, RUNS, OUT (package folder), VQA_EPOCHS, VQA_LR, PRE_EPOCHS, TA_EPOCHS,
# NLVR_EPOCHS, NLVR_MORE_EPOCHS, COMPARE_REPEAT, COMPARE_EPOCHS, NLVR_LR, RET_EPOCHS, RET_MORE_EPOCHS, CAP_EPOCHS, FT_LR, THREADS. See docs/training.md, "The CPU teacher".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DATA="${DATA:-data/shapes}"; RUNS="${RUNS:-runs/teacher}"; OUT="${OUT:-models/shapesworld}"
VQA_EPOCHS="${VQA_EPOCHS:-5}"; VQA_LR="${VQA_LR:-1e-3}"
PRE_EPOCHS="${PRE_EPOCHS:-1}"; TA_EPOCHS="${TA_EPOCHS:-2}"; NLVR_LR="${NLVR_LR:-5e-4}"
NLVR_EPOCHS="${NLVR_EPOCHS:-6}"; NLVR_MORE_EPOCHS="${NLVR_MORE_EPOCHS:-12}"; COMPARE_REPEAT="${COMPARE_REPEAT:-3}"; COMPARE_EPOCHS="${COMPARE_EPOCHS:-6}"
RET_EPOCHS="${RET_EPOCHS:-1}"; RET_MORE_EPOCHS="${RET_MORE_EPOCHS:-2}"; CAP_EPOCHS="${CAP_EPOCHS:-1}"; FT_LR="${FT_LR:-3e-4}"
THREADS="${THREADS:-2}"
dotnet build model/EfficientVlm.Tool -c Release -nologo -clp:ErrorsOnly
vlm() { dotnet model/EfficientVlm.Tool/bin/Release/net10.0/vlm.dll "$@"; }
[[ -f "$DATA/annotations/instances_train.json" ]] || vlm data generate --out "$DATA" --seed 1
mkdir -p "$RUNS"
stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$RUNS/stages.log"; }

# A stage with a result is done. Up to five attempts, each resuming from the last checkpoint: TorchSharp's
# Scalar crash (docs/platform.md) hits a long run now and then, inside AdamW's step.
stage() { # name, then the vlm arguments
  local name=$1; shift
  if [[ -f "$RUNS/$name/result.json" ]]; then stamp "$name: done before"; return; fi
  local t0=$(date +%s)
  for attempt in 1 2 3 4 5; do
    if vlm "$@" --threads "$THREADS" --out "$RUNS/$name"; then stamp "$name: $(( $(date +%s) - t0 )) s"; return 0; fi
    stamp "$name: attempt $attempt failed"
  done
  stamp "$name: FAILED"; return 1
}

common=(--data "$DATA" --batch 32 --decay cosine --warmup 0.05 --eval-limit 500)
stage vqa train teacher --preset cpu-teacher "${common[@]}" --epochs "$VQA_EPOCHS" --lr "$VQA_LR" --mlm-weight 1 --checkpoint-every 250
stage pretrain train pretrain --init "$RUNS/vqa/best" "${common[@]}" --epochs "$PRE_EPOCHS" --lr "$FT_LR" --checkpoint-every 250
# NLVR2: the doubled fusion stack first learns to tell which image a caption describes, then the statements;
# the vision encoder is frozen in both (it already knows the objects; about 3.5 steps/s on 2 cores)
stage nlvr-ta train nlvr-pretrain --init "$RUNS/pretrain/best" --freeze vision "${common[@]}" --epochs "$TA_EPOCHS" --lr "$NLVR_LR" --checkpoint-every 250
nlvr2=(train finetune --task nlvr2 --init "$RUNS/nlvr-ta/best" --freeze vision "${common[@]}" --lr "$NLVR_LR" --checkpoint-every 250)
stage nlvr2-6 "${nlvr2[@]}" --epochs "$NLVR_EPOCHS"
# then the same run goes on to NLVR_MORE_EPOCHS: the schedule is recomputed for the longer run, so the rate
# restarts at about half its peak and decays to zero again (how the shipped NLVR2 teacher was made)
if [[ ! -d "$RUNS/nlvr2" ]]; then cp -r "$RUNS/nlvr2-6" "$RUNS/nlvr2"; rm -f "$RUNS/nlvr2/result.json"; fi
stage nlvr2 "${nlvr2[@]}" --epochs "$NLVR_MORE_EPOCHS"
# compare ("the left image contains more circles than the right image") stays at chance through all of that;
# from that model, every compare pair COMPARE_REPEAT times per epoch teaches it (the NLVR2 head starts again)
stage nlvr2-compare train finetune --task nlvr2 --init "$RUNS/nlvr2/best" --freeze vision --repeat "compare=$COMPARE_REPEAT" \
  "${common[@]}" --epochs "$COMPARE_EPOCHS" --lr "$FT_LR" --checkpoint-every 250
# retrieval: each caption's edit within ShapesWorld's word classes is one more negative, and an identical caption of
# another image may be an ITM negative (X-VLM's rule); one epoch, then the same run taken on to RET_MORE_EPOCHS
retrieval=(train finetune --task retrieval --init "$RUNS/pretrain/best" --edited-negatives --same-text-negatives "${common[@]}" --lr "$FT_LR" --checkpoint-every 250)
stage retrieval-1 "${retrieval[@]}" --epochs "$RET_EPOCHS"
if [[ ! -d "$RUNS/retrieval" ]]; then cp -r "$RUNS/retrieval-1" "$RUNS/retrieval"; rm -f "$RUNS/retrieval/result.json"; fi
stage retrieval "${retrieval[@]}" --epochs "$RET_MORE_EPOCHS"
stage captioning train finetune --task captioning --init "$RUNS/pretrain/best" "${common[@]}" --epochs "$CAP_EPOCHS" --lr "$FT_LR" --checkpoint-every 250

# packages: the task-agnostic teacher and one per task
declare -A from=([teacher]=pretrain [vqa]=vqa [nlvr2]=nlvr2-compare [retrieval]=retrieval [captioning]=captioning)
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
