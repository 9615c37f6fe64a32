# the main benchmark's in-set LID (benchmark_lid.yaml: 30 min per language, 30 epochs) started from a better phone
# recognizer: the same recipe (benchmark_phones.yaml) on 15 min per language instead of 3 (--phone-set hours=0.25,
# now the recipe's value; exp/benchmark_phones_15min/all, made by the seed-0 command first), at training seed 1.
# Intel Xeon 2-core VM, 2026-12-03, main commit 9a9008a (the LID and recognizer code unchanged since); the three seeds
# side by side (three processes on two cores: wall times are upper bounds; seed 2 was started again after its first
# start found the recognizer's folder still locked by seed 0's run)
cd /work/main && . .venv/bin/activate
/usr/bin/time -v xlingual lid train recipes/synthetic/benchmark_lid.yaml --set out_dir=exp/lid_probe_p15_seed1 \
    --set train.seed=1 --set train.threads=1 \
    --phones recipes/synthetic/benchmark_phones.yaml --phone-set out_dir=exp/benchmark_phones_15min \
    --phone-set train.threads=1 --phone-set hours=0.25
