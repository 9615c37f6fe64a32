# The whole benchmark matrix (benchmark.yaml: 13 sources, 169 adaptations, the 3-min baselines at 3 seeds, 13 IPA
# pools and their adaptations: 247 runs) re-made from nothing but the prepared corpus (its feature cache emptied
# first), to time a re-run with the code of main 9b4f126 (after issue 16's serving workers, fused AdamW, cheap
# dropout masks, dev passes from half-way). Intel Xeon 2-core VM, nothing else running (another job was stopped
# with SIGSTOP for the duration): 23.5 min wall (command_output.log).
cd /work/main && . .venv/bin/activate
rm -rf data/benchmark/.features exp/benchmark_rerun
/usr/bin/time -v xlingual matrix recipes/synthetic/benchmark.yaml --jobs 2 --set out_dir=exp/benchmark_rerun
python recipes/synthetic/collect.py save exp/benchmark_rerun results/ranking_benchmark/benchmark_rerun
python recipes/synthetic/compare_control.py results/ranking_benchmark/benchmark results/ranking_benchmark/benchmark_rerun \
    --names benchmark rerun --title "The benchmark matrix re-run from scratch on later code vs the committed one" \
    --out results/ranking_benchmark/rerun_vs_benchmark.md
