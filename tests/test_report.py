"""Matrix report (xlingual/report.py): table layout and labels, gains, seeds, missing runs, figures.

The results here are hand-written fixtures on a real plan (matrix.plan_cells of the tiny recipe), so every expected
number is known exactly; no model is trained.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers import TINY_YAML
from xlingual.config import MatrixConfig, load_config
from xlingual.matrix import plan_cells, write_plan
from xlingual.rank_metrics import read_wer_matrix
from xlingual.report import Results, Table, hours_label, write_report


# test WER by (table role) -> value; CER = WER / 2
MATRIX = {("bn", "bn"): 40.0, ("tr", "bn"): 50.0, ("bn", "tr"): 45.0, ("tr", "tr"): 30.0}  # (source, target)
BASELINE = {("bn", "small"): 80.0, ("tr", "small"): 60.0, ("bn", "large"): 35.0, ("tr", "large"): 25.0}


def wer_of(cell: dict, seed_offset: float) -> float | None:
    """The fixture WER of a run, from the first role that defines one (+ seed_offset * seed)."""
    for r in cell["roles"]:
        if r["table"] == "matrix":
            return MATRIX[(r["source"], r["target"])] + seed_offset * cell["seed"]
        if r["table"] in ("baseline", "source"):
            return BASELINE[(r.get("target") or r["source"], r["budget"])] + seed_offset * cell["seed"]
        if r["table"] == "size" and r["row"] == "transfer_small":
            return 70.0
        if r["table"] in ("size", "variants") and cell["label"] == "size_adaptation":
            return 48.0
        if r["table"] == "variants" and r["variant"] == "head":
            return 65.0
        if r["table"] == "sweep":
            return 75.0 if r["k"] == 0 else None
    return None


def make_matrix(out: Path, *sets: str, skip=(), seed_offset: float = 0.0, unlearned=()) -> MatrixConfig:
    cfg = load_config(MatrixConfig, TINY_YAML, [f"out_dir={out}", *sets])
    cells = plan_cells(cfg)
    write_plan(out, cfg, cells)
    plan = json.loads((out / "cells.json").read_text())["cells"]
    for c in plan:
        w = wer_of(c, seed_offset)
        if w is None or c["name"] in skip:
            continue
        folder = out / c["name"]
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"hash": c["hash"], "test": {"wer": w, "cer": w / 2},
                                                         "learned": c["name"] not in unlearned,
                                                         "training": {"epochs": 2, "steps": 4}}))
        (folder / "train_log.jsonl").write_text("".join(
            json.dumps({"epoch": e, "step": 2 * e, "dev_wer": w + 10 / e}) + "\n" for e in (1, 2)))
    return cfg


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(encoding="utf-8")))


@pytest.fixture
def report(tmp_path):
    make_matrix(tmp_path)
    write_report(tmp_path)
    return tmp_path / "report"


def test_wer_matrix_layout_like_the_reference(report):
    rows = read_csv(report / "wer_matrix.csv")
    assert rows == [["adapt to \\ pretrain on", "bn", "tr"], ["bn", "40", "50"], ["tr", "45", "30"]]
    assert read_wer_matrix(report / "wer_matrix.csv") == {"bn": {"bn": 40.0, "tr": 50.0},
                                                          "tr": {"bn": 45.0, "tr": 30.0}}  # what rank-eval reads
    md = (report / "wer_matrix.md").read_text().splitlines()
    assert md[0] == "| adapt to \\ pretrain on | Bangla (bn) | Turkish (tr) |"  # one heading: the report's
    assert md[2] == "| Bangla (bn) | **40.0** | 50.0 |"  # the same-language cell in bold
    assert md[3] == "| Turkish (tr) | 45.0 | **30.0** |"
    report_md = (report / "report.md").read_text()
    assert report_md.count("## WER matrix") == 1
    assert read_csv(report / "cer_matrix.csv")[1] == ["bn", "20", "25"]


def test_every_heading_appears_once(report):
    """A table's .md has no heading of its own: report.md (and the demo's report, which includes the .md files
    under its own headings) printed every heading twice (issue 14)."""
    tables = sorted(report.glob("*.md"))
    assert len(tables) > 5
    for path in tables:
        if path.name != "report.md":
            assert path.read_text().startswith("| "), path.name
    headings = [line for line in (report / "report.md").read_text().splitlines() if line.startswith("#")]
    assert len(headings) > 5 and len(headings) == len(set(headings))


def test_gain_over_the_from_scratch_baseline(report):
    rows = read_csv(report / "gain_matrix.csv")
    assert rows[0] == ["adapt to \\ pretrain on", "bn", "tr", "scratch_wer"]
    # bn: scratch 80 -> 40 is 50 %, -> 50 is 37.5 %; tr: scratch 60 -> 45 is 25 %, -> 30 is 50 %
    assert rows[1:] == [["bn", "50", "37.5", "80"], ["tr", "25", "50", "60"]]
    assert "| Bangla (bn) | **+50.0** | +37.5 | 80.0 |" in (report / "gain_matrix.md").read_text()


def test_data_size_table_rows(report):
    rows = read_csv(report / "data_size.csv")
    assert rows[0] == ["condition \\ source -> target", "tr->bn"]
    assert rows[1:] == [["scratch_small", "80"], ["scratch_large", "35"], ["transfer_small", "70"],
                        ["transfer_large", "50"], ["adaptation", "48"], ["same_language", "40"]]
    md = (report / "data_size.md").read_text()
    small = hours_label(0.003)
    assert f"| no pre-training, {small} target | 80.0 |" in md and "| + adaptation (adapter) | 48.0 |" in md
    assert f"| transfer all data same language -> {small} target | 40.0 |" in md


def test_variants_and_layer_sweep_tables(report):
    assert read_csv(report / "variants.csv") == [["source -> target \\ variant", "head", "full+adapters"],
                                                 ["tr->bn", "65", "48"], ["mean", "65", "48"]]
    # k=2 is the full transfer: the matrix cell's run (50); the last column is the target's scratch WER
    assert read_csv(report / "layer_sweep.csv") == [["source -> target \\ k", "0", "2", "scratch"],
                                                    ["tr->bn", "75", "50", "80"]]
    assert (report / "layer_sweep.png").stat().st_size > 1000


def test_figures_and_learning_curves(report):
    for name in ("wer_matrix", "cer_matrix", "gain_matrix", "curves_bn", "curves_tr"):
        assert (report / f"{name}.png").stat().st_size > 1000
    curves = read_csv(report / "learning_curves.csv")
    assert curves[0] == ["target", "series", "step", "dev_wer"]
    bn = [r for r in curves[1:] if r[0] == "bn"]
    assert {r[1] for r in bn} == {"no pre-training", "from bn (same language)", "from tr"}
    assert ["bn", "no pre-training", "2", "90.0"] in bn  # epoch 1: step 2, 80 + 10
    text = (report / "report.md").read_text()
    assert "![wer_matrix](wer_matrix.png)" in text and "![curves_bn](curves_bn.png)" in text
    runs = read_csv(report / "runs.csv")
    assert runs[0][:3] == ["name", "kind", "language"] and len(runs) == 1 + 12


def test_a_figure_that_fails_to_write_leaves_the_previous_one(report, monkeypatch):
    import matplotlib.figure

    png = report / "wer_matrix.png"
    before = png.read_bytes()

    def fail(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")  # a writer interrupted after its first bytes
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    with pytest.raises(OSError, match="wer_matrix.png"):
        write_report(report.parent)
    assert png.read_bytes() == before
    assert not [p for p in report.iterdir() if ".tmp" in p.name]


def test_missing_and_stale_runs_are_empty_cells(tmp_path):
    make_matrix(tmp_path, skip={"adapt/tr-all_to_bn-10.8s/main/seed0"})
    stale = tmp_path / "adapt/bn-all_to_tr-10.8s/main/seed0/results.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "hash": "another config"}))
    write_report(tmp_path)
    rows = read_csv(tmp_path / "report" / "wer_matrix.csv")
    assert rows[1:] == [["bn", "40", ""], ["tr", "", "30"]]
    md = (tmp_path / "report" / "wer_matrix.md").read_text()
    assert "| Bangla (bn) | **40.0** | — |" in md
    assert "10 of 12 runs finished" in (tmp_path / "report" / "report.md").read_text()


def test_runs_that_did_not_learn_are_flagged_not_tabled(tmp_path):
    """A cell whose run did not learn is no measurement: empty in the CSV (so rank-eval skips it), shown with ✗
    in Markdown, left out of means, listed in unlearned.json; a seed that did not learn leaves the mean of the
    others and is counted beside it."""
    cell = "adapt/tr-all_to_bn-10.8s/main/seed0"
    make_matrix(tmp_path, "seeds=[0, 1]", seed_offset=2.0, unlearned={cell, "adapt/bn-all_to_tr-10.8s/main/seed1"})
    write_report(tmp_path)
    assert read_csv(tmp_path / "report" / "wer_matrix.csv")[1:] == [["bn", "41", "52"], ["tr", "45", "31"]]
    md = (tmp_path / "report" / "wer_matrix.md").read_text()
    assert "| Bangla (bn) | **41.0** | 52.0 (1 ✗) |" in md and "| Turkish (tr) | 45.0 (1 ✗) | **31.0** |" in md
    make_matrix(tmp_path / "one", unlearned={cell})
    write_report(tmp_path / "one")
    assert read_csv(tmp_path / "one" / "report" / "wer_matrix.csv")[1] == ["bn", "40", ""]
    md = (tmp_path / "one" / "report" / "wer_matrix.md").read_text()
    assert "| Bangla (bn) | **40.0** | ✗ 50.0 |" in md and "did not learn" in md
    flagged = json.loads((tmp_path / "one" / "report" / "unlearned.json").read_text())
    assert [f["name"] for f in flagged] == [cell]
    assert "1 of them did not learn" in (tmp_path / "one" / "report" / "report.md").read_text()
    assert read_wer_matrix(tmp_path / "one" / "report" / "wer_matrix.csv")["bn"] == {"bn": 40.0}


def test_seeds_are_averaged(tmp_path):
    make_matrix(tmp_path, "seeds=[0, 1]", seed_offset=2.0)  # seed 1 is 2 points worse everywhere
    write_report(tmp_path)
    assert read_csv(tmp_path / "report" / "wer_matrix.csv")[1] == ["bn", "41", "51"]
    assert "Mean of 2 seeds." in (tmp_path / "report" / "wer_matrix.md").read_text()
    res = Results(tmp_path)
    assert res.value(table="matrix", source="bn", target="bn") == 41.0 and len(res.runs(table="matrix")) == 8


def test_baseline_spread_over_seeds(tmp_path):
    # baselines at seeds 0, 1, 2 are 0, 2 and 4 points worse than the fixture: mean +2, sd 2; transfer cells seed 0
    make_matrix(tmp_path, "baseline_seeds=[1, 2]", seed_offset=2.0)
    write_report(tmp_path)
    rows = {r[0]: r[1:] for r in read_csv(tmp_path / "report" / "baseline_spread.csv")}
    assert rows["target, training data \\ statistic"] == ["seeds", "wer_mean", "wer_sd", "wer_min", "wer_max",
                                                          "cer_mean", "cer_sd"]
    assert rows["bn-small"] == ["3", "82", "2", "80", "84", "41", "1"]
    assert rows["tr-large"] == ["3", "27", "2", "25", "29", "13.5", "1"]
    # the gain of each cell in baseline sds: bn <- bn: (82 - 40) / 2 = 21; tr <- bn: (62 - 45) / 2 = 8.5
    assert read_csv(tmp_path / "report" / "gain_sd.csv")[1:] == [["bn", "21", "16"], ["tr", "8.5", "16"]]
    # tables with a baseline use all its seeds and say so; the matrix cells stay at seed 0
    gain = read_csv(tmp_path / "report" / "gain_matrix.csv")
    assert gain[1][-1] == "82" and "From-scratch baselines: mean of 3 seeds" in (
        tmp_path / "report" / "gain_matrix.md").read_text()
    assert read_csv(tmp_path / "report" / "wer_matrix.csv")[1] == ["bn", "40", "50"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Transfer gain in baseline standard deviations" in report and "also [1, 2]" in report


def test_no_spread_tables_without_baseline_seeds(report):
    assert not (report / "baseline_spread.csv").exists() and not (report / "gain_sd.csv").exists()
    assert "From-scratch baselines" not in (report / "gain_matrix.md").read_text()


def test_table_writers():
    t = Table("t", "T", "r \\ c", ["a", "b"], ["x"], [[1.0, None]], marked={(0, 0)}, note="n.")
    assert t.to_csv() == "r \\ c,a,b\nx,1,\n"
    assert t.to_markdown() == "| r \\ c | a | b |\n|---|---|---|\n| x | **1.0** | — |\n\nn.\n"


def test_report_of_a_folder_without_a_plan(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a matrix folder"):
        write_report(tmp_path)


@pytest.fixture
def figures(monkeypatch):
    """name -> {"colorbar": its colorbar labels, "legend": legend texts, "ticks": x and y tick labels ("xticks",
    "yticks" apart), "cells": the texts drawn in the axes} of every figure saved through figures.save_figure (the
    one figure writer)."""
    import xlingual.figures as report_mod

    seen, real = {}, report_mod.save_figure

    def save(fig, path):
        fig.canvas.draw()  # tick labels are filled in when drawn
        main = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        seen[Path(path).name] = {
            "colorbar": [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"],
            "legend": [t.get_text() for ax in main if ax.get_legend() for t in ax.get_legend().get_texts()],
            "ticks": [t.get_text() for ax in main for t in ax.get_xticklabels() + ax.get_yticklabels()],
            "xticks": [t.get_text() for ax in main for t in ax.get_xticklabels()],
            "yticks": [t.get_text() for ax in main for t in ax.get_yticklabels()],
            "cells": [t.get_text() for ax in main for t in ax.texts]}  # heatmaps: row by row
        real(fig, path)

    monkeypatch.setattr(report_mod, "save_figure", save)
    return seen


def test_every_colorbar_says_what_the_color_is_and_which_way_is_better(tmp_path, figures):
    make_matrix(tmp_path)
    write_report(tmp_path)
    assert figures["wer_matrix.png"]["colorbar"] == ["test WER (%): lower is better"]
    assert figures["cer_matrix.png"]["colorbar"] == ["test CER (%): lower is better"]
    assert figures["gain_matrix.png"]["colorbar"] == ["WER reduction over no pre-training (%): higher is better"]


def test_lid_heatmap_colorbar_and_language_names(tmp_path, figures):
    from xlingual.lid_scores import ScoreMatrix, write_score_matrix

    m = ScoreMatrix(rows=["bn", "tr"], columns=["bn", "tr"], frame=[[0.6, 0.4], [0.3, 0.7]],
                    utterance=[[0.6, 0.4], [0.3, 0.7]], utterances=[2, 2], frames=[10, 10])
    write_score_matrix(m, tmp_path)
    fig = figures["lid_scores.png"]
    assert fig["colorbar"] == ["average LID posterior: higher = more alike"]
    assert set(fig["ticks"]) == {"Bangla (bn)", "Turkish (tr)"}  # as the matrix heatmaps, not bare codes


@pytest.mark.parametrize("rows, columns, expected_rows, expected_columns", [
    # the ranking folder's in-set matrix: targets sorted, LID outputs in the classifier's order
    (["bn", "th", "tr"], ["bn", "tr", "th"], ["bn", "tr", "th"], ["bn", "tr", "th"]),
    # a new language (lo) that is no LID output, and an output (th) with no speech scored
    (["lo", "tr", "bn"], ["bn", "tr", "th"], ["bn", "tr", "lo"], ["bn", "tr", "th"]),
    (["th", "bn"], ["bn", "tr", "th"], ["bn", "th"], ["bn", "th", "tr"]),
])
def test_lid_heatmap_puts_each_language_on_the_diagonal(tmp_path, figures, rows, columns, expected_rows,
                                                        expected_columns):
    """Rows and columns in one order, so the same-language cells run down the diagonal; rows ordered apart from
    the columns made the outlined boxes zig-zag (issue 14). The values move with their labels."""
    from xlingual.lid_scores import ScoreMatrix, write_score_matrix
    from xlingual.report import language_label

    value = {(r, c): round(0.1 * i + 0.01 * j, 2) for i, r in enumerate(rows) for j, c in enumerate(columns)}
    grid = [[value[r, c] for c in columns] for r in rows]
    m = ScoreMatrix(rows=rows, columns=columns, frame=grid, utterance=grid, utterances=[2] * len(rows),
                    frames=[10] * len(rows))
    write_score_matrix(m, tmp_path)
    fig = figures["lid_scores.png"]
    assert fig["xticks"] == [language_label(c) for c in expected_columns]
    assert fig["yticks"] == [language_label(r) for r in expected_rows]
    assert fig["cells"] == [f"{value[r, c]:.2f}" for r in expected_rows for c in expected_columns]
    shared = [r for r in expected_rows if r in columns]
    assert expected_rows[:len(shared)] == expected_columns[:len(shared)]  # the diagonal


def test_learning_curve_legends_name_languages_as_the_tables_do(tmp_path, figures):
    make_matrix(tmp_path)
    write_report(tmp_path)
    assert figures["curves_bn.png"]["legend"] == ["no pre-training", "from Bangla (bn), same language",
                                                  "from Turkish (tr)"]
    assert figures["curves_tr.png"]["legend"] == ["no pre-training", "from Bangla (bn)",
                                                  "from Turkish (tr), same language"]
    assert set(figures["wer_matrix.png"]["ticks"]) == {"Bangla (bn)", "Turkish (tr)"}
