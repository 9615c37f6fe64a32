# The linear CTC probe (xlingual/probe.py) beside the saved predictor scores of ranking_p15 (the 15-min leave-one-out
# models), against the 3-seed main matrix: each source's encoder from the matrix re-made at 9b4f126
# (../../benchmark_rerun: exp/benchmark_rerun still had its source checkpoints), a linear CTC layer trained on each
# target's 3-min adaptation data there (150 full-batch Adam steps), scored by its lowest dev loss.
# Intel Xeon 2-core VM, beside the control's leave-one-out training (2 other processes).
cd /work/main && . .venv/bin/activate
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_3seeds exp/benchmark_3seeds
xlingual rank-eval --matrix exp/benchmark_3seeds --metric cer --seed-floor adapt \
  --scores-from results/ranking_benchmark/benchmark_3seeds/ranking_p15 --probe exp/benchmark_rerun \
  --out exp/benchmark_3seeds/ranking_probe
# bootstrap-only view (ranking_probe_nofloor/): the same scores, the probe's included, re-scored
xlingual rank-eval --matrix exp/benchmark_3seeds --metric cer --seed-floor none \
  --scores-from exp/benchmark_3seeds/ranking_probe --out exp/benchmark_3seeds/ranking_probe_nofloor
