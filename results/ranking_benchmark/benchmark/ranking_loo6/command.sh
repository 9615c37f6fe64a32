# stage 3 with the leave-one-out LIDs at 6 min per language (this session's budget), main's code
cd /work/bench && . /work/main/.venv/bin/activate && export PYTHONPATH=/work/main
echo "main commit: $(git -C /work/main rev-parse HEAD)"
time xlingual rank-eval --matrix exp/benchmark --metric cer --seed-floor adapt --noise-matrix exp/benchmark_seeds \
  --lid exp/lid_probe_h03_e30/best.pt \
  --loo-config /work/main/recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/bm_lid_loo6 --set train_hours=0.1 \
  --phone-config /work/main/recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/bm_phones \
  --lid-from-phones --jobs 2 --set train.threads=1 --phone-set train.threads=1 \
  --data data/benchmark --out exp/benchmark/ranking_loo6
