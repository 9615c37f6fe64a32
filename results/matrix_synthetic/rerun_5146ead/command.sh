cd /work/msyn && . /work/main/.venv/bin/activate && export PYTHONPATH=/work/msyn
echo "commit: $(git rev-parse HEAD)"; date
time xlingual prepare synthetic --out data/synthetic --languages bn as th tr hi az --train-hours 1.0 --dev-hours 0.05 --test-hours 0.05
time xlingual matrix recipes/synthetic/matrix.yaml --jobs 2
date
