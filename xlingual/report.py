"""Tables and figures of a matrix, regenerated from the runs' results on disk (`write_report(matrix_dir)`).

Every table is written as CSV (plain numbers, language codes) and Markdown (language names, the same-language
cell in bold); report.md gathers them with the figures:

    wer_matrix   test WER, rows "adapt to", columns "pretrain on" (the reference's layout) + heatmap
    cer_matrix   the same for CER + heatmap
    gain_matrix  relative WER reduction of each cell over the target's from-scratch baseline (%) + heatmap
    data_size    no pre-training at the small / large target budget; transfer from a small / large source
                 budget; + adaptation layers; same-language large -> small (one column per source -> target pair)
    variants     test WER of each adaptation variant (head, full, chain-thaw, full + adapters, ...) per cell
    layer_sweep  test WER against k, the number of transferred bottom layers + plot
    baseline_spread  with `baseline_seeds`: the from-scratch baselines over seeds (mean, sd, min, max of WER and
                 CER at both budgets), and each matrix cell's gain over the baseline in baseline standard deviations
    curves_<t>   dev WER against training steps, from scratch vs transferred, one plot per target
    runs         every run: folder, kind, language, budget, seed, test WER/CER, steps, wall time

Values are means over the seeds that finished; a run that has not finished is an empty cell ("—"), so a partial
matrix still reports what exists.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .config import matrix_sources
from .figures import MISSING, curves_plot, heatmap, sweep_plot
from .fileio import read_json, write_json, write_text

PLAN_FILE = "cells.json"  # written by matrix.run_matrix
RESULTS_FILE = "results.json"


@dataclass
class Table:
    """A labelled grid of numbers (None = missing); `marked` cells are bold in Markdown."""

    name: str  # file stem, e.g. "wer_matrix"
    title: str  # Markdown heading
    corner: str  # the top-left header, e.g. "adapt to \\ pretrain on"
    columns: list[str]  # column labels (Markdown)
    rows: list[str]  # row labels (Markdown)
    values: list[list[float | None]]  # rows x columns
    csv_columns: list[str] | None = None  # column labels in the CSV (default: columns)
    csv_rows: list[str] | None = None  # row labels in the CSV (default: rows)
    marked: set[tuple[int, int]] = field(default_factory=set)  # (row, column) shown in bold
    fmt: str = "{:.1f}"  # number format
    column_fmts: list[str] | None = None  # per-column formats, overriding fmt
    note: str = ""  # a line under the Markdown table
    flags: dict[tuple[int, int], str] = field(default_factory=dict)  # Markdown text for flagged cells: replaces
    #   a missing value, or follows a present one (runs that did not learn)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([self.corner] + (self.csv_columns or self.columns))
        for label, vals in zip(self.csv_rows or self.rows, self.values):
            w.writerow([label] + ["" if v is None else f"{v:.6g}" for v in vals])
        return buf.getvalue()

    def to_markdown(self) -> str:
        lines = [f"| {self.corner} | " + " | ".join(self.columns) + " |",
                 "|---" * (len(self.columns) + 1) + "|"]
        for i, (label, vals) in enumerate(zip(self.rows, self.values)):
            cells = []
            for j, v in enumerate(vals):
                s = MISSING if v is None else (self.column_fmts or [self.fmt] * len(vals))[j].format(v)
                s = f"**{s}**" if (i, j) in self.marked and v is not None else s
                flag = self.flags.get((i, j))
                cells.append(s if not flag else (flag if v is None else s + flag))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        note = " ".join(x for x in (self.note, UNLEARNED_NOTE if self.flags else "") if x)
        return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")

    def write(self, out_dir: Path) -> None:
        write_text(out_dir / f"{self.name}.csv", self.to_csv())
        write_text(out_dir / f"{self.name}.md", self.to_markdown())  # the heading is the including report's


def language_label(code: str) -> str:
    """'bn' -> 'Bangla (bn)': the CLDR English name and the code."""
    from .text import language_name

    name = language_name(code)
    return code if name == code else f"{name} ({code})"


def hours_label(hours: float | None) -> str:
    if hours is None:
        return "all data"
    if hours < 1 / 60:
        return f"{hours * 3600:.3g} s"
    return f"{hours * 60:.3g} min" if hours < 1 else f"{hours:g} h"


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _sd(xs: list[float]) -> float | None:
    """Sample standard deviation (n - 1); None below two values."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.stdev(xs) if len(xs) >= 2 else None


