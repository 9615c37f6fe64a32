# the 13 leave-one-out phone recognizers (benchmark_phones.yaml at hours 0.25: 15 min per language) and LIDs
# (6 min per language, 30 epochs, each from its target's recognizer) re-made, scored against the 3-seed matrix;
# in-set row: lid_probes/lid_probe_p15_seed0. Intel Xeon 2-core VM, 2026-12-03, main commit 3245c2c, nothing else
# running: 99 min wall (recognizers 32 min, LIDs 23 min). Models in ../../benchmark_phones_p15, ../../benchmark_lid_loo6_p15
cd /work/main && . .venv/bin/activate
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_3seeds exp/benchmark_3seeds
xlingual rank-eval --matrix exp/benchmark_3seeds --metric cer --seed-floor adapt \
  --lid exp/lid_probe_p15_seed0/best.pt \
  --loo-config recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/bm_lid_loo6_p15 --set train_hours=0.1 \
  --phone-config recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/bm_phones_p15 \
  --lid-from-phones --jobs 2 --set train.threads=1 --phone-set train.threads=1 \
  --data data/benchmark --out exp/benchmark_3seeds/ranking_p15
# bootstrap-only view (ranking_p15_nofloor/)
xlingual rank-eval --matrix exp/benchmark_3seeds --metric cer --seed-floor none \
  --scores-from exp/benchmark_3seeds/ranking_p15 --out exp/benchmark_3seeds/ranking_p15_nofloor
