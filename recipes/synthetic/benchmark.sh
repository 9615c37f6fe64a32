#!/usr/bin/env bash
# The source-ranking benchmark on the embedded corpus: 13 languages of 4 families, their full pretrain x adapt
# matrix (the oracle), an LID over all of them, and every predictor evaluated leave-one-out against the matrix.
# Every stage is cached and resumable: re-running skips what is finished.
#   1 matrix    the corpus (13 languages, eSpeak NG + CLDR words), then the 13 x 13 pretrain x adapt matrix and
#               3-seed from-scratch baselines (benchmark.yaml; about 2.5 h on 2 cores), then the noise matrix:
#               every target adapted from one source per multi-language family (bn, tr, ta: the first listed) at
#               seeds 1 and 2, sources retrained at those seeds (about 45 min): the training noise of a cell
#   2 models    a phone recognizer on the 13 languages and the LID started from it (accuracy and confusion on
#               held-out voices), then per target the recognizer and the LID without it (train_models.py;
#               needs no matrix: it can run beside stage 1)
#   3 rank      every predictor against the CER matrix: in-set LID; leave-one-out LID posterior, pooled and fused
#               posteriors, embedding similarity, phonotactics and their combination; baselines (the models of
#               stage 2 are reused)
#   4 control   the same on the control corpus without shared word forms (stages 1-3 with corpus.exclude_shared)
#   5 collect   copy what was measured (no checkpoints) into results/ranking_benchmark/ (recipes/synthetic/collect.py;
#               `collect.py restore` puts it back into exp/ on a fresh machine: finished runs are then not redone)
#   6 seeds     (only when asked: --stage 6 --stop-stage 6) every cell of the control at seeds 0-2, sources
#               retrained (benchmark_control_3seeds: the seed-0 matrix's and the noise matrix's runs are copied in,
#               the other ~280 runs trained, about 40 min on 2 cores), then the control's predictor scores
#               re-scored against those means (a cell's floor shrinks with its seeds), and collected
#   7 seeds     (only when asked: --stage 7 --stop-stage 7) the same for the main corpus: every cell at seeds 0-2
#               (benchmark_3seeds; its stage-1 matrix was made by older code, whose run keys differ, so all 585 runs
#               are trained: about 80 min on 2 cores), the main predictor scores re-scored, collected
# Usage: recipes/synthetic/benchmark.sh [--stage N] [--stop-stage M] [--jobs N] [--scores-from DIR]
#                                       [--main-scores-from DIR] [--dry-run]
#   --scores-from: stage 6's predictor scores (default exp/benchmark_control/ranking, stage 4's evaluation)
#   --main-scores-from: stage 7's (default exp/benchmark/ranking, stage 3's evaluation)
set -euo pipefail
stage=1; stop_stage=5; jobs=2; dry=""; scores_from=exp/benchmark_control/ranking; main_scores_from=exp/benchmark/ranking
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2;; --stop-stage) stop_stage=$2; shift 2;; --jobs) jobs=$2; shift 2;;
    --dry-run) dry=1; shift;;
    --scores-from) scores_from=$2; shift 2;;
    --main-scores-from) main_scores_from=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 1;;
  esac
done
here=$(dirname "$0")
run() { echo "+ $*"; [ -n "$dry" ] || "$@"; }
langs="bn as hi ne mr ur tr az kk uz ta te th"
noise_sources="bn,tr,ta"  # the noise matrix's sources: the first listed of each family with 2+ languages
results=results/ranking_benchmark

