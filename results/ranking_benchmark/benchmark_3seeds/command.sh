# every cell of the main corpus's matrix at seeds 0-2 (benchmark.sh stage 7; the matrix was started with the very
# command stage 7 runs, with the compute code of ea5c931 (unchanged since), before stage 7 was committed; then stage 7 whole, which found every
# run done, re-scored the main corpus's leave-one-out scores (ranking_loo6: 6 min per language) in both noise views
# and collected); Intel Xeon 2-core VM, beside the LID's seed-2 probe for its first 20 minutes, paused for 7
# minutes during a CI run
cd /work/main && . .venv/bin/activate
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark exp/benchmark  # the scores
xlingual matrix recipes/synthetic/benchmark.yaml --jobs 2 --set out_dir=exp/benchmark_3seeds --set "seeds=[0,1,2]" \
    --set "pools={}" --set "pool_budgets=[]"
bash recipes/synthetic/benchmark.sh --stage 7 --stop-stage 7 --jobs 2 --main-scores-from exp/benchmark/ranking_loo6

# 2026-12-03: ranking/ and ranking_nofloor/ re-scored with the code of the transfer record (xlingual/transfer_prior.py:
# the rows baselines/transfer_prior and loo+prior/*; every other row unchanged): the committed predictor scores against
# the restored matrix, no model run (about 20 s each, Intel Xeon 2-core VM, nothing else running)
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_3seeds exp/benchmark_3seeds
xlingual rank-eval --matrix exp/benchmark_3seeds --metric cer --seed-floor adapt --scores-from results/ranking_benchmark/benchmark_3seeds/ranking --out exp/benchmark_3seeds/ranking
xlingual rank-eval --matrix exp/benchmark_3seeds --metric cer --seed-floor none --scores-from results/ranking_benchmark/benchmark_3seeds/ranking_nofloor --out exp/benchmark_3seeds/ranking_nofloor
cp exp/benchmark_3seeds/ranking/* results/ranking_benchmark/benchmark_3seeds/ranking/ && cp exp/benchmark_3seeds/ranking_nofloor/* results/ranking_benchmark/benchmark_3seeds/ranking_nofloor/
