# every cell of the control corpus's matrix at seeds 0-2 (benchmark.sh stage 6; main commit ea5c931 when
# started: the compute code is that of the control's matrix, so its 305 finished runs counted as done), then the
# control's leave-one-out predictor scores (ranking_loo6, 6 min per language) re-scored against the 3-seed means
# in both noise views; Intel Xeon 2-core VM, beside the LID's seed-1 probe (lid_probes/lid_probe_h05_e30_seed1)
cd /work/main && . .venv/bin/activate
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_control exp/benchmark_control
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_control_seeds exp/benchmark_control_seeds
bash recipes/synthetic/benchmark.sh --stage 6 --stop-stage 6 --jobs 2 --scores-from exp/benchmark_control/ranking_loo6

# 2026-12-03: ranking/ and ranking_nofloor/ re-scored with the code of the transfer record (xlingual/transfer_prior.py:
# the rows baselines/transfer_prior and loo+prior/*; every other row unchanged): the committed predictor scores against
# the restored matrix, no model run (about 20 s each, Intel Xeon 2-core VM, nothing else running)
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_control_3seeds exp/benchmark_control_3seeds
xlingual rank-eval --matrix exp/benchmark_control_3seeds --metric cer --seed-floor adapt --scores-from results/ranking_benchmark/benchmark_control_3seeds/ranking --out exp/benchmark_control_3seeds/ranking
xlingual rank-eval --matrix exp/benchmark_control_3seeds --metric cer --seed-floor none --scores-from results/ranking_benchmark/benchmark_control_3seeds/ranking_nofloor --out exp/benchmark_control_3seeds/ranking_nofloor
cp exp/benchmark_control_3seeds/ranking/* results/ranking_benchmark/benchmark_control_3seeds/ranking/ && cp exp/benchmark_control_3seeds/ranking_nofloor/* results/ranking_benchmark/benchmark_control_3seeds/ranking_nofloor/
