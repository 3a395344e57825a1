#!/usr/bin/env bash
# Issue #20's variants against the shipped teacher, with the budgets of docs/pruning.md ("variants that keep 98.4%"):
# general distillation of the `cpu` student from models/shapesworld/teacher over the whole train split, then for each
# task given (default: vqa nlvr2) modal-adaptive pruning to the paper's target with KD from the shipped task teacher,
# shrink, and the test score per question type / statement family ($RUNS/results.jsonl). A stage with a result is
# skipped; an interrupted one resumes from its last checkpoint when the script runs again (and retries after a crash).
# VQA, NLVR2 and retrieval also prune the conv stem's channels (of its multiply-adds VQA 0.5, NLVR2 0.75, retrieval 0.65), with
# the masks frozen in the last epoch (docs/pruning.md, "Pruning the stem's channels"); the run folder is then
# <task>-stem<target>-f1.
# Knobs: DATA, RUNS, THREADS; STEM_TARGET (a stem target for every task given, or "off" for none). About 30 minutes
# for vqa and nlvr2 on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DATA="${DATA:-data/shapes}"; RUNS="${RUNS:-runs/compress}"; THREADS="${THREADS:-2}"; STEM_TARGET="${STEM_TARGET:-}"; T=models/shapesworld
dotnet build model/EfficientVlm.Tool -c Release -nologo -clp:ErrorsOnly
vlm() { dotnet model/EfficientVlm.Tool/bin/Release/net10.0/vlm.dll "$@"; }
[[ -f "$DATA/annotations/instances_train.json" ]] || vlm data generate --out "$DATA" --seed 1
mkdir -p "$RUNS"
stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$RUNS/stages.log"; }
stage() { # name, then the vlm arguments; done when $RUNS/<name>.done exists
  local name=$1; shift
  if [[ -f "$RUNS/$name.done" ]]; then stamp "$name: done before"; return; fi
  local t0=$(date +%s)
  for attempt in 1 2 3; do # the TorchSharp Scalar crash (docs/platform.md) now and then: resume
    if vlm "$@" --threads "$THREADS" > "$RUNS/$name.log" 2>&1; then touch "$RUNS/$name.done"; stamp "$name: $(( $(date +%s) - t0 )) s"; return; fi
    stamp "$name: attempt $attempt failed (log $RUNS/$name.log)"
  done
  return 1
}
stage distill train distill --teacher "$T/teacher" --preset cpu --data "$DATA" --epochs 1 --batch 32 --lr 3e-4 --decay cosine \
  --warmup 0.05 --eval-limit 500 --checkpoint-every 200 --out "$RUNS/distill"
tasks=("$@"); [[ ${#tasks[@]} -gt 0 ]] || tasks=(vqa nlvr2)
for task in "${tasks[@]}"; do
  case $task in
    vqa) budget=(--target 0.35 --train-limit 8192 --epochs 4 --lr 3e-4);;
    nlvr2) budget=(--target 0.25 --train-limit 12000 --epochs 4 --lr 5e-4);;
    retrieval) budget=(--target 0.25 --train-limit 8000 --epochs 2 --lr 3e-4);;
    captioning) budget=(--target 0.25 --train-limit 8000 --epochs 2 --lr 3e-4);;
    *) echo "compress: vqa, nlvr2, retrieval or captioning, not $task"; exit 2;;
  esac
  stem_target=$STEM_TARGET
  # captioning's serving time is the decoding loop, which the stem does not touch (docs/pruning.md, "Speed")
  # VQA's counting needs more of the stem than NLVR2 and retrieval do (docs/pruning.md)
  if [[ -z $stem_target ]]; then case $task in captioning) stem_target=off;; vqa) stem_target=0.5;; nlvr2) stem_target=0.75;; *) stem_target=0.65;; esac; fi
  name=$task; stem=()
  [[ $stem_target != off ]] && { name="$task-stem$stem_target-f1"; stem=(--stem-target "$stem_target" --frozen-mask-epochs 1); }
  stage "$name" prune --task "$task" --student "$RUNS/distill/best" --teacher "$T/$task" --data "$DATA" "${budget[@]}" "${stem[@]}" \
    --warmup-epochs 1 --mask-lr 0.1 --eval-limit 500 --out "$RUNS/$name"
  form=(); [[ $task == vqa || $task == nlvr2 ]] && form=(--by-form)
  stage "$name-test" eval --model "$RUNS/$name/shrunk" --data "$DATA" --split test --task "$task" "${form[@]}" \
    --results "$RUNS/results.jsonl" --label "$name"
done
stamp "done: scores in $RUNS/results.jsonl"
