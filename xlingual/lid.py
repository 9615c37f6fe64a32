"""Language identification: a classifier over the source languages, its frame posteriors, and LID score matrices.

The reference method ranks pre-training sources by how much a target language "sounds like" each of them: an LID
model is trained on the source languages, run over the target's speech, and each source's posterior averaged over
the target's frames. The same AcousticModel as for ASR is used, with one output class per language and a label on
every frame (train.compute_loss does per-frame cross-entropy for an Example whose target is an int); the
utterance-level decision pools the frame posteriors (their mean) and takes the argmax.

    ckpt = train_lid(load_config(LIDConfig, "recipes/synthetic/lid.yaml"))
    scores = score_matrix(ckpt, {"bn": bn_test, "lo": lo_test})   # rows: input, columns: LID output
    write_score_matrix(scores, "exp/lid/scores")                    # CSV, Markdown, JSON, heatmap PNG
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .asr import budget, feature_cache, load_language, load_model, run_key
from .config import FeatureConfig, LIDConfig, from_dict, to_dict
from .corpus import Utterance, total_hours
from .features import FeatureStore, cmvn_stats, compute_features
from .fileio import locked, read_json, write_json, write_text
from .model import AcousticModel, dims_from_config, dims_to_dict
from .train import FRAMES_PER_SECOND, Example, fit, pick_device

LEVELS = ("frame", "utterance")  # frame: mean over all frames (the reference); utterance: mean of utterance means
SELECT = {"dev_acc": "max", "dev_loss": "min"}  # LIDConfig.select -> direction
MAX_OVERSAMPLE = 8  # a language is repeated at most this many times per epoch (tiny languages would dominate noise)
INFER_BATCH_SECONDS = 300.0  # audio seconds per inference batch


# --------------------------------------------------------------------------------------------------------------
# Training


def _check_languages(languages: list[str]) -> None:
    if len(languages) < 2:
        raise ValueError(f"an LID model needs at least 2 languages, got {languages}")
    dup = sorted({x for x in languages if languages.count(x) > 1})
    if dup:
        raise ValueError(f"languages listed twice: {dup}")


def repeats_for_balance(hours: dict[str, float], oversample: bool = True) -> dict[str, int]:
    """How many copies of each language's training set go into an epoch, so each weighs about equally.

    A language with half the audio of the largest is repeated twice (rounded, at most MAX_OVERSAMPLE times).
    With equal budgets (train_hours set and every language large enough) every count is 1.
    """
    if not oversample:
        return {lang: 1 for lang in hours}
    top = max(hours.values())
    return {lang: max(1, min(MAX_OVERSAMPLE, round(top / h))) if h > 0 else 1 for lang, h in hours.items()}


def lid_meta(model: AcousticModel, cfg: LIDConfig, **extra) -> dict:
    """Everything needed to rebuild and use an LID model, as plain data (loadable with weights_only=True)."""
    return {"toolkit": "xlingual", "version": __version__, "task": "lid", "dims": dims_to_dict(model.dims),
            "languages": list(cfg.languages), "features": to_dict(cfg.features), "config": to_dict(cfg), **extra}


@locked("cfg.out_dir")  # one run per folder
def train_lid(cfg: LIDConfig) -> Path:
    """Train an LID classifier over cfg.languages; returns the path of best.pt.

    Each language contributes its train split within cfg.train_hours (the same nested subset ASR budgets use);
    with cfg.oversample, smaller languages are repeated so that each weighs about equally. Selection by
    cfg.select on the dev splits. Resumable; a finished run (done.json with the same configuration) is reused.
    Outputs in cfg.out_dir: best.pt, last.pt, train_log.jsonl, done.json, dev_report.json (accuracy, per-language
    accuracy, confusion matrix, dev LID score matrix), dev_confusion.csv (rows: true, columns: predicted).
    """
    languages = list(cfg.languages)
    _check_languages(languages)
    if cfg.select not in SELECT:
        raise ValueError(f"LIDConfig.select must be one of {sorted(SELECT)}, not {cfg.select!r}")
    out = Path(cfg.out_dir)
    progress = cfg.train.progress
    train, dev, label = {}, {}, {}
    for i, lang in enumerate(languages):
        data = load_language(cfg.corpus, lang, progress)
        train[lang] = budget(data["train"], cfg.train_hours, cfg.corpus.seed)
        dev[lang] = budget(data["dev"], cfg.dev_hours, cfg.corpus.seed)
        if not train[lang] or not dev[lang]:
            raise ValueError(f"LID language {lang!r}: empty train or dev split under {cfg.corpus.dir}")
        for u in train[lang] + dev[lang]:
            if label.setdefault(u.id, i) != i:
                raise ValueError(f"utterance id {u.id!r} occurs in two languages ({languages[label[u.id]]}, {lang}); "
                                 f"LID needs ids unique across languages (prefix them with the language code)")
    all_train = [u for lang in languages for u in train[lang]]
    all_dev = [u for lang in languages for u in dev[lang]]
    cache = feature_cache(cfg.corpus)
    store = compute_features(all_train, cache, cfg.features, progress=progress, desc="LID train feats")
    dev_store = compute_features(all_dev, cache, cfg.features, progress=progress, desc="LID dev feats")

    repeats = repeats_for_balance({lang: total_hours(train[lang]) for lang in languages}, cfg.oversample)
    examples = [Example(u.id, store.num_frames(u.id), label[u.id])
                for lang in languages for _ in range(repeats[lang]) for u in train[lang]]
    torch.manual_seed(cfg.train.seed)
    model = AcousticModel(dims_from_config(cfg.model, cfg.features.n_mels, len(languages)))
    model.set_cmvn(*cmvn_stats(store, [u.id for u in all_train]))
    hours = {lang: round(total_hours(train[lang]), 4) for lang in languages}
    meta = lid_meta(model, cfg, train_hours_used=hours, repeats=repeats)
    key = run_key("lid", languages, [u.id for u in all_train], [u.id for u in all_dev], repeats, cfg.select,
                  to_dict(cfg.features), to_dict(cfg.model), to_dict(cfg.train))
    fit(model, examples, store, cfg.train, out, evaluate=make_lid_evaluator(dev_store, all_dev, label),
        select=(cfg.select, SELECT[cfg.select]), specaug=cfg.features, meta=meta, run_key=key)
    best = out / "best.pt"
    model, meta = load_lid(best)
    write_dev_report(model, meta, dev_store, {lang: dev[lang] for lang in languages}, out)
    return best


def make_lid_evaluator(store: FeatureStore, dev: list[Utterance], label: dict[str, int]):
    """model -> {"dev_loss", "dev_acc", "dev_frame_acc"} on `dev` (labels: utterance id -> language index).

    dev_loss is the training loss (mean frame cross-entropy per utterance, averaged over utterances); dev_acc the
    utterance-level decision (argmax of the mean frame posterior); dev_frame_acc the share of frames right.
    """
    ids = [u.id for u in dev]

    def evaluate(model: torch.nn.Module) -> dict:
        device = next(model.parameters()).device
        loss, correct, frames_right, frames = 0.0, 0, 0, 0
        for utt_id, logp in _log_posteriors(model, store, ids, device):
            y = label[utt_id]
            loss += float(-logp[:, y].mean())
            correct += int(int(logp.exp().mean(0).argmax()) == y)
            frames_right += int((logp.argmax(1) == y).sum())
            frames += logp.shape[0]
        n = max(len(ids), 1)
        return {"dev_loss": loss / n, "dev_acc": correct / n, "dev_frame_acc": frames_right / max(frames, 1)}

    return evaluate


def write_dev_report(model: AcousticModel, meta: dict, store: FeatureStore, dev: dict[str, list[Utterance]],
                     out_dir: str | Path) -> dict:
    """dev_report.json + dev_confusion.csv (rows: true language, columns: predicted) + the dev score matrix."""
    languages = meta["languages"]
    ids = {lang: [u.id for u in utts] for lang, utts in dev.items()}
    confusion = {t: {p: 0 for p in languages} for t in languages}
    post = {}
    for lang in languages:
        post[lang] = frame_posteriors(model, store, ids[lang])
        for p in post[lang].values():
            confusion[lang][languages[int(p.mean(0).argmax())]] += 1
    per_lang = {t: confusion[t][t] / max(sum(confusion[t].values()), 1) for t in languages}
    n = sum(sum(r.values()) for r in confusion.values())
    scores = _matrix_from_posteriors(languages, post)
    report = {"languages": languages, "n_utterances": n,
              "accuracy": sum(confusion[t][t] for t in languages) / max(n, 1),
              "per_language_accuracy": per_lang, "confusion": confusion,
              "dev_scores": scores.to_dict()}
    out_dir = Path(out_dir)
    write_json(out_dir / "dev_report.json", report)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true \\ predicted", *languages])
    for t in languages:
        w.writerow([t, *(confusion[t][p] for p in languages)])
    write_text(out_dir / "dev_confusion.csv", buf.getvalue())
    return report


# --------------------------------------------------------------------------------------------------------------
# Loading and inference


def load_lid(path: str | Path) -> tuple[AcousticModel, dict]:
    """Rebuild an LID model from a checkpoint (weights_only); meta["languages"] names its output classes."""
    model, _, meta = load_model(path)
    if meta.get("task") != "lid" or "languages" not in meta:
        raise ValueError(f"{path} is not an LID checkpoint (task={meta.get('task')!r}); train one with "
                         f"`xlingual lid train`")
    if len(meta["languages"]) != model.dims.vocab_size:
        raise ValueError(f"{path}: {len(meta['languages'])} languages recorded but {model.dims.vocab_size} outputs")
    model.eval()
    return model, meta


def _batches(store: FeatureStore, ids: list[str], max_seconds: float) -> list[list[str]]:
    """Ids sorted by length, grouped so that a padded batch holds at most max_seconds of frames."""
    max_frames = int(max_seconds * FRAMES_PER_SECOND)
    out, cur, longest = [], [], 0
    for i in sorted(ids, key=lambda k: (store.num_frames(k), k)):
        n = store.num_frames(i)
        if cur and max(longest, n) * (len(cur) + 1) > max_frames:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    return out


def _log_posteriors(model: torch.nn.Module, store: FeatureStore, ids: list[str], device: torch.device | None = None,
                    max_batch_seconds: float = INFER_BATCH_SECONDS):
    """Yield (id, frame log-posteriors (T', L)) on the CPU, in length-sorted batches (order: shortest first)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in _batches(store, ids, max_batch_seconds):
                feats = [store[i] for i in batch]
                lens = torch.tensor([f.shape[0] for f in feats])
                padded = torch.zeros(len(feats), int(lens.max()), store.n_mels)
                for j, f in enumerate(feats):
                    padded[j, : f.shape[0]] = f
                logits, out_lens = model(padded.to(device), lens.to(device))
                logp = logits.float().log_softmax(-1).cpu()
                for j, utt_id in enumerate(batch):
                    yield utt_id, logp[j, : int(out_lens[j])]
    finally:
        model.train(was_training)


def frame_posteriors(model: torch.nn.Module, store: FeatureStore, ids: list[str],
                     device: torch.device | None = None,
                     max_batch_seconds: float = INFER_BATCH_SECONDS) -> dict[str, torch.Tensor]:
    """Per-utterance frame posteriors: id -> (T', L) tensor (T' = subsampled frames), each row summing to 1.

    Returned in the order of `ids`.
    """
    got = {i: lp.exp() for i, lp in _log_posteriors(model, store, ids, device, max_batch_seconds)}
    return {i: got[i] for i in ids}


def utterance_posteriors(posteriors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """id -> (L,) mean frame posterior of the utterance (the pooled utterance-level decision is its argmax)."""
    return {i: p.mean(0) for i, p in posteriors.items()}


def average_posteriors(posteriors: dict[str, torch.Tensor] | list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average posterior vectors (L,) of a set of utterances, both ways; each sums to 1.

    "frame": the mean over all frames of all utterances (the reference's score; long utterances weigh more);
    "utterance": the mean of the per-utterance means (each utterance weighs the same).
    """
    posts = list(posteriors.values()) if isinstance(posteriors, dict) else list(posteriors)
    posts = [p for p in posts if p.shape[0] > 0]
    if not posts:
        raise ValueError("no frames to average: empty utterance set")
    return {"frame": torch.cat(posts).double().mean(0).float(),
            "utterance": torch.stack([p.double().mean(0) for p in posts]).mean(0).float()}


@contextmanager
def _cache_dir(cache_dir: str | Path | None):
    """The given feature cache folder, or a temporary one removed afterwards."""
    if cache_dir is not None:
        yield Path(cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="xlingual-lid-") as tmp:
        yield Path(tmp)


def posteriors_for(model: AcousticModel, meta: dict, utts: list[Utterance], cache_dir: str | Path | None = None,
                   device: torch.device | str | None = None, progress: bool = False) -> dict[str, torch.Tensor]:
    """Frame posteriors (id -> (T', L)) of manifest utterances, with the checkpoint's own feature settings."""
    if not utts:
        raise ValueError("no utterances to score")
    dup = len({u.id for u in utts}) != len(utts)
    if dup:
        raise ValueError("utterance ids must be unique among the utterances scored together")
    features = from_dict(FeatureConfig, meta["features"], "checkpoint features")
    device = pick_device(device) if isinstance(device, str) else (device or torch.device("cpu"))
    model.to(device)
    with _cache_dir(cache_dir) as cache:
        store = compute_features(utts, cache, features, progress=progress, desc="LID feats")
        return frame_posteriors(model, store, [u.id for u in utts], device)


# --------------------------------------------------------------------------------------------------------------
# Score matrices


@dataclass
class ScoreMatrix:
    """Average LID posteriors: rows are the input languages (whose speech was scored), columns the LID outputs."""

    rows: list[str]  # input languages, in the order given
    columns: list[str]  # LID output languages (the classifier's classes)
    frame: list[list[float]]  # mean frame posterior, rows x columns; each row sums to 1 (the reference's score)
    utterance: list[list[float]]  # mean of per-utterance mean posteriors, rows x columns
    utterances: list[int] = field(default_factory=list)  # utterances scored per row
    frames: list[int] = field(default_factory=list)  # (subsampled) frames scored per row

    def table(self, level: str = "frame") -> dict[str, dict[str, float]]:
        """Nested dict: input language -> LID output language -> score."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        m = self.frame if level == "frame" else self.utterance
        return {r: dict(zip(self.columns, m[i])) for i, r in enumerate(self.rows)}

    def to_dict(self) -> dict:
        return {"rows": self.rows, "columns": self.columns, "frame": self.frame, "utterance": self.utterance,
                "utterances": self.utterances, "frames": self.frames}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreMatrix":
        return cls(**{k: d[k] for k in ("rows", "columns", "frame", "utterance", "utterances", "frames")})


def _matrix_from_posteriors(columns: list[str], post: dict[str, dict[str, torch.Tensor]]) -> ScoreMatrix:
    rows = list(post)
    avgs = {r: average_posteriors(post[r]) for r in rows}
    return ScoreMatrix(rows=rows, columns=list(columns),
                       frame=[[float(x) for x in avgs[r]["frame"]] for r in rows],
                       utterance=[[float(x) for x in avgs[r]["utterance"]] for r in rows],
                       utterances=[len(post[r]) for r in rows],
                       frames=[int(sum(p.shape[0] for p in post[r].values())) for r in rows])


def score_matrix(lid_ckpt: str | Path, inputs: dict[str, list[Utterance]], cache_dir: str | Path | None = None,
                 device: torch.device | str | None = None, progress: bool = False) -> ScoreMatrix:
    """The LID score matrix of `inputs` (input language -> its utterances) under the LID model at lid_ckpt.

    Features are cached in cache_dir (None: a temporary folder). Both averages are computed (ScoreMatrix.frame,
    ScoreMatrix.utterance); `.table(level)` gives the nested dict.
    """
    if not inputs:
        raise ValueError("no input languages to score")
    model, meta = load_lid(lid_ckpt)
    all_utts = [u for utts in inputs.values() for u in utts]
    for lang, utts in inputs.items():
        if not utts:
            raise ValueError(f"input language {lang!r} has no utterances")
    post = posteriors_for(model, meta, all_utts, cache_dir, device, progress)
    return _matrix_from_posteriors(meta["languages"], {lang: {u.id: post[u.id] for u in utts}
                                                       for lang, utts in inputs.items()})


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


def plot_heatmap(matrix: list[list[float]], rows: list[str], columns: list[str], path: str | Path, title: str,
                 xlabel: str, ylabel: str, fmt: str = "{:.2f}", cmap: str = "viridis") -> None:
    """A labelled heatmap PNG with the value written in every cell; a language's own cell is outlined.

    Drawn by report.heatmap, the one heatmap writer of the toolkit (non-finite values show as missing).
    """
    from .report import Table, heatmap

    values = [[v if v is not None and math.isfinite(v) else None for v in row] for row in matrix]
    marked = {(i, j) for i, r in enumerate(rows) for j, c in enumerate(columns) if r == c}
    heatmap(Table(Path(path).stem, title, f"{ylabel} \\ {xlabel}", list(columns), list(rows), values,
                  marked=marked, fmt=fmt), Path(path), cmap=cmap)


def write_score_matrix(scores: ScoreMatrix, out_dir: str | Path, name: str = "lid_scores") -> dict[str, Path]:
    """<name>.json (both levels, counts), <name>_{frame,utterance}.csv, <name>.md, <name>.png (frame level)."""
    out = Path(out_dir)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    write_json(paths["json"], scores.to_dict())
    for level in LEVELS:
        paths[f"csv_{level}"] = out / f"{name}_{level}.csv"
        write_text(paths[f"csv_{level}"], matrix_csv(scores, level))
    md = ["LID average posteriors (rows: input frames of a language, columns: LID output for each source).", "",
          "Frame-level mean (as the reference):", "", matrix_markdown(scores, "frame"),
          "Utterance-level mean:", "", matrix_markdown(scores, "utterance"),
          "Scored: " + ", ".join(f"{r} {n} utts" for r, n in zip(scores.rows, scores.utterances)), ""]
    write_text(paths["md"], "\n".join(md))
    plot_heatmap(scores.frame, scores.rows, scores.columns, paths["png"], "LID average posteriors (frame mean)",
                 "LID output (source language)", "input language")
    return paths


def read_score_matrix(path: str | Path) -> ScoreMatrix:
    return ScoreMatrix.from_dict(read_json(path))

