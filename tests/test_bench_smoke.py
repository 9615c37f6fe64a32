"""Every benchmark runs end to end at its smallest size (seconds), so the scripts cannot rot.

Figures from these runs mean nothing; the real ones come from `python -m bench.<name>` (see bench/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from xlingual.runspec import SPEC_FILE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench` lives beside the package, not in it

from bench import (common, contention, decode_speed, flops, optimizations, peer_espnet, scaling,  # noqa: E402
                   synthesis_speed, train_throughput)


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


# ---------------------------------------------------------------------------------------------------------------
# bench.peer_espnet: only the parts that need no ESPnet (the benchmark itself installs ESPnet into its own venv;
# no test ever does)


@pytest.mark.parametrize("speaker, uid, sr, channels, offset, kaldi_id, error", [
    ("bn+paul", "bn-test-000001", 16000, 1, 0.0, "bn+paul-bn-test-000001", None),  # speaker prefix added
    ("spk1", "spk1-utt7", 16000, 1, 0.0, "spk1-utt7", None),  # already prefixed: kept
    ("a b", "x y", 16000, 1, 0.0, "a_b-x_y", None),  # spaces cannot be in a Kaldi id
    ("s", "u", 8000, 1, 0.0, None, "8000 Hz"),  # ESPnet's frontend is set for 16 kHz: refused, never resampled
    ("s", "u", 16000, 2, 0.0, None, "2 channels"),
    ("s", "u", 16000, 1, 0.25, None, "offset"),  # wav.scp takes whole files here
])
def test_peer_espnet_kaldi_dir(tmp_path, make_wav, speaker, uid, sr, channels, offset, kaldi_id, error):
    from xlingual.corpus import Utterance

    wav = make_wav(tmp_path / "a.wav", seconds=0.5, sr=sr, channels=channels)
    other = Utterance("u9", str(make_wav(tmp_path / "b.wav", seconds=0.4)), "b", "bn", "zz", 0.4)
    utt = Utterance(uid, str(wav), "  two   words ", "bn", speaker, 0.5, offset)
    out = tmp_path / "kaldi"
    if error:
        with pytest.raises(ValueError, match=error):
            peer_espnet.write_kaldi([other, utt], out)
        return
    info = peer_espnet.write_kaldi([other, utt], out)
    assert info["id_map"] == {kaldi_id: uid, "zz-u9": "u9"} and info["utts"] == 2
    assert info["seconds"] == pytest.approx(0.9, abs=1e-3)
    lines = {f: (out / f).read_text(encoding="utf-8").splitlines() for f in ("wav.scp", "text", "utt2spk", "id_map")}
    assert [line.split()[0] for line in lines["wav.scp"]] == sorted([kaldi_id, "zz-u9"])  # Kaldi's order
    assert f"{kaldi_id} two words" in lines["text"] and f"{kaldi_id} {wav.resolve()}" in lines["wav.scp"]
    assert f"{kaldi_id} {speaker.replace(' ', '_')}" in lines["utt2spk"]
    assert peer_espnet.read_text(out / "text", info["id_map"])[uid] == "two words"  # back to the manifest id


@pytest.mark.parametrize("refs, hyps, wer, cer, missing", [
    ({"a": "x y", "b": "z"}, {"a": "x y", "b": "z"}, 0.0, 0.0, 0),
    ({"a": "ab cd"}, {"a": "ab ce"}, 50.0, 20.0, 0),  # one word of 2, one character of 5 (the space counts)
    ({"a": "ab cd", "b": "ef"}, {"a": "ab  cd "}, 100 / 3, 100 * 2 / 7, 1),  # missing = empty; whitespace collapsed
    ({"a": "ab", "b": ""}, {"a": "ab", "b": "junk", "c": "extra"}, 0.0, 0.0, 0),  # empty ref skipped, extra ignored
])
def test_peer_espnet_score(refs, hyps, wer, cer, missing):
    r = peer_espnet.score(refs, hyps)
    assert r["wer"] == pytest.approx(wer) and r["cer"] == pytest.approx(cer) and r["missing_hyps"] == missing
    assert r["utts"] == sum(1 for v in refs.values() if v)


def test_peer_espnet_log_parse():
    line = ("[host] 2026-12-01 05:00:00,000 (trainer:338) INFO: {n}epoch results: [train] iter_time=0.01, "
            "forward_time=0.2, loss_ctc=95.3, loss=95.3, backward_time=0.3, lr_0=2.0e-04, train_time=0.5, "
            "time={t}, total_count=23, gpu_max_cached_mem_GB=0.0, [valid] loss_ctc=80.1, cer_ctc=0.9{n}, "
            "loss=80.1, time=2.1 seconds, total_count=3, gpu_max_cached_mem_GB=0.0")
    log = "noise\n" + line.format(n=1, t="1 minute and 11.28 seconds") + "\n" + line.format(n=2, t="9.5 seconds")
    epochs = peer_espnet.parse_espnet_log(log)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[0]["train_seconds"] == pytest.approx(71.28) and epochs[1]["train_seconds"] == 9.5
    assert epochs[0]["dev_cer"] == pytest.approx(91.0) and epochs[0]["valid_seconds"] == 2.1
    assert epochs[1]["train_loss"] == 95.3 and epochs[1]["dev_loss"] == 80.1
    assert peer_espnet.to_seconds("1 hour, 2 minutes and 3 seconds") == 3723


def fake_toolkit(wall: float, rss: float, params: int, epoch_seconds: list[float], dev_cers: list[float],
                 cer: float) -> dict:
    per_epoch = [{"epoch": i + 1, "train_seconds": s, "dev_cer": c} for i, (s, c) in enumerate(zip(epoch_seconds,
                                                                                                  dev_cers))]
    test = {"cer": cer, "wer": 4 * cer}
    return {"train": {"wall_s": wall, "cpu_s": wall * 1.5, "peak_rss_mb": rss, "loadavg_before": [0.1],
                      "loadavg_after": [1.9], "busy_before": []},
            "prep": {"tokens": {"wall_s": 3.0}, "collect_stats": {"wall_s": 20.0}, "decode": {"wall_s": 9.0}},
            "per_epoch": per_epoch, "epochs": len(per_epoch), "params": params, "train_loop_seconds": wall - 5,
            "own_refs_match": True, "test": {"best": test, "last": test}}


@pytest.mark.parametrize("esp_epochs, xl_epochs, budget, esp_pick, xl_pick", [
    ([100, 100, 100], [40, 40, 40, 40, 40], 200, 2, 5),  # xlingual faster: ESPnet's epoch nearest its 200 s
    ([30, 30], [50, 50, 50], 60, 2, 1),  # ESPnet faster: xlingual's epoch nearest 60 s (50 s, not 100 s)
    ([10], [10], 10, 1, 1),  # one epoch each, the same time
])
def test_peer_espnet_equal_time(esp_epochs, xl_epochs, budget, esp_pick, xl_pick):
    eq = peer_espnet.equal_time({
        "espnet": [{"epoch": i + 1, "train_seconds": s, "dev_cer": 50.0 - i} for i, s in enumerate(esp_epochs)],
        "xlingual": [{"epoch": i + 1, "train_seconds": s, "dev_cer": 40.0 - i} for i, s in enumerate(xl_epochs)]})
    assert eq["seconds"] == budget and eq["espnet"]["epoch"] == esp_pick and eq["xlingual"]["epoch"] == xl_pick
    assert eq["espnet"]["dev_cer"] == 50.0 - (esp_pick - 1) and eq["xlingual"]["final_dev_cer"] == 41.0 - len(xl_epochs)


def test_peer_espnet_summary_from_fake_results():
    toolkits = {"espnet": fake_toolkit(600.0, 2700.0, 2_070_000, [38.0] * 15, [20.0 - i for i in range(15)], 9.0),
                "xlingual": fake_toolkit(400.0, 2800.0, 2_060_000, [25.0] * 15, [18.0 - i for i in range(15)], 8.0)}
    cmp = peer_espnet.compare(toolkits, train_audio_s=3600.0, threads=2)
    assert cmp["per_toolkit"]["espnet"]["audio_sec_per_sec"] == pytest.approx(3600 * 15 / 600)
    assert cmp["per_toolkit"]["xlingual"]["cpu_share"] == pytest.approx(0.75)
    ratio = cmp["xlingual_over_espnet"]
    assert ratio["throughput"] == pytest.approx(1.5) and ratio["train_wall"] == pytest.approx(400 / 600)
    assert ratio["peak_rss"] == pytest.approx(2800 / 2700) and ratio["test_cer"] == pytest.approx(8 / 9)
    assert cmp["equal_time"]["xlingual"]["epoch"] == 15 and cmp["equal_time"]["espnet"]["epoch"] == 10  # 375 s
    res = {"toolkits": toolkits, "comparison": cmp, "install": None,
           "setup": {"language": "bn", "train_hours_actual": 1.0, "dev_hours_actual": 0.05, "test_hours_actual": 0.1,
                     "utterances": {"train": 900, "dev": 50, "test": 90}, "audio_dir": "x", "epochs": 15,
                     "threads": 2, "child_env": {"OMP_NUM_THREADS": "2"}}}
    md = peer_espnet.markdown(res)
    assert "| espnet | 2.070M | 15 | 600 | 90 |" in md and "| xlingual | 2.060M | 15 | 400 | 135 |" in md
    assert "throughput x1.50" in md and "Dev CER at equal training time" in md
    only = peer_espnet.compare({"xlingual": toolkits["xlingual"]}, 3600.0, 2)  # one toolkit: no ratios
    assert "xlingual_over_espnet" not in only and "equal_time" not in only
    peer_espnet.markdown({**res, "toolkits": {"xlingual": toolkits["xlingual"]}, "comparison": only})
    # the data-parallel variant: a ratio of its own, in the table and the equal-time comparison, and its set-up
    ddp = fake_toolkit(300.0, 1500.0, 2_060_000, [18.0] * 15, [18.0 - i for i in range(15)], 8.1)
    ddp["train"].update(ranks=2, threads_per_rank=1, max_batch_seconds_per_rank=30.0, features_wall_s=12.0)
    three = {**toolkits, "xlingual-ddp": ddp}
    cmp3 = peer_espnet.compare(three, 3600.0, 2)
    assert cmp3["xlingual_ddp_over_espnet"]["throughput"] == pytest.approx(2.0)
    assert cmp3["xlingual_over_espnet"] == ratio and set(cmp3["equal_time"]) == {"seconds", *three}
    md3 = peer_espnet.markdown({**res, "toolkits": three, "comparison": cmp3})
    assert "**xlingual-ddp / ESPnet: throughput x2.00**" in md3 and "**xlingual / ESPnet: throughput x1.50**" in md3
    assert "2 data-parallel processes" in md3 and "<= 30 s per process" in md3
    both = peer_espnet.compare({k: three[k] for k in ("xlingual", "xlingual-ddp")}, 3600.0, 2)  # no ESPnet
    assert not [k for k in both if k.endswith("_over_espnet")] and "equal_time" in both


@pytest.mark.parametrize("argv, full, hours, epochs", [
    ([], True, 1.0, 15),
    (["--quick"], False, 0.02, 1),
    (["--epochs", "3"], False, 1.0, 3),  # another size never replaces the committed results
    (["--quick", "--hours", "0.05"], False, 0.05, 1),
])
def test_peer_espnet_sizes(argv, full, hours, epochs):
    args = peer_espnet.parse_args(argv)
    assert (args.full_size, args.hours, args.epochs) == (full, hours, epochs)
    assert common.results_dir(None, not args.full_size) == (common.RESULTS_DIR if full else common.WORK_DIR / "quick")


def test_peer_espnet_xlingual_side(corpus, out):
    """The xlingual half end to end (its manifests, Kaldi dirs, training child, decoding, scoring, result files),
    with ESPnet left out."""
    r = peer_espnet.main(["--toolkits", "xlingual", "xlingual-bf16", "--language", "tr", "--hours", "0.004",
                          "--dev-hours", "0.001",
                          "--test-hours", "0.001", "--epochs", "1", "--threads", "1", "--corpus", str(corpus),
                          "--out", str(out)])
    x = written(out, "peer_espnet")["toolkits"]["xlingual"]
    assert x["epochs"] == 1 and x["params"] > 0 and x["train"]["peak_rss_mb"] > 0 and x["own_refs_match"]
    assert 0 <= x["test"]["best"]["cer"] and x["test"]["best"]["missing_hyps"] == 0
    configs = {n: [p for p in (common.WORK_DIR / "peer_espnet_small" / n / "run").rglob("*.y*ml")]
               for n in ("xlingual", "xlingual-bf16")}
    bf16 = {n: any("cpu_bf16: true" in p.read_text() for p in ps) for n, ps in configs.items()}
    assert bf16 == {"xlingual": False, "xlingual-bf16": True}, configs  # the variant's override reached its run
    assert "xlingual-bf16" in written(out, "peer_espnet")["toolkits"]
    kaldi = common.WORK_DIR / "peer_espnet_small" / "kaldi" / "test"
    assert len((kaldi / "wav.scp").read_text().splitlines()) == r["setup"]["utterances"]["test"]


def test_contention_runs_idle_then_loaded_and_reports_the_ratio(out, monkeypatch):
    """bench.contention: the demo twice (its real run is minutes: faked here), the second beside a busy process
    that is really running; ratios loaded / idle."""
    loads, calls = [], []

    class Recorded(optimizations.Load):
        def __enter__(self):
            loads.append(self)
            return super().__enter__()

    def fake_demo(folder, scale, jobs):
        spinning = sum(p.poll() is None for p in loads[-1].procs)  # busy processes alive during this run
        calls.append((folder.name, scale, jobs, spinning))
        wall = 100.0 if not spinning else 140.0
        return {"wall_s": wall, "timings_s": {"matrix_s": wall - 10, "lid_train_s": 20.0 * (1 + spinning)},
                "cpu_s": 190.0, "peak_memory_gb": 2.0, "unlearned": 0}

    monkeypatch.setattr(contention, "Load", Recorded)
    monkeypatch.setattr(contention, "run_demo", fake_demo)
    res = contention.main(["--quick", "--out", str(out)])
    assert calls == [("idle", 0.15, 2, 0), ("loaded", 0.15, 2, 1)]
    assert all(p.poll() is not None for p in loads[-1].procs)  # stopped afterwards
    assert res["loaded_over_idle"]["wall"] == pytest.approx(1.4) and res["loaded_over_idle"]["lid"] == 2.0
    assert written(out, "contention")["runs"]["loaded"]["busy_processes"] == 1
    assert "| loaded / idle |" in (out / "contention.md").read_text()
    assert contention.settle(0, 60) < 1  # nothing to wait for


def test_cpu_bf16_times_both_precisions_in_their_own_processes(out):
    """bench.cpu_bf16 --quick: a real fit() per precision, in child processes that use the parent's work folder."""
    from bench import cpu_bf16

    res = cpu_bf16.main(["--quick", "--out", str(out)])
    (setting,) = res["settings"].values()
    for prec in ("fp32", "bf16"):
        (run,) = setting["runs"][prec]
        assert len(run["audio_sec_per_sec"]) == 2 and all(x > 0 for x in run["audio_sec_per_sec"])
    loss32, loss16 = setting["first_loss"]["fp32"][0], setting["first_loss"]["bf16"][0]
    assert loss16 != loss32 and loss16 == pytest.approx(loss32, rel=0.02)  # bf16 was on, and only rounds
    assert (common.WORK_DIR / "synthetic").is_dir()  # the children's corpus went to the test's work folder
    assert setting["gflop_per_audio_second"] > 0 and setting["fp32_peak_gflops"] > 0
    assert all(0 < u < 5 for u in setting["utilization_later"].values())
    assert "bf16 / fp32, later" in (out / "cpu_bf16.md").read_text()
    assert written(out, "cpu_bf16")["cpu_has_bf16"] in (True, False)


