# every cell of the control corpus's matrix at seeds 0-2 (benchmark.sh stage 6; main commit ea5c931 when
# started: the compute code is that of the control's matrix, so its 305 finished runs counted as done), then the
# control's leave-one-out predictor scores (ranking_loo6, 6 min per language) re-scored against the 3-seed means
# in both noise views; Intel Xeon 2-core VM, beside the LID's seed-1 probe (lid_probes/lid_probe_h05_e30_seed1)
cd /work/main && . .venv/bin/activate
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_control exp/benchmark_control
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_control_seeds exp/benchmark_control_seeds
bash recipes/synthetic/benchmark.sh --stage 6 --stop-stage 6 --jobs 2 --scores-from exp/benchmark_control/ranking_loo6
