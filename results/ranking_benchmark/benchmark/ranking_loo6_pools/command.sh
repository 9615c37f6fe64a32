# re-scores the saved predictor scores of ranking_loo6 (the 13 leave-one-out LIDs and recognizers, not re-run)
# against the matrix as it stands now (with the pools), at main commit 1aaf164; the matrix and noise matrix come
# from results/ with: python recipes/synthetic/collect.py restore results/ranking_benchmark/<name> <name>
. /work/main/.venv/bin/activate
xlingual rank-eval --matrix benchmark --metric cer --seed-floor adapt --noise-matrix benchmark_seeds \
  --scores-from benchmark/ranking_loo6 --out benchmark/ranking_loo6_pools
