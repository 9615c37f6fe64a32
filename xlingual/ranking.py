"""Source ranking: which language to pre-train on for a target, predicted without training the WER matrix.

Predictors give, for each target t, a score per candidate source s (higher = predicted better source):
  - LID (the reference method): the average posterior of source s over the target's frames, from an LID model
    trained on the sources (lid.py). Two settings: "in_set", the target is among the LID's training languages
    (as in the reference; its own column is excluded), and "loo" (leave-one-out), an LID retrained without the
    target, so the target is truly a new language.
  - unit-inventory overlap (characters, IPA phones) between the target's and the source's transcripts;
  - typological similarity from URIEL (lang2vec's data files), where that package is installed.

Every predictor is evaluated the same way against a WER matrix (target -> source -> WER %, the diagonal excluded):
  top-1       the chosen source (highest score) has the lowest WER among the candidates;
  regret      WER of the chosen source minus the best source's, in points;
  spearman    pooled over targets: the Pearson correlation of within-target ranks of score and of -WER;
  kendall     pooled over targets: tau-b from concordant/discordant pairs *within* each target;
  ndcg@k      relevance gain g_s = (worst - WER_s) / (worst - best) among the target's candidates (1 for the
              best source, 0 for the worst), DCG = sum g / log2(1 + position).
With one target, the pooled correlations equal scipy.stats.spearmanr and scipy.stats.kendalltau. Tied scores are
treated as an unresolved choice: top-1, regret and NDCG are the expectations over the tied orders.

Also here: the data-selection helper (pick pool utterances by the target's LID posterior up to an hours budget).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import LIDConfig
from .corpus import Utterance, read_manifest, subset_hours, total_hours, write_manifest
from .fileio import write_json, write_text
from .lid import (LEVELS, ScoreMatrix, _matrix_from_posteriors, average_posteriors, load_lid, plot_heatmap,
                  posteriors_for, train_lid, utterance_posteriors, write_score_matrix)

TIE_EPS = 1e-12  # scores closer than this are a tie
WER_EPS = 1e-9  # WERs closer than this are equally good
INVENTORY_KINDS = ("char", "ipa")
INVENTORY_METRICS = ("jaccard", "coverage")
TYPOLOGY_SETS = {  # name -> (lang2vec data file, feature-name prefix); similarity = cosine of the feature vectors
    "syntax": ("feature_predictions.npz", "S_"),  # kNN-completed WALS/SSWL/Ethnologue syntax features
    "phonology": ("feature_predictions.npz", "P_"),  # kNN-completed phonological features
    "inventory": ("feature_predictions.npz", "INV_"),  # kNN-completed phoneme inventory (PHOIBLE) features
    "genetic": ("family_features.npz", "F_"),  # Glottolog family-tree membership
    "geographic": ("geocoord_features.npz", ""),  # distances to fixed points on the globe
}


# --------------------------------------------------------------------------------------------------------------
# The ranking query for a target language


@dataclass
class RankResult:
    target: str  # manifest path or audio folder that was ranked for
    language: str | None  # the target's language code (its own LID column is excluded), None if unknown
    level: str  # "frame" or "utterance" average
    ranking: list[tuple[str, float]]  # (source language, average posterior), best first
    n_utterances: int  # target utterances scored
    hours: float  # their audio
    seconds: float  # wall time of the query (features + LID forward)
    excluded: list[str] = field(default_factory=list)  # LID languages left out (the target's own)

    def to_dict(self) -> dict:
        return {"target": self.target, "language": self.language, "level": self.level,
                "ranking": [{"language": s, "score": round(v, 6)} for s, v in self.ranking],
                "excluded": self.excluded, "n_utterances": self.n_utterances, "hours": round(self.hours, 4),
                "seconds": round(self.seconds, 2)}


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    """(source, score) best first; equal scores in name order (a display order only: ties stay ties)."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def majority_language(utts: list[Utterance]) -> str | None:
    langs = Counter(u.language for u in utts if u.language)
    return langs.most_common(1)[0][0] if langs else None


