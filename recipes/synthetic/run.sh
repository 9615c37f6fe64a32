#!/usr/bin/env bash
# From-scratch baselines on the embedded corpus: every language at a large ("source", 1 h) and a small
# ("target", 10 min) budget. Stages: 0 prepare corpus, 1 train, 2 decode + score, 3 collect the table.
# Usage: recipes/synthetic/run.sh [--stage N] [--stop-stage M] [--languages "bn as th tr"]
set -euo pipefail
stage=0; stop_stage=3; languages="bn as th tr"; out=exp/synthetic
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2;; --stop-stage) stop_stage=$2; shift 2;;
    --languages) languages=$2; shift 2;; --out) out=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 1;;
  esac
done
here=$(dirname "$0")
if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  xlingual prepare synthetic --out data/synthetic --languages $languages --train-hours 1.0
fi
for lang in $languages; do
  for budget in large small; do
    cfg=$here/asr.yaml; [ $budget = small ] && cfg=$here/asr_small_budget.yaml
    s=$(( stage > 1 ? stage : 1 )); e=$(( stop_stage < 2 ? stop_stage : 2 ))
    [ "$s" -le "$e" ] && xlingual recipe "$cfg" --stage $((s)) --stop-stage $e \
        --set language=$lang --set out_dir=$out/$lang-$budget
  done
done
if [ "$stop_stage" -ge 3 ]; then
  python -m xlingual.recipe collect $out/*/results.json > $out/results.md
  cat $out/results.md
fi
