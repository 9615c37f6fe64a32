#!/usr/bin/env bash
# Cross-lingual transfer on IARPA Babel from Kaldi data dirs: Bengali, Assamese, Lao, Turkish (the reference).
#   0 prepare   Kaldi data dirs -> data/babel/<lang>/{train,dev,test}.jsonl (xlingual prepare kaldi), after
#               removing Babel's non-speech markup (<hes>, <no-speech>, <foreign>, ...)
#   1 matrix    pre-train x adapt WER matrix + report (recipes/babel/matrix.yaml; cached, resumable)
#   2 lid       language-ID model over the four languages (recipes/babel/lid.yaml)
#   3 rank      LID source ranking evaluated against the WER matrix (xlingual rank-eval)
# Usage: recipes/babel/run.sh --babel DIR [--stage N] [--stop-stage M] [--data DIR] [--jobs N]
#            [--splits "train=train dev=dev2h.pem test=dev10h.pem"] [--languages "bn as lo tr"]
#            [--matrix-args "..."] [--lid-args "..."] [--rank-args "..."] [--dry-run]
#   --babel DIR    one Kaldi recipe folder per language: DIR/<lang>/data/<kaldi dir>/{wav.scp,text,segments,
#                  utt2spk} (e.g. DIR/bn -> egs/babel/s5d run for babel103). wav.scp commands (sph2pipe ... |)
#                  and relative paths are taken from DIR/<lang>, as Kaldi runs them.
#   --splits       our split = Kaldi data dir, per language. Babel's dev2h.pem lies inside dev10h.pem: for a
#                  test set disjoint from dev, point dev at another held-out dir (e.g. utils/subset_data_dir.sh)
#   --matrix-args  passed to `xlingual matrix`, e.g. "--executor slurm --slurm-partition gpu --jobs 32"
#                  (values without spaces); --dry-run prints the commands, runs nothing
set -euo pipefail
stage=0; stop_stage=3; babel=""; data=data/babel; jobs=4; dry_run=0; languages="bn as lo tr"
splits="train=train dev=dev2h.pem test=dev10h.pem"
matrix_args=""; lid_args=""; rank_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2;; --stop-stage) stop_stage=$2; shift 2;;
    --babel) babel=$2; shift 2;; --data) data=$2; shift 2;; --jobs) jobs=$2; shift 2;;
    --splits) splits=$2; shift 2;; --languages) languages=$2; shift 2;;
    --matrix-args) matrix_args=$2; shift 2;; --lid-args) lid_args=$2; shift 2;; --rank-args) rank_args=$2; shift 2;;
    --dry-run) dry_run=1; shift;;
    *) echo "unknown option $1" >&2; exit 1;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
run() { echo "+ $*"; [ "$dry_run" = 1 ] || "$@"; }
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
out_dir() {  # the out_dir a config (and any --set in the extra arguments) gives
  python -c "import importlib, shlex, sys; from xlingual.config import load_config
cls = getattr(importlib.import_module('xlingual.config'), sys.argv[1])
a = shlex.split(sys.argv[3]); print(load_config(cls, sys.argv[2], [a[i + 1] for i, x in enumerate(a) if x == '--set']).out_dir)" "$@"
}
matrix_dir=$(out_dir MatrixConfig "$here/matrix.yaml" "$matrix_args")
lid_dir=$(out_dir LIDConfig "$here/lid.yaml" "$lid_args")

if stage_on 0; then
  [ -n "$babel" ] || { echo "stage 0 needs --babel DIR (Kaldi recipe folders per language)" >&2; exit 1; }
  mkdir -p "$data"; data_abs=$(cd "$data" && pwd)
  for lang in $languages; do
    for pair in $splits; do
      split=${pair%%=*}; kdir=$babel/$lang/data/${pair#*=}
      clean=$data_abs/kaldi/$lang/$split   # the data dir with its markup removed; audio files stay in place
      run mkdir -p "$clean"
      for f in wav.scp segments utt2spk reco2file_and_channel; do
        if [ -f "$kdir/$f" ]; then run ln -sf "$(cd "$kdir" && pwd)/$f" "$clean/$f"; fi
      done
      # Babel markup in angle brackets (<hes>, <no-speech>, <foreign>, <unk>, ...) is not speech: removed here.
      # The rest ((()), ~, *word*, word fragments' '-') is punctuation the text normalizer drops.
      echo "+ sed -E 's/<[^> ]*>/ /g' $kdir/text > $clean/text"
      [ "$dry_run" = 1 ] || sed -E 's/<[^> ]*>/ /g' "$kdir/text" > "$clean/text"
      run xlingual prepare kaldi "$clean" --root "$babel/$lang" --out "$data_abs/$lang" --language "$lang" \
          --splits "$split"
    done
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
