cd /work/bench && . /work/main/.venv/bin/activate && export PYTHONPATH=/work/main
echo "main commit: $(git -C /work/main rev-parse HEAD)"
for floor in baseline none; do
  out=exp/benchmark/ranking_phones; [ $floor = none ] && out=exp/benchmark/ranking_phones_nofloor
  echo "+ floor $floor -> $out"
  time xlingual rank-eval --matrix exp/benchmark --metric cer --seed-floor $floor --lid exp/lid_probe_h03_e30/best.pt \
    --phone-config /work/main/recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/bm_phones \
    --jobs 2 --phone-set train.threads=1 --data data/benchmark --out $out > $out.log 2>&1
done
