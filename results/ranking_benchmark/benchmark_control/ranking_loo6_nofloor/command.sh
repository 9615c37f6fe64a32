xlingual rank-eval --matrix exp/benchmark_control --metric cer --seed-floor none --scores-from exp/benchmark_control/ranking_loo6 --out exp/benchmark_control/ranking_loo6_nofloor
