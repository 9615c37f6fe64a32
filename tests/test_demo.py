"""The demo's whole path (corpus -> matrix -> LID -> ranking -> query -> report) at a toy size."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from xlingual import demo
from xlingual.config import ModelConfig

MICRO = ModelConfig(preset="tiny", n_layers=1, d_model=32, ffn_dim=64, subsample_channels=8)


def test_demo_end_to_end_at_toy_scale(tmp_path, monkeypatch, capsys):
    real = demo.demo_configs

    def toy(out_dir, scale=1.0):
        m, lid, corpus = real(out_dir, scale)
        fast = dict(epochs=1, threads=1)
        m = replace(m, model=MICRO, train=replace(m.train, **fast), small_train={"epochs": 1},
                    adapt=replace(m.adapt, train=replace(m.adapt.train, **fast)))
        lid = replace(lid, model=MICRO, train=replace(lid.train, **fast))
        return m, lid, corpus

    monkeypatch.setattr(demo, "demo_configs", toy)
    # 2 jobs: the matrix's runs in worker processes, the LID alongside them in this process
    summary = demo.run_demo(tmp_path / "demo", scale=0.15, jobs=2, progress=False, loo=False)
    report = (tmp_path / "demo" / "report.md").read_text()
    for heading in ("WER matrix", "Data-size table", "LID average posteriors", "Source ranking against the CER",
                    f"New language ({demo.NEW_LANGUAGE})"):
        assert heading in report
    assert [r["language"] for r in summary["query"]["ranking"]] and summary["wall_seconds"] > 0
    assert summary["lid_config"]["train"]["threads"] == 1 and "lid_after_matrix_s" in summary["timings_s"]
    assert "The LID trained alongside the matrix" in report
    # which machine: wall times are only comparable on the same CPU
    assert summary["machine"]["cpu"] and summary["machine"]["cpu"] in report and summary["machine"]["usable_cores"] >= 1
    # the LID started from the first source's pre-trained encoder (the run it waited for)
    source = demo.lid_source_cell(demo.demo_configs(tmp_path / "demo", 0.15)[0])
    assert source.language == demo.SOURCES[0] and source.hours is None
    assert summary["lid_config"]["init_from"] == str(tmp_path / "demo" / "matrix" / source.name / "best.pt")
    assert 0 < summary["timings_s"]["lid_wait_for_source_s"] < summary["timings_s"]["matrix_s"]
    assert (tmp_path / "demo" / "matrix" / "report" / "wer_matrix.png").is_file()
    # a one-epoch toy LID: if it did not learn, the report says its query is no evidence (and rank-eval drops it)
    learned = json.loads((tmp_path / "demo" / "lid" / "results.json").read_text())["learned"]
    assert ("**Warning**: the LID" in report and "no evidence" in report) == (not learned)
    # a second run reuses everything: no training, just the report (1 job: the LID after the matrix, as before)
    again = demo.run_demo(tmp_path / "demo", scale=0.15, jobs=1, progress=False, loo=False)
    assert again["timings_s"]["matrix_s"] < summary["timings_s"]["matrix_s"]
    assert "lid_after_matrix_s" not in again["timings_s"]
    # bench/demo_adapt_epochs.py re-runs only the adaptation cells at other epochs, beside a copy of the first ones
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import demo_adapt_epochs

    assert demo_adapt_epochs.main([str(tmp_path / "demo"), "2", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| test CER, 1 epochs | test CER, 2 epochs |" in printed and "2 epochs: CER" in printed
    assert (tmp_path / "demo_matrix_e1" / "report" / "runs.csv").is_file()
    steps = {json.loads(p.read_text())["training"]["epochs"] for p in (tmp_path / "demo" / "matrix" / "adapt").rglob(
        "results.json")}
    assert steps == {2}
    # bench/demo_lid.py trains the demo's LID per recipe variant and seed (here one 1-epoch variant, two seeds)
    from bench import demo_lid

    monkeypatch.setattr(demo_lid, "VARIANTS", {"one_epoch": ({"epochs": 1, "lr": 2e-3, "max_batch_seconds": 16,
                                                              "warmup_steps": 2}, 0.05)})
    assert demo_lid.main([str(tmp_path / "demo"), "--seeds", "0", "1", "--jobs", "2",
                          "--out", str(tmp_path / "lid_probe.json")]) == 0
    probe = json.loads((tmp_path / "lid_probe.json").read_text())["variants"]["one_epoch"]
    assert [r["test_accuracy"] for r in probe["runs"]] and set(probe["runs"][0]["per_language"]) == set(demo.SOURCES)
    assert "| one_epoch |" in capsys.readouterr().out
    assert (tmp_path / "demo" / "lid_probe" / "one_epoch" / "seed1" / "best.pt").is_file()


def test_background_returns_the_value_or_raises_the_error():
    job = demo.Background(lambda a, b: a + b, 2, 3)
    assert job.result() == 5 and not job.running() and job.seconds >= 0

    def fail():
        raise ValueError("broken manifest")

    with pytest.raises(ValueError, match="broken manifest"):
        demo.Background(fail).result()


def test_the_demos_lid_training_shows_progress(tmp_path):
    """The LID trains in the demo's own process for minutes: its epochs show progress (lines in a log), where it
    printed nothing (issue 14)."""
    _, lid, _ = demo.demo_configs(tmp_path)
    assert lid.train.progress