class Results:
    """The runs of a matrix folder and their results, looked up by table role (averaged over seeds)."""

    def __init__(self, matrix_dir: str | Path):
        self.dir = Path(matrix_dir)
        plan_path = self.dir / PLAN_FILE
        if not plan_path.is_file():
            raise FileNotFoundError(f"{plan_path} not found: {self.dir} is not a matrix folder (run `xlingual "
                                    f"matrix <config>` first)")
        plan = read_json(plan_path)
        self.config: dict = plan["config"]
        self.cells: list[dict] = plan["cells"]
        self.results: dict[str, dict] = {}  # finished runs of this plan, learned or not
        self.reused: list[str] = []  # runs whose results an earlier code version made (reuse_code)
        for c in self.cells:
            p = self.dir / c["name"] / RESULTS_FILE
            if p.is_file():
                r = read_json(p)
                if r.get("hash") == c["hash"]:  # results of an older config are not this matrix's
                    self.results[c["name"]] = r
                elif plan.get("reuse_code") and r.get("config_hash") == c.get("config_hash"):
                    self.results[c["name"]] = r
                    self.reused.append(c["name"])

    def learned(self, name: str) -> bool:
        return self.results[name].get("learned", True)

    def unlearned(self, **role) -> list[dict]:
        """Finished runs playing `role` that did not learn (runs.learning_verdict): not measurements."""
        return [c for c in self.runs(**role) if c["name"] in self.results and not self.learned(c["name"])]

    def runs(self, **role) -> list[dict]:
        """Cells (with their results, if any) playing a role whose fields include `role`, all seeds."""
        return [c for c in self.cells for r in c["roles"] if all(r.get(k) == v for k, v in role.items())]

    def value(self, metric: str = "wer", **role) -> float | None:
        """Mean test `metric` over the finished seeds of the runs playing `role`; None if none finished."""
        return _mean(self.values(metric, **role))

    def values(self, metric: str = "wer", **role) -> list[float]:
        """Test `metric` of each finished run playing `role` that learned (one per seed), in seed order."""
        return [self.results[c["name"]]["test"][metric] for c in sorted(self.runs(**role), key=lambda c: c["seed"])
                if c["name"] in self.results and self.learned(c["name"])]

    def curve(self, **role) -> list[tuple[int, float]]:
        """(step, dev WER) per epoch of the lowest-seed run playing `role` that has a training log."""
        for c in sorted(self.runs(**role), key=lambda c: c["seed"]):
            log = self.dir / c["name"] / "train_log.jsonl"
            if log.is_file():
                recs = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
                return [(r["step"], r["dev_wer"]) for r in recs if "dev_wer" in r]  # epochs with a dev pass
        return []


# ----------------------------------------------------------------------------------------------------------------
# Tables


def _matrix_table(res: Results, name: str, title: str, metric: str) -> Table:
    sources, targets = matrix_sources(res.config), res.config["targets"]
    values, flags = _grid(res, metric, [[{"table": "matrix", "source": s, "target": t} for s in sources]
                                        for t in targets])
    marked = {(i, j) for i, t in enumerate(targets) for j, s in enumerate(sources) if s == t}
    c = res.config
    return Table(name, title, "adapt to \\ pretrain on", [language_label(s) for s in sources],
                 [language_label(t) for t in targets], values, csv_columns=list(sources), csv_rows=list(targets),
                 marked=marked, flags=flags,
                 note=f"Test {metric.upper()} (%) after pre-training on {hours_label(c['source_hours'])} "
                 f"and adapting on {hours_label(c['target_hours'])} ({c['adapt']['mode']}); bold: the same-language "
                 f"cell ({hours_label(c['source_hours'])} -> {hours_label(c['target_hours'])} of the target itself)."
                 + _seeds_note(c))


