# the main benchmark's in-set LID (benchmark_lid.yaml: 30 min per language, 30 epochs) at a third training seed
# (train.seed=2; the recognizer it starts from is the same): does 0.954 (seed 0, lid_probe_h05_e30) hold?
cd /work/main && . .venv/bin/activate
echo "main commit: $(git rev-parse HEAD)"
time xlingual lid train recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/lid_probe_h05_e30_seed2 \
  --set train.seed=2 --set train.threads=1 \
  --phones recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/benchmark_phones --phone-set train.threads=1
