#!/usr/bin/env bash
# Reproduces the shipped ShapesWorld teacher (models/shapesworld/, MODEL_CARD.md there) from a fresh clone:
# data, the supervised grounded VQA stage of the CPU teacher, the task-agnostic teacher (ITC + ITM + MLM on
# that backbone), X-VLM's NLVR2 domain pre-training (text assignment) and NLVR2 on top of it, the retrieval
# and captioning teachers, a package per model (fp16, vocabulary, answer list, SHA-256 manifest), and test
# scores per question type / statement family in $RUNS/results.jsonl. Every stage resumes from its last
# checkpoint when the script is run again (and retries after a crash), and a finished stage is skipped.
# RECIPE=2h (default) makes the shipped models: 1.54 h of training in one run from a fresh clone (2026-12-08, 2 cores):
# the VQA stage, 5 plain NLVR2 epochs, then 4 with the compare pairs repeated; retrieval and captioning with the vision
# encoder frozen, one epoch each; every frozen-vision stage on cached vision tokens (docs/training.md, "The 2-hour
# chain"). RECIPE=long is the chain that made the models shipped before (6 + 6 plain NLVR2 epochs with a warm restart,
# then 6 compare epochs; retrieval 1 + 1 epochs and captioning with the encoder trained: 2.9 h; NLVR2 94.5, TR R@1 62.0).
# Knobs (environment): RECIPE, DATA, RUNS, OUT (package folder), VQA_EPOCHS, VQA_LR, PRE_EPOCHS, TA_EPOCHS,
# NLVR_EPOCHS, NLVR_MORE_EPOCHS, COMPARE_REPEAT, COMPARE_EPOCHS, NLVR_LR, RET_EPOCHS, RET_MORE_EPOCHS, CAP_EPOCHS, FT_LR, THREADS. See docs/training.md, "The CPU teacher".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
RECIPE="${RECIPE:-2h}"; [[ "$RECIPE" == 2h || "$RECIPE" == long ]] || { echo "RECIPE must be 2h or long" >&2; exit 2; }
DATA="${DATA:-data/shapes}"; RUNS="${RUNS:-runs/teacher}"; OUT="${OUT:-models/shapesworld}"
VQA_EPOCHS="${VQA_EPOCHS:-5}"; VQA_LR="${VQA_LR:-1e-3}"
PRE_EPOCHS="${PRE_EPOCHS:-1}"; TA_EPOCHS="${TA_EPOCHS:-2}"; NLVR_LR="${NLVR_LR:-5e-4}"
NLVR_EPOCHS="${NLVR_EPOCHS:-$([[ "$RECIPE" == long ]] && echo 6 || echo 5)}"; NLVR_MORE_EPOCHS="${NLVR_MORE_EPOCHS:-12}"; COMPARE_REPEAT="${COMPARE_REPEAT:-3}"; COMPARE_EPOCHS="${COMPARE_EPOCHS:-$([[ "$RECIPE" == long ]] && echo 6 || echo 4)}"
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
# the vision encoder is frozen in all of it (it already knows the objects). Each stage reads the frozen encoder's tokens
# of its train images from memory (--vision-cache: the same results, faster), encoded once and kept in $RUNS/vision-cache
# for the next stage with the same images (20,000 caption images 0.7 GB, 40,000 NLVR2 images 1.3 GB).
cache=(--freeze vision --vision-cache --vision-cache-dir "$RUNS/vision-cache")
stage nlvr-ta train nlvr-pretrain --init "$RUNS/pretrain/best" "${cache[@]}" "${common[@]}" --epochs "$TA_EPOCHS" --lr "$NLVR_LR" --checkpoint-every 250
nlvr2=(train finetune --task nlvr2 --init "$RUNS/nlvr-ta/best" "${cache[@]}" "${common[@]}" --lr "$NLVR_LR" --checkpoint-every 250)
plain="nlvr2-$NLVR_EPOCHS"
stage "$plain" "${nlvr2[@]}" --epochs "$NLVR_EPOCHS"
nlvr_from=$plain
if [[ "$RECIPE" == long ]]; then
  # the same run taken on to NLVR_MORE_EPOCHS: the schedule is recomputed for the longer run, so the rate restarts
  # at about half its peak and decays to zero again (how the NLVR2 teacher shipped before 2026-12-08 was made)
  if [[ ! -d "$RUNS/nlvr2" ]]; then cp -r "$RUNS/$plain" "$RUNS/nlvr2"; rm -f "$RUNS/nlvr2/result.json"; fi
  stage nlvr2 "${nlvr2[@]}" --epochs "$NLVR_MORE_EPOCHS"
  nlvr_from=nlvr2