def load_target(target: str | Path, language: str | None = None, work_dir: str | Path | None = None,
                max_hours: float | None = None, seed: int = 0) -> tuple[list[Utterance], str | None]:
    """The target's utterances from a manifest (text optional) or a folder of audio files, and its language.

    An audio folder is prepared into work_dir (data_prep.audiodir; 16 kHz WAV/FLAC are used in place).
    max_hours takes a deterministic subset (a few minutes of speech are enough for a stable average).
    """
    target = Path(target)
    if target.is_dir():
        from data_prep.audiodir import prepare_audiodir

        if work_dir is None:
            raise ValueError("an audio folder target needs a work_dir for its manifest")
        manifest = prepare_audiodir(target, Path(work_dir) / "target", language or "unknown")["test"]
        utts = read_manifest(manifest, require_text=False)
        lang = language
    elif target.is_file():
        utts = read_manifest(target, require_text=False)
        lang = language or majority_language(utts)
    else:
        raise FileNotFoundError(f"target not found: {target} (give a manifest .jsonl or a folder of audio files)")
    if not utts:
        raise ValueError(f"{target}: no usable utterances")
    if max_hours is not None:
        utts = subset_hours(utts, max_hours, seed)
    return utts, lang


def rank_query(lid_ckpt: str | Path, target: str | Path | list[Utterance], exclude_self: bool = True,
               language: str | None = None, level: str = "frame", max_hours: float | None = None,
               cache_dir: str | Path | None = None, device: str | None = None) -> RankResult:
    """Rank the LID model's languages as pre-training sources for `target` (manifest, audio folder or utterances).

    No ASR training: features of the target plus one LID forward pass. With exclude_self, the target's own
    language (given, or the manifest's majority language) is left out when the LID knows it.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    t0 = time.perf_counter()
    model, meta = load_lid(lid_ckpt)
    with tempfile.TemporaryDirectory(prefix="xlingual-rank-") as tmp:
        if isinstance(target, list):
            utts, lang = target, language or majority_language(target)
            name = f"{len(utts)} utterances"
            if max_hours is not None:
                utts = subset_hours(utts, max_hours)
        else:
            utts, lang = load_target(target, language, tmp, max_hours)
            name = str(target)
        post = posteriors_for(model, meta, utts, cache_dir if cache_dir is not None else Path(tmp) / "feats", device)
    avg = average_posteriors(post)[level]
    scores = dict(zip(meta["languages"], (float(x) for x in avg)))
    excluded = [lang] if exclude_self and lang in scores else []
    for x in excluded:
        del scores[x]
    return RankResult(target=name, language=lang, level=level, ranking=ranked(scores), n_utterances=len(utts),
                      hours=total_hours(utts), seconds=time.perf_counter() - t0, excluded=excluded)


def rank_sources(lid_ckpt: str | Path, target: str | Path | list[Utterance], exclude_self: bool = True,
                 **kwargs) -> list[tuple[str, float]]:
    """[(source language, average LID posterior)] best first; see rank_query for the options."""
    return rank_query(lid_ckpt, target, exclude_self, **kwargs).ranking


# --------------------------------------------------------------------------------------------------------------
# WER matrices


def _cell(text: str) -> float | None:
    """A WER cell: '63.8', '63.8*' (marked diagonal), '' / '-' / 'nan' (missing) -> float or None."""
    t = text.strip().rstrip("*†%").strip()
    if t.lower() in ("", "-", "nan", "na", "n/a", "none"):
        return None
    v = float(t)
    return v if math.isfinite(v) else None


def read_wer_matrix(path: str | Path) -> dict[str, dict[str, float]]:
    """target ("adapt to") -> source ("pretrain on") -> WER from a CSV.

    Wide layout (as matrix.py writes it): the header row is a corner label then source languages; each row is a
    target then its WERs; empty cells are missing. Long layout: columns named target/adapt_to, source/pretrain_on
    and wer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WER matrix not found: {path}")
    rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and at least one target row")
    header = [h.strip().lower() for h in rows[0]]
    wer: dict[str, dict[str, float]] = {}
    tcol = next((header.index(n) for n in ("target", "adapt_to", "adapt to") if n in header), None)
    scol = next((header.index(n) for n in ("source", "pretrain_on", "pretrain on") if n in header), None)
    try:
        if tcol is not None and scol is not None and "wer" in header:
            wcol = header.index("wer")
            for r in rows[1:]:
                v = _cell(r[wcol])
                if v is not None:
                    wer.setdefault(r[tcol].strip(), {})[r[scol].strip()] = v
        else:
            sources = [h.strip() for h in rows[0][1:]]
            for lineno, r in enumerate(rows[1:], 2):
                if len(r) != len(rows[0]):
                    raise ValueError(f"{path}:{lineno}: {len(r)} cells, the header has {len(rows[0])}")
                cells = {s: _cell(c) for s, c in zip(sources, r[1:])}
                wer[r[0].strip()] = {s: v for s, v in cells.items() if v is not None}
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: not a WER matrix CSV ({e})") from None
    return wer