def _grid(res: Results, metric: str, roles: list[list[dict]]) -> tuple[list[list], dict[tuple[int, int], str]]:
    """(values, flags) of a table whose cell (i, j) shows the runs playing roles[i][j]: the mean over the seeds
    that learned, and Markdown flags for runs that did not: "✗ <value>" where no seed learned (the value is then
    missing, empty in the CSV), "(n ✗)" beside the mean where some seeds did not."""
    values = [[res.value(metric, **role) for role in row] for row in roles]
    flags = {}
    for i, row in enumerate(roles):
        for j, role in enumerate(row):
            bad = res.unlearned(**role)
            if bad:
                flags[(i, j)] = (f"✗ {_mean([res.results[c['name']]['test'][metric] for c in bad]):.1f}"
                                 if values[i][j] is None else f" ({len(bad)} ✗)")
    return values, flags


UNLEARNED_NOTE = ("✗: the run did not learn (nearly all-blank output on dev: runs.learning_verdict); not a "
                  "measurement, so it is left out of every mean, empty in the CSV and out of the ranking evaluation.")


def _seeds_note(config: dict, baselines: bool = False) -> str:
    """How many seeds a table's values average; `baselines`: the table shows from-scratch baselines too."""
    n = len(config["seeds"])
    note = f" Mean of {n} seeds." if n > 1 else ""
    nb = len(dict.fromkeys([*config["seeds"], *config.get("baseline_seeds", [])]))
    if baselines and nb > n:
        note += f" From-scratch baselines: mean of {nb} seeds (baseline_spread.md)."
    return note


def gain_table(res: Results) -> Table:
    """Relative WER reduction (%) over the target's from-scratch baseline at the same (small) budget."""
    sources, targets = matrix_sources(res.config), res.config["targets"]
    rows = []
    for t in targets:
        base = res.value("wer", table="baseline", target=t, budget="small")
        row = []
        for s in sources:
            w = res.value("wer", table="matrix", source=s, target=t)
            row.append(None if w is None or not base else 100.0 * (base - w) / base)
        rows.append(row + [base])
    marked = {(i, j) for i, t in enumerate(targets) for j, s in enumerate(sources) if s == t}
    c = res.config
    return Table("gain_matrix", "Relative WER reduction over no pre-training (%)", "adapt to \\ pretrain on",
                 [language_label(s) for s in sources] + ["no pre-training WER"], [language_label(t) for t in targets],
                 rows, csv_columns=list(sources) + ["scratch_wer"], csv_rows=list(targets), marked=marked,
                 fmt="{:+.1f}", column_fmts=["{:+.1f}"] * len(sources) + ["{:.1f}"],
                 note=f"100 x (scratch - transfer) / scratch; positive = transfer helps. The last "
                 f"column is the from-scratch test WER on {hours_label(c['target_hours'])} (not a gain)."
                 + _seeds_note(c, baselines=True))


def pool_table(res: Results, metric: str = "cer") -> Table | None:
    """Each pool against the best single source of every target (its own language excluded), test `metric`."""
    pools = [c for c in matrix_sources(res.config) if c not in res.config["sources"]]
    if not pools:
        return None
    rows, values = [], []
    for t in res.config["targets"]:
        single = {s: res.value(metric, table="matrix", source=s, target=t) for s in res.config["sources"] if s != t}
        single = {s: v for s, v in single.items() if v is not None}
        best = min(single, key=single.get) if single else None
        row = [res.value(metric, table="matrix", source=p, target=t) for p in pools]
        values.append(row + [single[best] if best else None])
        rows.append(language_label(t) + (f" (best single: {best})" if best else ""))
    return Table("pools", f"Pooled multilingual sources vs the best single source: test {metric.upper()} (%)",
                 "adapt to \\ pre-trained on", pools + ["best single source"], rows, values,
                 csv_rows=list(res.config["targets"]),
                 note="A pool is pre-trained on its languages together, the target's own language left out; "
                 "\"<pool>\" has the audio of one single source, \"<pool>-sum\" that of every language in it. The best "
                 "single source is chosen after the fact from the other columns (an optimistic comparison for it)."
                 + _seeds_note(res.config))


SIZE_ROWS = ("scratch_small", "scratch_large", "transfer_small", "transfer_large", "adaptation", "same_language")


