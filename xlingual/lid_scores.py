"""LID score matrices: average LID posteriors of each input language's speech (rows) over the LID's languages
(columns), as the reference tabulates them; CSV, Markdown, JSON and a heatmap.

    scores = score_matrix(ckpt, {"bn": bn_test, "lo": lo_test})   # rows: input, columns: LID output
    write_score_matrix(scores, "exp/lid/scores")                    # CSV, Markdown, JSON, heatmap PNG
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .corpus import Utterance
from .fileio import read_json, write_json, write_text
from .lid import LIDOutputs, average_scores, load_lid, posteriors_for

LEVELS = ("frame", "utterance", "pooled")  # frame: mean over all frames (the reference); utterance: mean of
#   utterance means of the frame posteriors; pooled: mean of the utterance head's posteriors


@dataclass
class ScoreMatrix:
    """Average LID posteriors: rows are the input languages (whose speech was scored), columns the LID outputs."""

    rows: list[str]  # input languages, in the order given
    columns: list[str]  # LID output languages (the classifier's classes)
    frame: list[list[float]]  # mean frame posterior, rows x columns; each row sums to 1 (the reference's score)
    utterance: list[list[float]]  # mean of per-utterance mean frame posteriors, rows x columns
    pooled: list[list[float]] = field(default_factory=list)  # mean utterance-head posterior, rows x columns
    utterances: list[int] = field(default_factory=list)  # utterances scored per row
    frames: list[int] = field(default_factory=list)  # (subsampled) frames scored per row

    def table(self, level: str = "frame") -> dict[str, dict[str, float]]:
        """Nested dict: input language -> LID output language -> score."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        m = getattr(self, level)
        return {r: dict(zip(self.columns, m[i])) for i, r in enumerate(self.rows)}

    def to_dict(self) -> dict:
        return {"rows": self.rows, "columns": self.columns, "frame": self.frame, "utterance": self.utterance,
                "pooled": self.pooled, "utterances": self.utterances, "frames": self.frames}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreMatrix":
        return cls(**{k: d[k] for k in ("rows", "columns", "frame", "utterance", "utterances", "frames")},
                   pooled=d.get("pooled") or [])


def matrix_from_outputs(out: LIDOutputs, inputs: dict[str, list[str]]) -> ScoreMatrix:
    """The score matrix of LID outputs grouped by input language (language -> utterance ids)."""
    rows = list(inputs)
    avgs = {r: average_scores(out, inputs[r]) for r in rows}
    return ScoreMatrix(rows=rows, columns=list(out.languages),
                       **{level: [[float(x) for x in avgs[r][level]] for r in rows] for level in LEVELS},
                       utterances=[len(inputs[r]) for r in rows],
                       frames=[int(sum(out.frame[i].shape[0] for i in inputs[r])) for r in rows])


def score_matrix(lid_ckpt: str | Path, inputs: dict[str, list[Utterance]], cache_dir: str | Path | None = None,
                 device: torch.device | str | None = None, progress: bool = False) -> ScoreMatrix:
    """The LID score matrix of `inputs` (input language -> its utterances) under the LID model at lid_ckpt.

    Features are cached in cache_dir (None: a temporary folder). Every level is computed; `.table(level)` gives
    the nested dict.
    """
    if not inputs:
        raise ValueError("no input languages to score")
    for lang, utts in inputs.items():
        if not utts:
            raise ValueError(f"input language {lang!r} has no utterances")
    model, meta = load_lid(lid_ckpt)
    out = posteriors_for(model, meta, [u for utts in inputs.values() for u in utts], cache_dir, device, progress)
    return matrix_from_outputs(out, {lang: [u.id for u in utts] for lang, utts in inputs.items()})