# --------------------------------------------------------------------------------------------------------------
# Evaluating a predictor against a WER matrix


def _midranks(values: list[float]) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(np.asarray(values, dtype=float))


def _pair_counts(x: list[float], y: list[float]) -> tuple[int, int, int, int, int]:
    """(concordant, discordant, pairs, ties in x, ties in y) over all pairs of one target."""
    c = d = n = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            n += 1
            dx = 0 if abs(x[i] - x[j]) <= TIE_EPS else (1 if x[i] > x[j] else -1)
            dy = 0 if abs(y[i] - y[j]) <= WER_EPS else (1 if y[i] > y[j] else -1)
            tx += dx == 0
            ty += dy == 0
            if dx and dy:
                c += dx == dy
                d += dx != dy
    return c, d, n, tx, ty


def _ndcg(scores: list[float], gains: list[float], k: int) -> float:
    """Tie-aware NDCG@k: each position in a group of tied scores gets the group's mean gain."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    dcg, pos = 0.0, 0
    while pos < len(order):
        end = pos
        while end + 1 < len(order) and abs(scores[order[end + 1]] - scores[order[pos]]) <= TIE_EPS:
            end += 1
        group_gain = sum(gains[order[i]] for i in range(pos, end + 1)) / (end - pos + 1)
        dcg += sum(group_gain / math.log2(p + 2) for p in range(pos, min(end + 1, k)))
        pos = end + 1
    ideal = sorted(gains, reverse=True)
    idcg = sum(g / math.log2(p + 2) for p, g in enumerate(ideal[:k]))
    return dcg / idcg if idcg > 0 else 1.0


def _corr(fn, x, y) -> float:
    """scipy correlation statistic, NaN where undefined (constant input, fewer than 2 points)."""
    if len(x) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = fn(x, y)
    v = float(v.statistic if hasattr(v, "statistic") else v[0])
    return v


def evaluate_target(scores: dict[str, float], wer: dict[str, float], target: str, k: int = 3) -> dict | None:
    """One target's row: the predicted choice against the oracle; None with fewer than 2 candidate sources.

    Candidates: sources with both a score and a WER, other than the target itself.
    """
    from scipy.stats import kendalltau, spearmanr

    cands = sorted(s for s in scores if s in wer and s != target and wer[s] is not None and math.isfinite(wer[s]))
    if len(cands) < 2:
        return None
    x = [float(scores[s]) for s in cands]
    w = [float(wer[s]) for s in cands]
    best, worst = min(w), max(w)
    top = max(x)
    chosen = [s for s, v in zip(cands, x) if top - v <= TIE_EPS]
    regret = sum(wer[s] - best for s in chosen) / len(chosen)
    hit = sum(wer[s] - best <= WER_EPS for s in chosen) / len(chosen)
    gains = [1.0 if worst - best <= WER_EPS else (worst - v) / (worst - best) for v in w]
    neg = [-v for v in w]
    return {
        "target": target,
        "n_candidates": len(cands),
        "chosen": chosen[0] if len(chosen) == 1 else chosen,
        "chosen_wer": round(sum(wer[s] for s in chosen) / len(chosen), 4),
        "best": [s for s, v in zip(cands, w) if v - best <= WER_EPS],
        "best_wer": best,
        "top1": hit,
        "regret": round(regret, 6),
        "random_regret": round(sum(v - best for v in w) / len(w), 6),
        "random_top1": round(sum(v - best <= WER_EPS for v in w) / len(w), 6),
        "spearman": _corr(spearmanr, x, neg),
        "kendall": _corr(kendalltau, x, neg),
        f"ndcg@{k}": _ndcg(x, gains, k),
        "predicted": [[s, round(v, 6)] for s, v in ranked(dict(zip(cands, x)))],
        "oracle": [[s, v] for s, v in sorted(zip(cands, w), key=lambda t: (t[1], t[0]))],
        "_x": x, "_y": neg,
    }


def evaluate_ranking(scores: dict[str, dict[str, float]], wer: dict[str, dict[str, float]], k: int = 3) -> dict:
    """A predictor (target -> source -> score, higher = better) against a WER matrix (target -> source -> WER).

    Returns {"summary": {...}, "targets": [per-target rows], "skipped": [targets without 2 candidates]}; see the
    module docstring for the metric definitions.
    """
    from scipy.stats import pearsonr

    rows, skipped = [], []
    for t in sorted(set(scores) & set(wer)):
        row = evaluate_target(scores[t], wer[t], t, k)
        (rows.append(row) if row else skipped.append(t))
    skipped += sorted(set(wer) - set(scores))
    # pooled rank correlations: ranks are taken within each target (the decision is per target), then pooled
    rx, ry, C, D, N, TX, TY = [], [], 0, 0, 0, 0, 0
    for r in rows:
        x, y = r.pop("_x"), r.pop("_y")
        rx += list(_midranks(x))
        ry += list(_midranks(y))
        c, d, n, tx, ty = _pair_counts(x, y)
        C, D, N, TX, TY = C + c, D + d, N + n, TX + tx, TY + ty
    denom = math.sqrt((N - TX) * (N - TY))
    n = len(rows)
    summary = {
        "n_targets": n,
        "top1_hits": round(sum(r["top1"] for r in rows), 4),
        "top1_rate": sum(r["top1"] for r in rows) / n if n else float("nan"),
        "mean_regret": sum(r["regret"] for r in rows) / n if n else float("nan"),
        "max_regret": max((r["regret"] for r in rows), default=float("nan")),
        "spearman": _corr(pearsonr, rx, ry),
        "kendall": (C - D) / denom if denom > 0 else float("nan"),
        f"ndcg@{k}": sum(r[f"ndcg@{k}"] for r in rows) / n if n else float("nan"),
        "random_top1_rate": sum(r["random_top1"] for r in rows) / n if n else float("nan"),
        "random_regret": sum(r["random_regret"] for r in rows) / n if n else float("nan"),
    }
    return {"summary": summary, "targets": rows, "skipped": skipped, "k": k}


# --------------------------------------------------------------------------------------------------------------
# Predictors: LID (both settings), unit inventories, typology


def lid_scores(lid_ckpt: str | Path, targets: dict[str, list[Utterance]], level: str = "frame",
               cache_dir: str | Path | None = None, device: str | None = None) -> tuple[dict, ScoreMatrix]:
    """target -> LID language -> average posterior, for each target's utterances (and the ScoreMatrix)."""
    model, meta = load_lid(lid_ckpt)
    utts = [u for us in targets.values() for u in us]
    post = posteriors_for(model, meta, utts, cache_dir, device)
    m = _matrix_from_posteriors(meta["languages"], {t: {u.id: post[u.id] for u in us} for t, us in targets.items()})
    return m.table(level), m