def size_table(res: Results) -> Table | None:
    """The reference's data-size table: one column per (source, target) pair of `size_pairs`."""
    c = res.config
    pairs = [tuple(p) for p in c["size_pairs"]]
    if not pairs:
        return None
    small, large = hours_label(c["target_hours"]), hours_label(c["source_hours"])
    small_src = hours_label(c["small_source_hours"] if c["small_source_hours"] is not None else c["target_hours"])
    labels = [f"no pre-training, {small} target", f"no pre-training, {large} target",
              f"transfer {small_src} source -> {small} target", f"transfer {large} source -> {small} target",
              f"+ adaptation ({', '.join(c['size_adaptation'].get('adaptation', [])) or c['size_adaptation']})",
              f"transfer {large} same language -> {small} target"]
    values, flags = _grid(res, "wer", [[{"table": "baseline", "target": t, "budget": row.split("_")[1]}
                                        if row.startswith("scratch") else
                                        {"table": "size", "source": s, "target": t, "row": row}
                                        for s, t in pairs] for row in SIZE_ROWS])
    return Table("data_size", "Data size: test WER (%)", "condition \\ source -> target",
                 [f"{language_label(s)} -> {language_label(t)}" for s, t in pairs], labels, values,
                 csv_columns=[f"{s}->{t}" for s, t in pairs], csv_rows=list(SIZE_ROWS), flags=flags,
                 note="The reference's table (Babel, Assamese -> Bengali): 71.8, 64.5, 66.0, 64.6, 63.7, 61.6."
                 + _seeds_note(c, baselines=True))


def variants_table(res: Results) -> Table | None:
    """Test WER of each adaptation variant on the same cells, with the mean over cells."""
    c = res.config
    names = list(c["variants"])
    if not names:
        return None
    pairs = [(r["source"], r["target"]) for cell in res.cells for r in cell["roles"] if r["table"] == "variants"]
    pairs = list(dict.fromkeys(pairs))
    values, flags = _grid(res, "wer", [[{"table": "variants", "variant": v, "source": s, "target": t}
                                        for v in names] for s, t in pairs])
    means = [_mean([row[j] for row in values]) if all(row[j] is not None for row in values) else None
             for j in range(len(names))]
    return Table("variants", "Adaptation variants: test WER (%)", "source -> target \\ variant", names,
                 [f"{language_label(s)} -> {language_label(t)}" for s, t in pairs] + ["mean"], values + [means],
                 csv_rows=[f"{s}->{t}" for s, t in pairs] + ["mean"], flags=flags,
                 note="Each variant is a delta over the matrix's adapt section: "
                 + "; ".join(f"{n}: {json.dumps(c['variants'][n])}" for n in names) + "." + _seeds_note(c))


def sweep_table(res: Results) -> Table | None:
    """Test WER against k, the number of transferred bottom conformer layers."""
    c = res.config
    ks = list(c["layer_sweep"])
    if not ks:
        return None
    pairs = list(dict.fromkeys((r["source"], r["target"]) for cell in res.cells for r in cell["roles"]
                               if r["table"] == "sweep"))
    values, flags = _grid(res, "wer", [[{"table": "sweep", "k": k, "source": s, "target": t} for k in ks]
                                       + [{"table": "baseline", "target": t, "budget": "small"}] for s, t in pairs])
    return Table("layer_sweep", "Layer transferability: test WER (%) against transferred layers k",
                 "source -> target \\ k", [f"k={k}" for k in ks] + ["no pre-training"],
                 [f"{language_label(s)} -> {language_label(t)}" for s, t in pairs], values,
                 csv_columns=[str(k) for k in ks] + ["scratch"], csv_rows=[f"{s}->{t}" for s, t in pairs],
                 flags=flags,
                 note="k = 0 keeps only the convolutional frontend; the layers above k are re-initialized and train "
                 "with the new head." + _seeds_note(c, baselines=True))


SPREAD_COLUMNS = ("seeds", "wer_mean", "wer_sd", "wer_min", "wer_max", "cer_mean", "cer_sd")


