"""The scaling-out benchmarks run end to end at their smallest size, so the scripts cannot rot.

bench/gpu_check.py runs here on the CPU (--cpu-smoke: the same steps, device cpu, a tiny model); its real run
needs a GPU (bash bench/gpu_check.sh). Figures from these runs mean nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` lives beside the package, not in it

from bench import feature_memory, gpu_check  # noqa: E402


def test_feature_memory(tmp_path):
    assert feature_memory.main(["--hours", "0.01", "--work", str(tmp_path / "work"), "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "feature_memory.json").read_text())["results"]
    assert {r["layout"] for r in res["runs"]} == {"sharded", "single"}
    assert all(r["write"]["utterances"] == r["read"]["utterances"] > 0 for r in res["runs"])
    assert not (tmp_path / "work" / "cache-sharded-0.01h").exists()  # caches are removed after measuring


def test_gpu_check_plumbing_on_cpu(tmp_path):
    tiny = ["model.preset=tiny", "model.d_model=32", "model.n_heads=2", "model.ffn_dim=64", "model.n_layers=1",
            "model.subsample_channels=8", "train.threads=1", "train.max_batch_seconds=20"]
    argv = ["--cpu-smoke", "--train-hours", "0.01", "--epochs", "1", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path), *(x for s in tiny for x in ("--set", s))]
    assert gpu_check.main(argv) == 0
    res = json.loads((tmp_path / "gpu_check.json").read_text())["results"]
    assert res["cuda_path"]["ok"] and res["steps"] > 0 and res["audio_sec_per_sec_median"] > 0