def loo_config(cfg: LIDConfig, target: str, root: str | Path | None = None) -> LIDConfig:
    """The LID configuration without `target` (out_dir: <root or cfg.out_dir/loo>/without_<target>)."""
    if target not in cfg.languages:
        return cfg
    langs = [x for x in cfg.languages if x != target]
    root = Path(root) if root is not None else Path(cfg.out_dir) / "loo"
    return replace(cfg, languages=langs, out_dir=str(root / f"without_{target}"))


def train_loo_lids(cfg: LIDConfig, targets: list[str], root: str | Path | None = None) -> dict[str, Path]:
    """One LID per target, trained without it (cached: a finished model is reused); target -> best.pt.

    A target that is not among cfg.languages is already new to cfg's LID, which is trained (or reused) as is.
    """
    out = {}
    for t in targets:
        sub = loo_config(cfg, t, root)
        if len(sub.languages) < 2:
            raise ValueError(f"leaving {t!r} out leaves fewer than 2 LID languages: {sub.languages}")
        out[t] = train_lid(sub)
    return out


def loo_scores(ckpts: dict[str, str | Path], targets: dict[str, list[Utterance]], level: str = "frame",
               cache_dir: str | Path | None = None, device: str | None = None) -> dict[str, dict[str, float]]:
    """target -> source -> average posterior under the LID model that never saw the target."""
    out = {}
    for t, ckpt in ckpts.items():
        if t in targets:
            table, _ = lid_scores(ckpt, {t: targets[t]}, level, cache_dir, device)
            out[t] = table[t]
    return out