def spread_tables(res: Results) -> list[Table]:
    """With `baseline_seeds`: the from-scratch baselines over seeds, and each cell's gain in baseline SDs.

    The second table puts every matrix cell's gain (scratch mean - transfer WER) in units of the baseline's
    standard deviation, so a reader sees which differences stand out from run-to-run noise.
    """
    c = res.config
    if not c.get("baseline_seeds"):
        return []
    targets, sources = c["targets"], matrix_sources(c)
    budgets = [("small", c["target_hours"]), ("large", c["source_hours"])]
    budgets = [(b, h) for b, h in budgets if b in c.get("spread_budgets", ["small", "large"])]
    rows, labels, csv_labels = [], [], []
    for t in targets:
        for budget, hours in budgets:
            wer, cer = (res.values(m, table="baseline", target=t, budget=budget) for m in ("wer", "cer"))
            rows.append([float(len(wer)) if wer else None, _mean(wer), _sd(wer), min(wer, default=None),
                         max(wer, default=None), _mean(cer), _sd(cer)])
            labels.append(f"{language_label(t)}, {hours_label(hours)}")
            csv_labels.append(f"{t}-{budget}")
    spread = Table("baseline_spread", "From-scratch baselines over seeds: test WER / CER (%)",
                   "target, training data \\ statistic",
                   ["seeds", "WER mean", "WER sd", "WER min", "WER max", "CER mean", "CER sd"], labels, rows,
                   csv_columns=list(SPREAD_COLUMNS), csv_rows=csv_labels,
                   column_fmts=["{:.0f}"] + ["{:.1f}"] * 6,
                   note="sd: sample standard deviation over the seeds that finished (seeds "
                   f"{list(dict.fromkeys([*c['seeds'], *c['baseline_seeds']]))}: initialization, batch order and "
                   "SpecAugment change; the data do not).")
    z = []
    for t in targets:
        base = res.values("wer", table="baseline", target=t, budget="small")
        m, sd = _mean(base), _sd(base)
        row = []
        for s in sources:
            w = res.value("wer", table="matrix", source=s, target=t)
            row.append(None if w is None or m is None or not sd else (m - w) / sd)
        z.append(row)
    marked = {(i, j) for i, t in enumerate(targets) for j, s in enumerate(sources) if s == t}
    gain = Table("gain_sd", "Transfer gain in baseline standard deviations", "adapt to \\ pretrain on",
                 [language_label(s) for s in sources], [language_label(t) for t in targets], z,
                 csv_columns=list(sources), csv_rows=list(targets), marked=marked, fmt="{:+.1f}",
                 note=f"(from-scratch mean - transfer WER) / from-scratch sd, both on {hours_label(c['target_hours'])} "
                 "of the target; positive = transfer helps. If a transfer cell varies as much as its baseline, a "
                 "difference of two runs has sd x 1.41, so |value| > 2.8 is beyond run-to-run noise (about 95%)."
                 + _seeds_note(c))
    return [spread, gain]


