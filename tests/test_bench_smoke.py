"""Every benchmark runs end to end at its smallest size (seconds), so the scripts cannot rot.

Figures from these runs mean nothing; the real ones come from `python -m bench.<name>` (see bench/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` lives beside the package, not in it

from bench import common, decode_speed, flops, optimizations, scaling, synthesis_speed, train_throughput  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from data_prep.synthetic import prepare_synthetic

    root = tmp_path_factory.mktemp("bench_corpus")
    prepare_synthetic(root, languages=("tr",), hours={"train": 0.005, "dev": 0.002, "test": 0.002}, progress=False)
    return root


@pytest.fixture
def out(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "WORK_DIR", tmp_path / "work")
    return tmp_path / "results"


def written(out: Path, name: str) -> dict:
    data = json.loads((out / f"{name}.json").read_text())
    assert data["header"]["command"].startswith("python -m bench.")
    assert (out / f"{name}.md").read_text().startswith("# ")
    return data["results"]


def test_common_helpers():
    assert common.stats([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    calls = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), 0.5)[1]},
                               repeats=2, warmup=1)
    assert calls == ["a", "b"] * 3 and times["b"] == [0.5, 0.5] and len(times["a"]) == 2
    assert common.ratios([2.0, 3.0], [1.0, 1.5]) == [2.0, 2.0]
    assert "| x |" in common.md_table(["x"], [[1.0]])


def test_train_throughput(corpus, out):
    train_throughput.main(["--presets", "tiny", "--hours", "0.005", "--batch-seconds", "6", "--repeats", "1",
                           "--threads", "1", "--languages", "tr", "--corpus", str(corpus), "--out", str(out),
                           "--candidates", "bf16", "contiguous_convs"])
    r = written(out, "train_throughput")["presets"][0]
    assert set(r["candidate_speedup"]) == {"bf16", "contiguous_convs"}
    assert r["audio_sec_per_sec"]["pipeline"]["median"] > 0 and r["pipeline_over_model_only"]["median"] > 0
    assert 0 <= r["padding"]["padding_fraction"] < 1
    assert r["breakdown_seconds"]["pipeline"]["collate"] > 0 and r["cprofile_top"]


def test_flops(out):
    flops.main(["--quick", "--presets", "tiny", "--batch-seconds", "4", "--repeats", "1", "--steps", "1",
                "--matmul-n", "128", "--threads", "1", "--variants", "baseline fp32", "fused AdamW", "--out", str(out)])
    r = written(out, "flops")
    p = r["presets"][0]
    assert p["gflop_per_audio_second"] > 0 and p["variants"]["baseline fp32"]["achieved_gflops"]["median"] > 0
    assert all(m["gflops"]["median"] > 0 for m in r["matmul"])


def test_decode_speed(corpus, out):
    decode_speed.main(["--hours", "0.002", "--batch-seconds", "10", "--beams", "4", "--repeats", "1",
                       "--threads", "1", "--languages", "tr", "--corpus", str(corpus), "--out", str(out)])
    rows = written(out, "decode_speed")["rows"]
    assert {(r["method"], r["part"]) for r in rows} >= {("greedy", "end to end"), ("beam4", "end to end")}
    assert all(r["audio_sec_per_sec"]["median"] > 0 for r in rows)


def test_synthesis_speed(out):
    synthesis_speed.main(["--languages", "tr", "--hours", "0.002", "--jobs", "1", "--repeats", "1", "--no-profile",
                          "--out", str(out)])
    r = written(out, "synthesis_speed")["jobs"]["1"]
    assert r["audio_seconds"] > 0 and r["whole_call_audio_sec_per_sec"]["median"] > 0


def test_scaling(corpus, out):
    # one size: each size is two child processes (torch imports), the slow part of this test
    scaling.main(["--sizes", "0.004", "--dev-hours", "0.001", "--threads", "1", "--languages", "tr",
                  "--corpus", str(corpus), "--out", str(out)])
    r = written(out, "scaling")
    assert [s["hours"] for s in r["sizes"]] == [0.004]
    assert all(s["train"]["peak_rss_mb"] > 0 and s["features"]["seconds"] > 0 for s in r["sizes"])
    assert r["matrix"].get("core") or r["matrix"].get("error")


def test_optimizations(corpus, out):
    optimizations.main(["--quick", "--repeats", "1", "--load", "0", "--batch-seconds", "4", "--utterances", "2",
                        "--files", "2", "--dev-hours", "0.001", "--threads", "1", "--languages", "tr",
                        "--corpus", str(corpus), "--out", str(out)])
    r = written(out, "optimizations")
    assert [(row["load"], row["setting"]) for row in r["omp_wait"]] == [(0, "default"), (0, "PASSIVE")]
    assert r["omp_wait"][0]["speedup"]["median"] == 1 and r["omp_wait"][1]["speedup"]["median"] > 0
    assert r["channels_last"]["loss_abs_diff"] < 1e-4  # the memory format changes no result
    assert all(r[k]["speedup"]["median"] > 0 for k in ("channels_last", "dev_eval", "wav_write"))


def test_ranking_cost_row_seconds(tmp_path):
    runs = tmp_path / "runs.csv"
    runs.write_text(
        "name,kind,language,hours,seed,source,label,test_wer,test_cer,best_dev_wer,epochs,steps,wall_seconds\n"
        "scratch/bn-1h/seed0,scratch,bn,1.0,0,,main,50,9,60,20,100,600\n"
        "scratch/tr-1h/seed0,scratch,tr,1.0,0,,main,50,9,60,20,100,600\n"
        "scratch/bn-10min/seed0,scratch,bn,0.1667,0,,main,80,20,85,40,80,200\n"
        "scratch/bn-10min/seed1,scratch,bn,0.1667,1,,main,82,21,86,40,80,220\n"
        "scratch/tr-10min/seed0,scratch,tr,0.1667,0,,main,80,20,85,40,80,210\n"
        "adapt/bn-1h_to_bn-10min/main/seed0,adapt,bn,0.1667,0,scratch/bn-1h/seed0,main,60,10,70,30,60,150\n"
        "adapt/tr-1h_to_bn-10min/main/seed0,adapt,bn,0.1667,0,scratch/tr-1h/seed0,main,70,12,75,30,60,160\n"
        "adapt/tr-1h_to_bn-10min/head/seed0,adapt,bn,0.1667,0,scratch/tr-1h/seed0,head,90,30,95,30,60,60\n"
        "adapt/tr-10min_to_bn-10min/main/seed0,adapt,bn,0.1667,0,scratch/tr-10min/seed0,main,85,25,90,30,60,140\n")
    from bench.ranking_cost import row_seconds

    # bn: mean baseline (200, 220) + the main cells from the 1 h sources (not the head variant, not the 10 min source)
    assert row_seconds(runs) == {"bn": {"baseline_s": 210.0, "cells_s": {"bn": 150.0, "tr": 160.0}, "row_s": 520.0}}