def unit_inventory(texts: list[str], language: str, kind: str = "char") -> Counter:
    """Counts of the units in `texts`: characters (spaces excluded) or IPA phones (eSpeak NG, stress dropped)."""
    if kind not in INVENTORY_KINDS:
        raise ValueError(f"inventory kind must be one of {INVENTORY_KINDS}, not {kind!r}")
    from .tokenizer import BLANK, WORD_SEP, Tokenizer

    tok = Tokenizer(kind, [BLANK, WORD_SEP])
    counts: Counter = Counter()
    for text in texts:
        counts.update(u for u in tok.split(tok.to_units(text, language)) if u != WORD_SEP)
    return counts


def inventory_overlap(target: Counter, source: Counter, metric: str = "jaccard") -> float:
    """jaccard: |T & S| / |T | S| over unit types; coverage: share of the target's unit tokens whose unit the
    source has (what a source-trained model can already emit)."""
    if metric == "jaccard":
        union = set(target) | set(source)
        return len(set(target) & set(source)) / len(union) if union else 0.0
    if metric == "coverage":
        total = sum(target.values())
        return sum(n for u, n in target.items() if u in source) / total if total else 0.0
    raise ValueError(f"overlap metric must be one of {INVENTORY_METRICS}, not {metric!r}")


def inventory_scores(texts: dict[str, list[str]], kind: str = "char", metric: str = "jaccard",
                     targets: list[str] | None = None) -> dict[str, dict[str, float]]:
    """target -> source -> unit-inventory overlap, from each language's transcripts (language -> texts)."""
    inv = {lang: unit_inventory(t, lang, kind) for lang, t in texts.items()}
    return {t: {s: inventory_overlap(inv[t], inv[s], metric) for s in inv if s != t}
            for t in (targets or list(inv)) if t in inv}


def _lang2vec_data() -> Path:
    """The data folder that the lang2vec wheel ships (its module needs pkg_resources; the data files do not)."""
    import importlib.util

    spec = importlib.util.find_spec("lang2vec")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("typology needs the `lang2vec` package (its wheel ships the URIEL data): "
                          "pip install lang2vec")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (data / "letter_codes.json").is_file():
        raise ImportError(f"lang2vec is installed but its data files are missing under {data}")
    return data


def typology_available() -> bool:
    try:
        _lang2vec_data()
        return True
    except ImportError:
        return False


def uriel_vectors(languages: list[str], feature_set: str = "syntax") -> dict[str, np.ndarray]:
    """URIEL feature vectors (language -> (F,), -1 = missing) from lang2vec's data files; ISO 639-1 or -3 codes."""
    if feature_set not in TYPOLOGY_SETS:
        raise ValueError(f"typology feature set must be one of {sorted(TYPOLOGY_SETS)}, not {feature_set!r}")
    data = _lang2vec_data()
    letters = json.loads((data / "letter_codes.json").read_text())
    fname, prefix = TYPOLOGY_SETS[feature_set]
    db = np.load(data / fname, allow_pickle=False)
    index = {str(x): i for i, x in enumerate(db["langs"])}
    cols = [i for i, f in enumerate(db["feats"]) if str(f).startswith(prefix)]
    out = {}
    for lang in languages:
        code = letters.get(lang, lang)
        if code not in index:
            raise ValueError(f"URIEL has no language {lang!r} (ISO 639-3 {code!r})")
        out[lang] = db["data"][index[code], cols, 0].astype(np.float64)
    return out