def runs_table(res: Results) -> str:
    """CSV of every run and its results (one line per run and seed)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "kind", "language", "hours", "seed", "source", "label", "test_wer", "test_cer",
                "learned", "dev_cer", "dev_len_ratio", "epochs", "best_epoch", "steps", "wall_seconds",
                "code_version"])
    for c in res.cells:
        r = res.results.get(c["name"], {})
        t, tr, lrn = r.get("test", {}), r.get("training", {}), r.get("learning", {})
        w.writerow([c["name"], c["kind"], c["language"], c["hours"], c["seed"], c["source"] or "", c["label"],
                    t.get("wer", ""), t.get("cer", ""), r.get("learned", ""), lrn.get("dev_cer", ""),
                    lrn.get("dev_len_ratio", ""), tr.get("epochs", ""), tr.get("best_epoch", ""),
                    tr.get("steps", ""), r.get("wall_seconds", ""), r.get("code_version", "")])
    return buf.getvalue()


def learning_curves(res: Results, out_dir: Path) -> list[Path]:
    """One PNG per target: dev WER against steps, from scratch vs transferred from each source."""
    paths = []
    rows = []
    for t in res.config["targets"]:
        # (CSV series name with codes, legend label with language_label as the tables and titles, points)
        series = [("no pre-training", "no pre-training", res.curve(table="baseline", target=t, budget="small"))]
        for s in matrix_sources(res.config):
            same = s == t
            series.append((f"from {s}" + (" (same language)" if same else ""),
                           f"from {language_label(s)}" + (", same language" if same else ""),
                           res.curve(table="matrix", source=s, target=t)))
        series = [x for x in series if x[2]]
        rows += [(t, name, step, wer) for name, _, pts in series for step, wer in pts]
        if not series:
            continue
        path = out_dir / f"curves_{t}.png"
        curves_plot([(label, pts, name == "no pre-training") for name, label, pts in series], path,
                    f"{language_label(t)}: {hours_label(res.config['target_hours'])} of training data")
        paths.append(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["target", "series", "step", "dev_wer"])
    w.writerows(rows)
    write_text(out_dir / "learning_curves.csv", buf.getvalue())
    return paths


def write_report(matrix_dir: str | Path) -> Path:
    """(Re)write every table and figure of a matrix from its runs' results; returns <matrix_dir>/report/report.md."""
    res = Results(matrix_dir)
    out = res.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    wer = _matrix_table(res, "wer_matrix", "WER matrix: test WER (%)", "wer")
    cer = _matrix_table(res, "cer_matrix", "CER matrix: test CER (%)", "cer")
    gain = gain_table(res)
    tables = [wer, cer, gain, pool_table(res), size_table(res), variants_table(res), sweep_table(res),
              *spread_tables(res)]
    tables = [t for t in tables if t is not None]
    for t in tables:
        t.write(out)
    heatmap(wer, out / "wer_matrix.png", "test WER (%): lower is better")
    heatmap(cer, out / "cer_matrix.png", "test CER (%): lower is better")
    heatmap(Table(gain.name, gain.title, gain.corner, gain.columns[:-1], gain.rows,
                  [row[:-1] for row in gain.values], marked=gain.marked, fmt=gain.fmt), out / "gain_matrix.png",
            "WER reduction over no pre-training (%): higher is better", cmap="RdBu", diverging=True)
    figures = {"wer_matrix": ["wer_matrix.png"], "cer_matrix": ["cer_matrix.png"], "gain_matrix": ["gain_matrix.png"]}
    sweep = next((t for t in tables if t.name == "layer_sweep"), None)
    if sweep is not None:
        sweep_plot(sweep, out / "layer_sweep.png")
        figures["layer_sweep"] = ["layer_sweep.png"]
    curves = learning_curves(res, out)
    write_text(out / "runs.csv", runs_table(res))

    c = res.config
    done, total = len(res.results), len(res.cells)
    unlearned = [n for n in res.results if not res.learned(n)]
    write_json(out / "unlearned.json", [{"name": n, **{k: res.results[n].get(k) for k in
                                                       ("kind", "language", "hours", "seed", "source_run", "label",
                                                        "test", "learning")}} for n in unlearned])
    parts = [f"# Transfer matrix: {', '.join(c['sources'])} -> {', '.join(c['targets'])}\n",
             f"{done} of {total} runs finished, {len(unlearned)} of them did not learn (flagged ✗, listed in "
             f"unlearned.json, left out of every table's means). Pre-training budget {hours_label(c['source_hours'])}, target budget "
             f"{hours_label(c['target_hours'])}, units {c['units']['kind']}, model preset {c['model']['preset']}, "
             f"seeds {c['seeds']}"
             + (f" (from-scratch baselines also {c['baseline_seeds']})" if c.get("baseline_seeds") else "")
             + ". Every run: runs.csv; the configuration: ../matrix.yaml.\n"]
    if res.reused:
        parts.append(f"**{len(res.reused)} runs were made by an earlier code version** and reused on request "
                     f"(--reuse-stale-code): {', '.join(res.reused[:10])}{' ...' if len(res.reused) > 10 else ''}\n")
    for t in tables:
        parts.append(f"## {t.title}\n\n{t.to_markdown()}")
        parts += [f"![{t.name}]({f})\n" for f in figures.get(t.name, [])]
    if curves:
        parts.append("## Learning curves (dev WER against training steps)\n")
        parts += [f"![{p.stem}]({p.name})\n" for p in curves]
    path = out / "report.md"
    write_text(path, "\n".join(parts))
    return path