def matrix_markdown(scores: ScoreMatrix, level: str = "frame", digits: int = 2) -> str:
    """Markdown table in the reference's layout: | input \\ LID | <sources> |."""
    table = scores.table(level)
    lines = ["| input \\ LID | " + " | ".join(scores.columns) + " |",
             "|---|" + "---|" * len(scores.columns)]
    for r in scores.rows:
        lines.append(f"| {r} | " + " | ".join(f"{table[r][c]:.{digits}f}" for c in scores.columns) + " |")
    return "\n".join(lines) + "\n"


def matrix_csv(scores: ScoreMatrix, level: str = "frame") -> str:
    table = scores.table(level)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["input \\ LID", *scores.columns])
    for r in scores.rows:
        w.writerow([r, *(f"{table[r][c]:.6f}" for c in scores.columns)])
    return buf.getvalue()


POSTERIOR_COLORBAR = "average LID posterior: higher = more alike"  # what the color of an LID score heatmap is


def plot_heatmap(matrix: list[list[float]], rows: list[str], columns: list[str], path: str | Path, title: str,
                 xlabel: str, ylabel: str, colorbar: str = POSTERIOR_COLORBAR, fmt: str = "{:.2f}",
                 cmap: str = "viridis") -> None:
    """A labelled heatmap PNG with the value written in every cell; a language's own cell is outlined.

    rows and columns are language codes, shown as report.language_label names them (as the matrix heatmaps do).
    colorbar: what the color is and which way it points. Drawn by figures.heatmap, the one heatmap writer of the
    toolkit (non-finite values show as missing).
    """
    from .figures import heatmap
    from .report import Table, language_label

    values = [[v if v is not None and math.isfinite(v) else None for v in row] for row in matrix]
    marked = {(i, j) for i, r in enumerate(rows) for j, c in enumerate(columns) if r == c}
    heatmap(Table(Path(path).stem, title, f"{ylabel} \\ {xlabel}", [language_label(c) for c in columns],
                  [language_label(r) for r in rows], values, marked=marked, fmt=fmt), Path(path), colorbar,
            cmap=cmap)


def write_score_matrix(scores: ScoreMatrix, out_dir: str | Path, name: str = "lid_scores") -> dict[str, Path]:
    """<name>.json (both levels, counts), <name>_{frame,utterance}.csv, <name>.md, <name>.png (frame level)."""
    out = Path(out_dir)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    write_json(paths["json"], scores.to_dict())
    for level in [lv for lv in LEVELS if getattr(scores, lv)]:
        paths[f"csv_{level}"] = out / f"{name}_{level}.csv"
        write_text(paths[f"csv_{level}"], matrix_csv(scores, level))
    md = ["LID average posteriors (rows: input frames of a language, columns: LID output for each source).", "",
          "Frame-level mean (as the reference):", "", matrix_markdown(scores, "frame"),
          "Utterance-level mean:", "", matrix_markdown(scores, "utterance"),
          *(["Utterance head (mean pooled posterior):", "", matrix_markdown(scores, "pooled")] if scores.pooled else []),
          "Scored: " + ", ".join(f"{r} {n} utts" for r, n in zip(scores.rows, scores.utterances)), ""]
    write_text(paths["md"], "\n".join(md))
    rows, columns = diagonal_order(scores.rows, scores.columns)
    table = scores.table("frame")
    plot_heatmap([[table[r][c] for c in columns] for r in rows], rows, columns, paths["png"],
                 "LID average posteriors (frame mean)", "LID output (source language)", "input language")
    return paths


def diagonal_order(rows: list[str], columns: list[str]) -> tuple[list[str], list[str]]:
    """Rows and columns of a language x language heatmap in one order, so that each language's own cell lies on
    the diagonal: the languages in both first (in the columns' order), then the rows that are no column (a new
    language) and the columns that are no row (an output without speech scored), each in its own order."""
    shared = [c for c in columns if c in rows]
    return (shared + [r for r in rows if r not in shared], shared + [c for c in columns if c not in shared])


def read_score_matrix(path: str | Path) -> ScoreMatrix:
    return ScoreMatrix.from_dict(read_json(path))

