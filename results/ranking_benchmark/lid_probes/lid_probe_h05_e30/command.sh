# the main benchmark's in-set LID with the whole train split (30 min per language) instead of 18 min; same recognizer
cd /work/main && . .venv/bin/activate
echo "main commit: $(git rev-parse HEAD)"
time xlingual lid train recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/lid_probe_h05_e30 --set train_hours=0.5 \
  --set train.threads=1 \
  --phones recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/benchmark_phones --phone-set train.threads=1