fi
# compare ("the left image contains more circles than the right image") stays at chance while the other families are
# learnt, and with its pairs repeated from the start nothing is learnt at all; from the NLVR2 model, every compare pair
# COMPARE_REPEAT times per epoch teaches it (the NLVR2 head starts again)
stage nlvr2-compare train finetune --task nlvr2 --init "$RUNS/$nlvr_from/best" "${cache[@]}" --repeat "compare=$COMPARE_REPEAT" \
  "${common[@]}" --epochs "$COMPARE_EPOCHS" --lr "$FT_LR" --checkpoint-every 250
# retrieval: each caption's edit within ShapesWorld's word classes is one more negative, and an identical caption of
# another image may be an ITM negative (X-VLM's rule)
retrieval=(train finetune --task retrieval --init "$RUNS/pretrain/best" --edited-negatives --same-text-negatives "${common[@]}" --lr "$FT_LR" --checkpoint-every 250)
if [[ "$RECIPE" == long ]]; then
  # one epoch, then the same run taken on to RET_MORE_EPOCHS (warm restart, as for NLVR2)
  stage retrieval-1 "${retrieval[@]}" --epochs "$RET_EPOCHS"
  if [[ ! -d "$RUNS/retrieval" ]]; then cp -r "$RUNS/retrieval-1" "$RUNS/retrieval"; rm -f "$RUNS/retrieval/result.json"; fi
  stage retrieval "${retrieval[@]}" --epochs "$RET_MORE_EPOCHS"
  stage captioning train finetune --task captioning --init "$RUNS/pretrain/best" "${common[@]}" --epochs "$CAP_EPOCHS" --lr "$FT_LR" --checkpoint-every 250
else
  # the vision encoder frozen, one epoch each (shipped: TR R@1 52.9, CIDEr-D 244.8); both read the caption images' tokens
  # that text assignment wrote (the same frozen encoder, pretrain's)
  stage retrieval "${retrieval[@]}" "${cache[@]}" --epochs "$RET_EPOCHS"
  stage captioning train finetune --task captioning --init "$RUNS/pretrain/best" "${cache[@]}" "${common[@]}" --epochs "$CAP_EPOCHS" --lr "$FT_LR" --checkpoint-every 250
fi

# packages: the task-agnostic teacher and one per task
declare -A from=([teacher]=pretrain [vqa]=vqa [nlvr2]=nlvr2-compare [retrieval]=retrieval [captioning]=captioning)
# training time of the chain: the trainer's own seconds of each stage (a warm-restarted stage counts its own part)
python3 - "$RUNS" "$plain" <<'PY' | tee -a "$RUNS/stages.log"
import json, os, sys
runs = sys.argv[1]
stages = [d for d in sorted(os.listdir(runs)) if os.path.isfile(os.path.join(runs, d, "result.json"))]
seconds = {d: json.load(open(os.path.join(runs, d, "result.json")))["ElapsedSeconds"] for d in stages}
# a warm restart copies its first part's folder, so its elapsed time includes that part's
for longer, first in (("nlvr2", sys.argv[2]), ("retrieval", "retrieval-1")):
    if longer in seconds and first in seconds and seconds[longer] > seconds[first]:
        seconds[longer] -= seconds[first]
total = sum(seconds.values())
print("training time: " + ", ".join(f"{d} {s:.0f} s" for d, s in seconds.items()) + f"; total {total:.0f} s ({total / 3600:.2f} h)")
PY
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