def test_matrix_speed_runs_each_commits_tree(out):
    """bench.matrix_speed --quick: HEAD's tree (git archive) against itself on a 1 x 1 slice, real matrix runs."""
    from bench import matrix_speed

    res = matrix_speed.main(["--quick", "--out", str(out)])
    before, after = res["sides"]["before"], res["sides"]["after"]
    assert before["commit"] == after["commit"] and len(before["commit"]) == 40
    for side in (before, after):
        (r,) = side["rounds"]
        assert r["runs"] == 3 and set(r["run_seconds"]) == {"source", "adapt", "baseline"}  # 1 source, 1 adaptation, 1 baseline
        assert all(v > 0 for v in r["run_seconds"].values())
        assert 1 <= len(r["code_versions"]) <= 2  # adaptation hashes one more module (transfer) than scratch
    assert before["rounds"][0]["code_versions"] == after["rounds"][0]["code_versions"]
    assert res["before_over_after"]["median"] > 0
    assert (common.WORK_DIR / "matrix_speed" / "code_after" / matrix_speed.RECIPE).is_file()
    assert "Before / after wall time" in (out / "matrix_speed.md").read_text()
    assert written(out, "matrix_speed")["jobs"] == 1


def test_torch_build_times_the_step_under_two_interpreters(out):
    """bench.torch_build --quick with this interpreter on both sides: child timings, ratio, config comparison."""
    from bench import torch_build

    res = torch_build.main(["--python", sys.executable, "--quick", "--threads", "1", "--out", str(out)])
    run = res["runs"]["tiny/1"]
    assert len(run["default"]) == len(run["other"]) == 1 and run["default"][0]["audio_s_per_s"] > 0
    assert run["default"][0]["loss"] == pytest.approx(run["other"][0]["loss"], rel=1e-4)  # same model, same batch
    assert res["config_differences"] == {"default": [], "other": []}
    assert res["torch"]["other"]["torchaudio_shim"] is False  # this torchaudio imports
    assert (common.WORK_DIR / "torch_build" / "torchaudio_shim" / "torchaudio" / "models" / "conformer.py").is_file()
    assert written(out, "torch_build")["steps"] == 2
