#!/usr/bin/env bash
# Cross-lingual transfer on Google FLEURS, the reference's languages: Bengali, Assamese, Lao, Turkish.
#   0 prepare   FLEURS -> data/fleurs/<lang>/{train,dev,test}.jsonl (xlingual prepare fleurs)
#   1 matrix    pre-train x adapt WER matrix + report (recipes/fleurs/matrix.yaml; cached, resumable)
#   2 lid       language-ID model over the four languages (recipes/fleurs/lid.yaml)
#   3 rank      LID source ranking evaluated against the WER matrix (xlingual rank-eval)
# Usage: recipes/fleurs/run.sh [--stage N] [--stop-stage M] [--fleurs DIR] [--data DIR] [--jobs N]
#            [--configs "bn_in as_in lo_la tr_tr"]
#            [--matrix-args "..."] [--lid-args "..."] [--rank-args "..."] [--dry-run]
#   --fleurs DIR   a local copy of the hub repository (holding data/<config>/); without it, stage 0 downloads
#                  with `datasets` (huggingface-cli download google/fleurs --repo-type dataset
#                  --include "data/bn_in/*" "data/as_in/*" "data/lo_la/*" "data/tr_tr/*" --local-dir fleurs)
#   --matrix-args  passed to `xlingual matrix`, e.g. "--executor slurm --slurm-partition gpu --jobs 32";
#                  "--set key=value" overrides reach the matrix config (and the data folder follows --data)
#   --dry-run      print the commands, run nothing
set -euo pipefail
stage=0; stop_stage=3; fleurs=""; data=data/fleurs; jobs=4; dry_run=0
configs="bn_in as_in lo_la tr_tr"   # FLEURS config -> language code: the part before '_'; the matrix and LID
#                                     configs list the same languages (a subset needs --matrix-args/--lid-args)
matrix_args=""; lid_args=""; rank_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2;; --stop-stage) stop_stage=$2; shift 2;;
    --fleurs) fleurs=$2; shift 2;; --data) data=$2; shift 2;; --jobs) jobs=$2; shift 2;;
    --configs) configs=$2; shift 2;;
    --matrix-args) matrix_args=$2; shift 2;; --lid-args) lid_args=$2; shift 2;; --rank-args) rank_args=$2; shift 2;;
    --dry-run) dry_run=1; shift;;
    *) echo "unknown option $1" >&2; exit 1;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
run() { echo "+ $*"; [ "$dry_run" = 1 ] || "$@"; }
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# the matrix's out_dir and the LID's, as the configs (and any --set in the extra args) say
matrix_dir=$(python -c "from xlingual.config import MatrixConfig, load_config; import shlex, sys
a = shlex.split(sys.argv[2]); s = [a[i + 1] for i, x in enumerate(a) if x == '--set']
print(load_config(MatrixConfig, sys.argv[1], s).out_dir)" "$here/matrix.yaml" "$matrix_args")
lid_dir=$(python -c "from xlingual.config import LIDConfig, load_config; import shlex, sys
a = shlex.split(sys.argv[2]); s = [a[i + 1] for i, x in enumerate(a) if x == '--set']
print(load_config(LIDConfig, sys.argv[1], s).out_dir)" "$here/lid.yaml" "$lid_args")

if stage_on 0; then
  for cfg in $configs; do
    src=$cfg; [ -n "$fleurs" ] && src=$fleurs/data/$cfg
    run xlingual prepare fleurs "$src" --out "$data/${cfg%%_*}" --language "${cfg%%_*}"
  done
fi
if stage_on 1; then
  # shellcheck disable=SC2086  # the extra arguments are split on purpose
  run xlingual matrix "$here/matrix.yaml" --jobs "$jobs" --set "corpus.dir=$data" $matrix_args
fi
if stage_on 2; then
  # shellcheck disable=SC2086
  run xlingual lid train "$here/lid.yaml" --set "corpus.dir=$data" $lid_args
fi
if stage_on 3; then
  # shellcheck disable=SC2086
  run xlingual rank-eval --lid "$lid_dir/best.pt" --matrix "$matrix_dir" --metric wer \
      --data "$data" --out "$lid_dir/rank_eval" --cache-dir "$data/.features" $rank_args
fi
