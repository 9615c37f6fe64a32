# the control corpus's 13 leave-one-out phone recognizers (benchmark_phones.yaml: 15 min per language) and LIDs
# (6 min per language, 30 epochs, each from its target's recognizer) re-made as the main benchmark's ranking_p15 was,
# scored against the control's 3-seed matrix; no in-set LID on the control. Models in
# ../../benchmark_control_phones_p15, ../../benchmark_control_lid_loo6_p15
cd /work/main && . .venv/bin/activate
echo "main commit: $(git rev-parse HEAD)"
shared=bn,as,hi,ne,mr,ur,tr,az,kk,uz,ta,te,th
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_control_3seeds exp/benchmark_control_3seeds
python -c "from xlingual.config import load_config, LIDConfig; from xlingual.runspec import prepare_corpus; c=load_config(LIDConfig, \"recipes/synthetic/benchmark_lid.yaml\", [\"corpus.dir=data/benchmark_control\", \"corpus.exclude_shared=[$shared]\"]); prepare_corpus(c.corpus, c.languages)"
time xlingual rank-eval --matrix exp/benchmark_control_3seeds --metric cer --seed-floor adapt \
  --loo-config recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/bmc_lid_loo6_p15 --set train_hours=0.1 \
  --set corpus.dir=data/benchmark_control --set "corpus.exclude_shared=[$shared]" \
  --phone-config recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/bmc_phones_p15 \
  --phone-set corpus.dir=data/benchmark_control --phone-set "corpus.exclude_shared=[$shared]" \
  --lid-from-phones --jobs 2 --set train.threads=1 --phone-set train.threads=1 \
  --data data/benchmark_control --out exp/benchmark_control_3seeds/ranking_p15
# bootstrap-only view (ranking_p15_nofloor/)
xlingual rank-eval --matrix exp/benchmark_control_3seeds --metric cer --seed-floor none \
  --scores-from exp/benchmark_control_3seeds/ranking_p15 --out exp/benchmark_control_3seeds/ranking_p15_nofloor
