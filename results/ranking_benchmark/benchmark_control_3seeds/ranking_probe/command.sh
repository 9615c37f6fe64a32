# The linear CTC probe (xlingual/probe.py) on the control corpus, beside the saved predictor scores of the control's
# ranking (3-min leave-one-out models), against its 3-seed matrix. The control's 13 sources re-trained at seed 0 in a
# folder of their own (with target bn only, so that the matrix stops after the sources and bn's 13 adaptations;
# the probe plans every target's cells from that folder's matrix.yaml). Intel Xeon 2-core VM, beside the control's
# leave-one-out training (ranking_p15/command.sh).
cd /work/main && . .venv/bin/activate
shared=bn,as,hi,ne,mr,ur,tr,az,kk,uz,ta,te,th
python recipes/synthetic/collect.py restore results/ranking_benchmark/benchmark_control_3seeds exp/benchmark_control_3seeds
xlingual matrix recipes/synthetic/benchmark.yaml --jobs 1 --set out_dir=exp/bmc_probe_sources \
  --set corpus.dir=data/benchmark_control --set "corpus.exclude_shared=[$shared]" --set 'targets=[bn]' \
  --set 'seeds=[0]' --set 'baseline_seeds=[]' --set 'pools={}' --set 'pool_budgets=[]'
xlingual rank-eval --matrix exp/benchmark_control_3seeds --metric cer --seed-floor adapt \
  --scores-from results/ranking_benchmark/benchmark_control_3seeds/ranking --probe exp/bmc_probe_sources \
  --out exp/benchmark_control_3seeds/ranking_probe
xlingual rank-eval --matrix exp/benchmark_control_3seeds --metric cer --seed-floor none \
  --scores-from exp/benchmark_control_3seeds/ranking_probe --out exp/benchmark_control_3seeds/ranking_probe_nofloor