def typology_scores(languages: list[str], feature_set: str = "syntax",
                    targets: list[str] | None = None) -> dict[str, dict[str, float]]:
    """target -> source -> cosine similarity of URIEL vectors (1 - the URIEL cosine distance); higher = closer.

    Features missing (-1) in either language are left out of that pair's comparison.
    """
    vec = uriel_vectors(languages, feature_set)
    out = {}
    for t in targets or languages:
        out[t] = {}
        for s in languages:
            if s == t:
                continue
            a, b = vec[t], vec[s]
            ok = (a >= 0) & (b >= 0)
            na, nb = np.linalg.norm(a[ok]), np.linalg.norm(b[ok])
            out[t][s] = float(a[ok] @ b[ok] / (na * nb)) if na > 0 and nb > 0 else 0.0
    return out


# --------------------------------------------------------------------------------------------------------------
# The full evaluation (what `xlingual rank-eval` runs)


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    if isinstance(v, list):
        return "/".join(map(str, v))
    return str(v)


def evaluation_markdown(results: dict, k: int = 3) -> str:
    """Summary table (setting x predictor) and per-target tables of a run_rank_eval result."""
    lines = ["## Source ranking against the WER matrix", "",
             f"Candidates per target: the WER matrix's sources that the predictor scores, the target itself "
             f"excluded. Regret in WER points; correlations pooled over targets (within-target ranks); NDCG@{k} with "
             f"gain (worst - WER) / (worst - best). `random` is the expectation of a uniformly random choice. "
             f"Settings: `in_set`, the LID was trained on the target too (its own column excluded); `loo`, an LID "
             f"retrained without the target; `baselines`, predictors that never train on the target.", "",
             f"| setting | predictor | targets | top-1 | mean regret | max regret | Spearman | Kendall | NDCG@{k} | "
             f"random top-1 | random regret |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (setting, name), ev in _each(results):
        s = ev["summary"]
        lines.append(f"| {setting} | {name} | {s['n_targets']} | {_fmt(s['top1_hits'], 2)} of {s['n_targets']} | "
                     f"{_fmt(s['mean_regret'], 2)} | {_fmt(s['max_regret'], 2)} | {_fmt(s['spearman'])} | "
                     f"{_fmt(s['kendall'])} | {_fmt(s[f'ndcg@{k}'])} | {_fmt(s['random_top1_rate'], 2)} | "
                     f"{_fmt(s['random_regret'], 2)} |")
    for (setting, name), ev in _each(results):
        lines += ["", f"### {setting} / {name}", "",
                  "| target | predicted order (score) | chosen (WER) | best (WER) | regret |", "|---|---|---|---|---|"]
        for r in ev["targets"]:
            order = ", ".join(f"{s} ({v:.3g})" for s, v in r["predicted"])
            lines.append(f"| {r['target']} | {order} | {_fmt(r['chosen'])} ({r['chosen_wer']:.1f}) | "
                         f"{_fmt(r['best'])} ({r['best_wer']:.1f}) | {r['regret']:.2f} |")
        if ev["skipped"]:
            lines.append(f"\nNot evaluated (no scores, or fewer than 2 candidate sources): {', '.join(ev['skipped'])}")
    return "\n".join(lines) + "\n"


def _each(results: dict):
    for setting, preds in results["evaluations"].items():
        for name, ev in preds.items():
            yield (setting, name), ev


def _rows_csv(ev: dict, k: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["target", "n_candidates", "chosen", "chosen_wer", "best", "best_wer", "top1", "regret", "spearman",
            "kendall", f"ndcg@{k}", "random_regret", "predicted", "oracle"]
    w.writerow(cols)
    for r in ev["targets"]:
        w.writerow([_fmt(r[c]) if c not in ("predicted", "oracle") else
                    " ".join(f"{s}:{v}" for s, v in r[c]) for c in cols])
    return buf.getvalue()


def run_rank_eval(lid_ckpt: str | Path, wer: dict[str, dict[str, float]], out_dir: str | Path,
                  data_dir: str | Path, split: str = "test", loo_cfg: LIDConfig | None = None,
                  baselines: tuple[str, ...] = ("char", "ipa", "typology"), k: int = 3, level: str = "frame",
                  max_hours: float | None = None, cache_dir: str | Path | None = None,
                  device: str | None = None) -> dict:
    """Evaluate LID ranking (in-set; leave-one-out when loo_cfg is given) and baselines against `wer`.

    Target speech: data_dir/<target>/<split>.jsonl (text optional); baseline transcripts: data_dir/<lang>/train.jsonl.
    Writes into out_dir: ranking_eval.json, ranking_eval.md, ranking_<setting>_<predictor>.csv, lid_scores.*
    (the in-set LID score matrix of the targets) and returns the JSON's content.
    """
    data_dir, out = Path(data_dir), Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else data_dir / ".features"
    targets = sorted(wer)
    sources = sorted({s for row in wer.values() for s in row})
    speech = {}
    for t in targets:
        utts = read_manifest(data_dir / t / f"{split}.jsonl", require_text=False)
        speech[t] = subset_hours(utts, max_hours) if max_hours is not None else utts
    timings, notes = {}, []
    evaluations: dict[str, dict[str, dict]] = {"in_set": {}, "loo": {}, "baselines": {}}

    t0 = time.perf_counter()
    _, meta = load_lid(lid_ckpt)
    lid_langs = meta["languages"]
    table, matrix = lid_scores(lid_ckpt, speech, level, cache, device)
    timings["lid_in_set_scoring_s"] = round(time.perf_counter() - t0, 2)
    write_score_matrix(matrix, out, "lid_scores")
    in_set = [t for t in targets if t in lid_langs]
    evaluations["in_set"]["lid"] = evaluate_ranking({t: table[t] for t in in_set}, wer, k)
    if loo_cfg is not None:
        t0 = time.perf_counter()
        ckpts = train_loo_lids(loo_cfg, targets)
        timings["loo_training_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        loo = loo_scores(ckpts, speech, level, cache, device)
        timings["loo_scoring_s"] = round(time.perf_counter() - t0, 2)
        evaluations["loo"]["lid"] = evaluate_ranking(loo, wer, k)
        write_json(out / "loo_scores.json", {"checkpoints": {t: str(p) for t, p in ckpts.items()}, "scores": loo})
        plot_ranking_scores(loo, out / "loo_scores.png", "Leave-one-out LID average posteriors")
    else:
        notes.append("leave-one-out not run (no LID config given)")

    langs = sorted(set(targets) | set(sources))
    base: dict[str, dict] = {}
    if "char" in baselines or "ipa" in baselines:
        texts = {lang: [u.text for u in read_manifest(data_dir / lang / "train.jsonl")] for lang in langs}
        for kind in ("char", "ipa"):
            if kind in baselines:
                t0 = time.perf_counter()
                try:
                    for metric in INVENTORY_METRICS:
                        base[f"{kind}_{metric}"] = inventory_scores(texts, kind, metric, targets)
                except (ValueError, RuntimeError) as e:  # e.g. a language eSpeak NG cannot phonemize
                    notes.append(f"{kind} inventory skipped: {e}")
                timings[f"{kind}_inventory_s"] = round(time.perf_counter() - t0, 2)
    if "typology" in baselines:
        if typology_available():
            for fs in TYPOLOGY_SETS:
                try:
                    base[f"uriel_{fs}"] = typology_scores(langs, fs, targets)
                except ValueError as e:
                    notes.append(f"typology {fs}: {e}")
        else:
            notes.append("typology skipped: the lang2vec package (URIEL data) is not installed")
    # baselines involve no training on the target, so there is one setting for them: every WER-matrix target
    for name, sc in base.items():
        evaluations["baselines"][name] = evaluate_ranking(sc, wer, k)
    if not in_set:
        notes.append(f"no WER-matrix target is among the LID languages {lid_langs}: the in-set setting is empty")
    evaluations = {s: v for s, v in evaluations.items() if v}
    results = {"lid_checkpoint": str(lid_ckpt), "lid_languages": lid_langs, "level": level, "split": split,
               "data_dir": str(data_dir), "k": k, "targets": targets, "sources": sources,
               "evaluations": evaluations, "timings": timings, "notes": notes}
    write_json(out / "ranking_eval.json", _jsonable(results))
    md = evaluation_markdown(results, k)
    if notes:
        md += "\nNotes: " + "; ".join(notes) + "\n"
    write_text(out / "ranking_eval.md", md)
    for (setting, name), ev in _each(results):
        write_text(out / f"ranking_{setting}_{name}.csv", _rows_csv(ev, k))
    return results


def _jsonable(obj):
    """NaN -> None (strict JSON)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------------------------
# Data selection by LID posterior (the reference's "LID for data selection")


def select_utterances(utts: list[Utterance], scores: dict[str, float], hours: float) -> list[Utterance]:
    """The highest-scoring utterances whose total duration stays within `hours`, best first.

    Greedy: utterances in descending score (ties by id); one that would overflow the budget is skipped and
    shorter, lower-scoring ones may still fill the rest.
    """
    if not hours > 0:
        raise ValueError(f"hours must be > 0, got {hours}")
    missing = [u.id for u in utts if u.id not in scores]
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) have no score, e.g. {missing[0]!r}")
    budget, taken, chosen = hours * 3600.0, 0.0, []
    for u in sorted(utts, key=lambda u: (-scores[u.id], u.id)):
        if taken + u.duration <= budget + 1e-9:
            chosen.append(u)
            taken += u.duration
    return chosen


def select_by_lid(lid_ckpt: str | Path, pool: list[Utterance], hours: float, out_manifest: str | Path,
                  target: list[Utterance] | None = None, target_language: str | None = None,
                  criterion: str = "auto", level: str = "frame", cache_dir: str | Path | None = None,
                  device: str | None = None) -> dict:
    """Select `hours` of pool utterances (several source languages) for pre-training towards a target.

    criterion "target": score = the utterance's mean posterior of the target language (the target is one of the
    LID's languages); "profile": score = dot product of the utterance's mean posterior with the target speech's
    average posterior over the LID languages (a new target: pool speech that the LID hears the way it hears the
    target); "auto": "target" when the LID knows target_language, else "profile".
    Writes out_manifest and <out_manifest stem>.selection.json (hours per source language, criterion, profile).
    """
    model, meta = load_lid(lid_ckpt)
    langs = meta["languages"]
    lang = target_language or (majority_language(target) if target else None)
    if criterion == "auto":
        criterion = "target" if lang in langs else "profile"
    if criterion not in ("target", "profile"):
        raise ValueError(f"criterion must be 'auto', 'target' or 'profile', not {criterion!r}")
    post = utterance_posteriors(posteriors_for(model, meta, pool, cache_dir, device))
    profile = None
    if criterion == "target":
        if lang not in langs:
            raise ValueError(f"criterion 'target' needs a target language among the LID's {langs}, got {lang!r}")
        j = langs.index(lang)
        scores = {i: float(p[j]) for i, p in post.items()}
    else:
        if not target:
            raise ValueError("criterion 'profile' needs the target's utterances")
        profile = average_posteriors(posteriors_for(model, meta, target, cache_dir, device))[level]
        scores = {i: float(p @ profile) for i, p in post.items()}
    chosen = select_utterances(pool, scores, hours)
    out_manifest = Path(out_manifest)
    write_manifest(out_manifest, chosen)
    by_lang = Counter()
    for u in chosen:
        by_lang[u.language] += u.duration / 3600.0
    summary = {"criterion": criterion, "target_language": lang, "budget_hours": hours,
               "selected_hours": round(total_hours(chosen), 4), "selected_utterances": len(chosen),
               "pool_utterances": len(pool), "hours_by_language": {k: round(v, 4) for k, v in by_lang.items()},
               "profile": dict(zip(langs, (round(float(x), 6) for x in profile))) if profile is not None else None,
               "min_selected_score": min((scores[u.id] for u in chosen), default=None),
               "manifest": str(out_manifest)}
    write_json(out_manifest.with_name(out_manifest.stem + ".selection.json"), summary)
    return summary


def plot_ranking_scores(scores: dict[str, dict[str, float]], path: str | Path, title: str) -> None:
    """Heatmap of a predictor's target x source scores (e.g. the LOO LID scores)."""
    rows = sorted(scores)
    cols = sorted({s for r in scores.values() for s in r})
    plot_heatmap([[scores[r].get(c, float("nan")) for c in cols] for r in rows], rows, cols, path, title,
                 "source", "target")
