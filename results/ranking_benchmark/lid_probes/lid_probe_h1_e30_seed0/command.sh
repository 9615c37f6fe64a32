# the main benchmark's in-set LID (benchmark_lid.yaml, 30 epochs) with 1 h of speech per language instead of 30 min:
# the corpus's train split generated to 1 h (data/benchmark_h1; utterance i of a split depends only on the seed,
# language, split and i, so its dev and test splits are data/benchmark's, and its train split extends that one),
# started from a phone recognizer of the same recipe on that corpus (exp/benchmark_phones_h1/all, made by the
# seed-0 command first), at training seed 0. Intel Xeon 2-core VM, 2026-12-03, main commit b9cf900 (the LID code
# unchanged since), seeds 0 and 1 side by side and beside a CI run for 15 min, seed 2 started 25 min later beside them
# (three processes on two cores: wall times are upper bounds)
cd /work/main && . .venv/bin/activate
/usr/bin/time -v xlingual lid train recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/lid_probe_h1_e30_seed0 \
    --set train.seed=0 --set train.threads=1 --set train_hours=1.0 \
    --set corpus.dir=data/benchmark_h1 --set corpus.train_hours=1.0 \
    --phones recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/benchmark_phones_h1 \
    --phone-set train.threads=1 --phone-set corpus.dir=data/benchmark_h1 --phone-set corpus.train_hours=1.0