# one pass of stages 1-3 on a corpus: $1 = name (benchmark, benchmark_control), the rest = extra --set overrides
pass() {
  local name=$1; shift
  local sets=() s
  for s in "$@"; do sets+=(--set "$s"); done
  local phone_sets=()
  for s in "$@"; do phone_sets+=(--phone-set "$s"); done
  if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    run xlingual matrix "$here/benchmark.yaml" --jobs "$jobs" --set "out_dir=exp/$name" "${sets[@]}"
    # its from-scratch baselines at seeds 1-2 are the main matrix's (the same runs, the same keys): copied (no
    # checkpoints: nothing adapts from a baseline), they count as done instead of being trained twice
    run python "$here/collect.py" save "exp/$name" "exp/${name}_seeds" --only 'scratch/*-3min/seed[12]'
    run xlingual matrix "$here/benchmark.yaml" --jobs "$jobs" --set "out_dir=exp/${name}_seeds" "${sets[@]}" \
        --set "sources=[$noise_sources]" --set "seeds=[1,2]" --set "baseline_seeds=[]" --set "pools={}" \
        --set "pool_budgets=[]"
  fi
  if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    run python "$here/train_models.py" --lid "$here/benchmark_lid.yaml" --set "out_dir=exp/${name}_lid" \
        "${sets[@]}" --phones "$here/benchmark_phones.yaml" --phone-set "out_dir=exp/${name}_phones" \
        "${phone_sets[@]}" --jobs "$jobs" --set train.threads=1 --phone-set train.threads=1
  fi
  if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    run xlingual rank-eval --matrix "exp/$name" --metric cer --seed-floor adapt --noise-matrix "exp/${name}_seeds" \
        --lid "exp/${name}_lid/best.pt" \
        --loo-config "$here/benchmark_lid.yaml" --set "out_dir=exp/${name}_lid" "${sets[@]}" \
        --phone-config "$here/benchmark_phones.yaml" --phone-set "out_dir=exp/${name}_phones" "${phone_sets[@]}" \
        --lid-from-phones --jobs "$jobs" --set train.threads=1 --phone-set train.threads=1 \
        --data "$corpus_dir" \
        --out "exp/$name/ranking"
  fi
}

corpus_dir=data/benchmark pass benchmark
shared=$(echo $langs | tr ' ' ',')
control_sets=("corpus.dir=data/benchmark_control" "corpus.exclude_shared=[$shared]")
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  # stage 4 is stages 1-3 again on the control corpus: all of them, whatever range of 1-3 was asked for above
  asked="$stage $stop_stage"; stage=1; stop_stage=3
  corpus_dir=data/benchmark_control pass benchmark_control "${control_sets[@]}"
  read -r stage stop_stage <<< "$asked"
fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then  # what was measured (no checkpoints): reports, every run's results, the ranking
  for name in benchmark benchmark_control; do
    for part in "" _seeds _lid _phones; do
      if [ -d "exp/$name$part" ] || [ -n "$dry" ]; then
        run python "$here/collect.py" save "exp/$name$part" "$results/$name$part"
      fi
    done
  done
fi
if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  # the same run keys in both folders: what the control's matrix (seed 0) and noise matrix (bn, tr, ta at seeds
  # 1-2) measured counts as done here; pools are left out (they are not ranking candidates)
  name=benchmark_control_3seeds
  for part in "" _seeds; do
    for runs in 'scratch/*' 'adapt/*'; do
      run python "$here/collect.py" save "exp/benchmark_control$part" "exp/$name" --only "$runs"
    done
  done
  sets=()
  for s in "${control_sets[@]}" "seeds=[0,1,2]" "pools={}" "pool_budgets=[]"; do sets+=(--set "$s"); done
  run xlingual matrix "$here/benchmark.yaml" --jobs "$jobs" --set "out_dir=exp/$name" "${sets[@]}"
  run xlingual rank-eval --matrix "exp/$name" --metric cer --seed-floor adapt --scores-from "$scores_from" \
      --out "exp/$name/ranking"
  run xlingual rank-eval --matrix "exp/$name" --metric cer --seed-floor none --scores-from "$scores_from" \
      --out "exp/$name/ranking_nofloor"
  run python "$here/collect.py" save "exp/$name" "$results/$name"
fi
if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  # the main corpus at 3 seeds: nothing to copy in (stage 1's runs have other keys); pools are left out as above
  name=benchmark_3seeds
  run xlingual matrix "$here/benchmark.yaml" --jobs "$jobs" --set "out_dir=exp/$name" --set "seeds=[0,1,2]" \
      --set "pools={}" --set "pool_budgets=[]"
  run xlingual rank-eval --matrix "exp/$name" --metric cer --seed-floor adapt --scores-from "$main_scores_from" \
      --out "exp/$name/ranking"
  run xlingual rank-eval --matrix "exp/$name" --metric cer --seed-floor none --scores-from "$main_scores_from" \
      --out "exp/$name/ranking_nofloor"
  run python "$here/collect.py" save "exp/$name" "$results/$name"
fi
