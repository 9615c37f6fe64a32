# stage 3 on the control corpus with the leave-one-out LIDs at 6 min per language (the recipe of the main
# benchmark's ranking_loo6), no in-set LID (its checkpoint was not kept)
cd /work/main && . .venv/bin/activate
echo "main commit: $(git rev-parse HEAD)"
shared=bn,as,hi,ne,mr,ur,tr,az,kk,uz,ta,te,th
python -c "from xlingual.config import load_config, LIDConfig; from xlingual.runspec import prepare_corpus; c=load_config(LIDConfig, \"recipes/synthetic/benchmark_lid.yaml\", [\"corpus.dir=data/benchmark_control\", \"corpus.exclude_shared=[$shared]\"]); prepare_corpus(c.corpus, c.languages)"
time xlingual rank-eval --matrix exp/benchmark_control --metric cer --seed-floor adapt \
  --noise-matrix exp/benchmark_control_seeds \
  --loo-config recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/benchmark_control_lid_loo6 --set train_hours=0.1 \
  --set corpus.dir=data/benchmark_control --set "corpus.exclude_shared=[$shared]" \
  --phone-config recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/benchmark_control_phones \
  --phone-set corpus.dir=data/benchmark_control --phone-set "corpus.exclude_shared=[$shared]" \
  --lid-from-phones --jobs 2 --set train.threads=1 --phone-set train.threads=1 \
  --data data/benchmark_control --out exp/benchmark_control/ranking_loo6
