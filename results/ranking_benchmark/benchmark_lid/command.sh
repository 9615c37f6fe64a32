# the main benchmark's in-set LID re-made with the current code (benchmark_lid.yaml unchanged)
cd /work/main && . .venv/bin/activate
echo "main commit: $(git rev-parse HEAD)"
time xlingual lid train recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/benchmark_lid --set train.threads=1 \
  --phones recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/benchmark_phones --phone-set train.threads=1
