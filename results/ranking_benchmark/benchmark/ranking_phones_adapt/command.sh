cd /work/bench && . /work/main/.venv/bin/activate && export PYTHONPATH=/work/main
echo "main commit: $(git -C /work/main rev-parse HEAD)"
out=exp/benchmark/ranking_phones_adapt
time xlingual rank-eval --matrix exp/benchmark --metric cer --seed-floor adapt --noise-matrix exp/benchmark_seeds \
    --lid exp/lid_probe_h03_e30/best.pt \
    --phone-config /work/main/recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/bm_phones \
    --jobs 2 --phone-set train.threads=1 --data data/benchmark --out $out > $out.log 2>&1
