#!/usr/bin/env bash
# The modal-adaptive vs uniform ablation against the shipped teacher (issue #20, docs/pruning.md): for each task and
# target sparsity, the distilled student is pruned twice with KD from the shipped task teacher, once with one global
# target over all modalities (the method) and once with the target in every modality (uniform), at the same budget;
# each shrunk model is scored on the full test split, and bench pruning-plot draws score against sparsity per task
# (docs/img/ablation-<task>.svg). Runs resume; a finished run is skipped.
# Knobs: STUDENT (a distilled student; default: distil one as the main job does), DATA, RUNS, TASKS, VQA_TARGETS,
# NLVR2_TARGETS, VQA_LIMIT, NLVR2_LIMIT (training records per run), EPOCHS, OUT (plot prefix).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DATA="${DATA:-data/shapes}"; RUNS="${RUNS:-runs/ablation}"; TASKS="${TASKS:-vqa nlvr2}"; EPOCHS="${EPOCHS:-4}"
VQA_TARGETS="${VQA_TARGETS:-0.2 0.35 0.5}"; NLVR2_TARGETS="${NLVR2_TARGETS:-0.15 0.25 0.4}"
VQA_LIMIT="${VQA_LIMIT:-2048}"; NLVR2_LIMIT="${NLVR2_LIMIT:-2048}"; OUT="${OUT:-docs/img/ablation}"
T=models/shapesworld
dotnet build model/EfficientVlm.Tool -c Release -nologo -clp:ErrorsOnly
dotnet build bench/EfficientVlm.Bench -c Release -nologo -clp:ErrorsOnly
vlm() { dotnet model/EfficientVlm.Tool/bin/Release/net10.0/vlm.dll "$@"; }
[[ -f "$DATA/annotations/instances_train.json" ]] || vlm data generate --out "$DATA" --seed 1
mkdir -p "$RUNS"
STUDENT="${STUDENT:-$RUNS/distill/best}"
if [[ ! -f "$STUDENT/model.safetensors" ]]; then
  vlm train distill --teacher "$T/teacher" --preset cpu --data "$DATA" --epochs 1 --train-limit 4000 --batch 32 --lr 3e-4 \
    --decay cosine --warmup 0.05 --eval-limit 500 --out "$RUNS/distill"
fi
for task in $TASKS; do
  case $task in
    vqa) targets=$VQA_TARGETS; budget=(--train-limit "$VQA_LIMIT" --lr 3e-4);;
    nlvr2) targets=$NLVR2_TARGETS; budget=(--train-limit "$NLVR2_LIMIT" --lr 5e-4);;
    *) echo "ablation: vqa or nlvr2, not $task"; exit 2;;
  esac
  for target in $targets; do
    for mode in global uniform; do
      out="$RUNS/$task-$mode-$target"; flag=(); [[ $mode == uniform ]] && flag=(--uniform)
      if [[ ! -f "$out/test.jsonl" ]]; then
        for attempt in 1 2 3; do # the TorchSharp Scalar crash (docs/platform.md) resumes from the last checkpoint
          vlm prune --task "$task" --student "$STUDENT" --teacher "$T/$task" --target "$target" --data "$DATA" --out "$out" \
            --epochs "$EPOCHS" --warmup-epochs 1 --mask-lr 0.1 --eval-limit 500 "${budget[@]}" "${flag[@]}" > "$out.log" 2>&1 && break
          echo "$task $mode $target: attempt $attempt failed"
        done
        vlm eval --model "$out/shrunk" --data "$DATA" --split test --task "$task" --by-form --results "$out/test.jsonl" --label "$task $mode $target"
      fi
    done
  done
done
mkdir -p "$(dirname "$OUT")"
dotnet bench/EfficientVlm.Bench/bin/Release/net10.0/EfficientVlm.Bench.dll pruning-plot --runs "$RUNS" --out "$OUT" --teacher-scores "$T/scores.json"
