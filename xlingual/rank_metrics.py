"""Metrics of a source ranking against a WER (or CER) matrix.

A predictor gives, for each target t, a score per candidate source s (higher = predicted better source). Against
the matrix (target -> source -> error rate, the target itself excluded):
  top-1       the chosen source (highest score) has the lowest error among the candidates;
  regret      error of the chosen source minus the best source's, in points;
  spearman    pooled over targets: the Pearson correlation of within-target ranks of score and of -error;
  kendall     pooled over targets: tau-b from concordant/discordant pairs *within* each target;
  ndcg@k      relevance gain g_s = (worst - err_s) / (worst - best) among the target's candidates (1 for the
              best source, 0 for the worst), DCG = sum g / log2(1 + position).
With one target, the pooled correlations equal scipy.stats.spearmanr and scipy.stats.kendalltau. Tied scores are
treated as an unresolved choice: top-1, regret and NDCG are the expectations over the tied orders.

Noise: a matrix cell is a measurement with noise (test utterances, training seeds). `noise_ties` finds, per target,
the sources whose error is not beyond noise of the best one (a paired bootstrap over the target's test utterances,
and a floor from the training seeds' spread); every metric then treats those sources as equally good (their
error is set to the best's), so a predictor is neither credited nor blamed for an order that noise decides.
`permutation_test` says how often a random ranking does at least as well (per target, the scores shuffled among
the candidates), `paired_comparison` whether one predictor beats another over the same targets (sign-flip test),
and the random expectations are computed the same way (expected top-1 is a count: the sum over targets of
tied-best / candidates).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np

TIE_EPS = 1e-12  # scores closer than this are a tie

WER_EPS = 1e-9  # WERs closer than this are equally good


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    """(source, score) best first; equal scores in name order (a display order only: ties stay ties)."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


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


def evaluate_target(scores: dict[str, float], wer: dict[str, float], target: str, k: int = 3,
                    tied: set[str] | None = None) -> dict | None:
    """One target's row: the predicted choice against the oracle; None with fewer than 2 candidate sources.

    Candidates: sources with both a score and a WER, other than the target itself. tied: the sources within noise
    of the best (their WER counts as the best's in every metric); None = only exactly equal WERs tie.
    """
    from scipy.stats import kendalltau, spearmanr

    cands = sorted(s for s in scores if s in wer and s != target and wer[s] is not None and math.isfinite(wer[s]))
    if len(cands) < 2:
        return None
    x = [float(scores[s]) for s in cands]
    measured = {s: float(wer[s]) for s in cands}
    wer = tie_adjusted(measured, tied)
    w = [wer[s] for s in cands]
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
        "unique_best": sum(v - best <= WER_EPS for v in w) == 1,  # one source beyond noise of the others
        "predicted": [[s, round(v, 6)] for s, v in ranked(dict(zip(cands, x)))],
        "oracle": [[s, measured[s]] for s in sorted(cands, key=lambda s: (measured[s], s))],
        "_x": x, "_y": neg,
    }


def tie_adjusted(errors: dict[str, float], tied: set[str] | None) -> dict[str, float]:
    """Errors with every source of `tied` (within noise of the best) set to the best error."""
    if not tied:
        return dict(errors)
    best = min(errors.values())
    return {s: (best if s in tied else v) for s, v in errors.items()}


def evaluate_ranking(scores: dict[str, dict[str, float]], wer: dict[str, dict[str, float]], k: int = 3,
                     tied: dict[str, set[str]] | None = None) -> dict:
    """A predictor (target -> source -> score, higher = better) against a WER matrix (target -> source -> WER).

    tied: per target, the sources within noise of its best (noise_ties); they count as equally good.
    Returns {"summary": {...}, "targets": [per-target rows], "skipped": [targets without 2 candidates]}; see the
    module docstring for the metric definitions.
    """
    from scipy.stats import pearsonr

    rows, skipped = [], []
    for t in sorted(set(scores) & set(wer)):
        row = evaluate_target(scores[t], wer[t], t, k, (tied or {}).get(t))
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
        "random_top1_hits": round(sum(r["random_top1"] for r in rows), 4),  # expected count over the targets
        "random_regret": sum(r["random_regret"] for r in rows) / n if n else float("nan"),
        "n_unique_best": sum(r["unique_best"] for r in rows),  # targets with one best source beyond noise
        "top1_hits_unique_best": round(sum(r["top1"] for r in rows if r["unique_best"]), 4),
    }
    return {"summary": summary, "targets": rows, "skipped": skipped, "k": k}


# --------------------------------------------------------------------------------------------------------------
# Noise and significance


def noise_ties(per_utt: dict[str, dict[str, tuple[int, int]]], seed_sd: float = 0.0, n_boot: int = 2000,
               alpha: float = 0.05, seed: int = 0, n_runs: dict[str, int] | None = None) -> dict:
    """One target's sources within noise of its best: {"best", "tied", "errors", "intervals", "seed_floor",
    "floors", "n_runs"}.

    per_utt: source -> utterance id -> (errors, reference length) on the target's test set (the same utterances
    for every source: a paired comparison), averaged over the source's n_runs[source] seeds (default 1). A source
    is tied with the best when the paired bootstrap's (1 - alpha) interval of its error minus the best's includes
    0, or when the difference is below its seed floor 2 x seed_sd x sqrt(1/n_source + 1/n_best): about 95% of the
    training noise of a difference of two means of runs (2 x sqrt(2) x seed_sd for single runs). seed_floor: the
    largest of the floors. Errors in %.
    """
    sources = sorted(per_utt)
    ids = sorted(set.intersection(*(set(per_utt[s]) for s in sources)))
    if not ids:
        raise ValueError("no test utterance is shared by the sources' decodes: cannot compare them")
    err = np.array([[per_utt[s][i][0] for i in ids] for s in sources], dtype=float)  # (S, U)
    ref = np.array([per_utt[sources[0]][i][1] for i in ids], dtype=float)  # (U,)
    rates = 100.0 * err.sum(1) / ref.sum()
    best = int(np.argmin(rates))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))  # the same resamples for every source
    boot = 100.0 * err[:, draws].sum(2) / ref[draws].sum(1)  # (S, B)
    diff = boot - boot[best]
    lo, hi = np.quantile(diff, [alpha / 2, 1 - alpha / 2], axis=1)
    runs = {s: int((n_runs or {}).get(s, 1)) for s in sources}
    if min(runs.values()) < 1:
        raise ValueError(f"n_runs must be >= 1 for every source, not {runs}")
    floors = {s: 2.0 * seed_sd * math.sqrt(1.0 / runs[s] + 1.0 / runs[sources[best]]) for s in sources}
    tied = [s for j, s in enumerate(sources) if j == best or lo[j] <= 0 or rates[j] - rates[best] < floors[s]]
    return {"best": sources[best], "tied": tied, "errors": dict(zip(sources, map(float, rates))),
            "intervals": {s: [float(lo[j]), float(hi[j])] for j, s in enumerate(sources)},
            "seed_floor": max(floors.values()), "floors": floors, "n_runs": runs, "n_utts": len(ids)}


def _random_summaries(rows: list[dict], k: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """top-1 hits, mean regret, pooled Spearman and mean NDCG@k of `n` random rankings (scores shuffled among each
    target's candidates), each (n,)."""
    rng = np.random.default_rng(seed)
    hits = np.zeros(n)
    regret = np.zeros(n)
    ndcg = np.zeros(n)
    sx = sy = sxx = syy = sxy = 0.0
    m = 0
    for r in rows:
        neg = np.array(r["_y"])  # -error (tie-adjusted), candidates in row order
        kk = len(neg)
        err = -neg
        best, worst = err.min(), err.max()
        gains = np.ones(kk) if worst - best <= WER_EPS else (worst - err) / (worst - best)
        order = np.argsort(rng.random((n, kk)), axis=1)  # order[:, 0] is the random choice
        hits += (err[order[:, 0]] - best <= WER_EPS)
        regret += err[order[:, 0]] - best
        disc = 1.0 / np.log2(np.arange(kk) + 2)
        dcg = (gains[order][:, :k] * disc[:k]).sum(1)
        ideal = (np.sort(gains)[::-1][:k] * disc[:k]).sum()
        ndcg += dcg / ideal if ideal > 0 else 1.0
        # within-target ranks: a random permutation for the scores, mid-ranks of -error
        x = np.empty((n, kk))
        x[np.arange(n)[:, None], order] = np.arange(kk, 0, -1)[None, :]
        y = _midranks(list(neg))
        sx, sy = sx + x.sum(1), sy + y.sum()
        sxx, syy, sxy = sxx + (x * x).sum(1), syy + (y * y).sum(), sxy + (x * y[None, :]).sum(1)
        m += kk
    cov = sxy - sx * sy / m
    den = np.sqrt((sxx - sx * sx / m) * (syy - sy * sy / m))
    spearman = np.where(den > 0, cov / np.where(den > 0, den, 1.0), np.nan)
    return {"top1_hits": hits, "mean_regret": regret / len(rows), "spearman": spearman,
            f"ndcg@{k}": ndcg / len(rows)}


def permutation_test(scores: dict[str, dict[str, float]], wer: dict[str, dict[str, float]], k: int = 3,
                     tied: dict[str, set[str]] | None = None, n: int = 10000, seed: int = 0) -> dict:
    """p-values of a predictor against random ranking: the share of `n` random rankings (per target, the scores
    shuffled among the candidates) doing at least as well, (1 + count) / (1 + n); and the random mean of each
    metric. Metrics: top-1 hits, mean regret (lower is better), pooled Spearman, NDCG@k."""
    ev = _evaluate_keep_xy(scores, wer, k, tied)
    rows = ev["targets"]
    if not rows:
        return {}
    observed = {"top1_hits": ev["summary"]["top1_hits"], "mean_regret": ev["summary"]["mean_regret"],
                "spearman": ev["summary"]["spearman"], f"ndcg@{k}": ev["summary"][f"ndcg@{k}"]}
    rand = _random_summaries(rows, k, n, seed)
    out = {}
    for name, value in observed.items():
        r = rand[name]
        r = r[np.isfinite(r)]
        better = (r <= value + 1e-12) if name == "mean_regret" else (r >= value - 1e-12)
        out[name] = {"observed": value, "random_mean": float(r.mean()) if len(r) else float("nan"),
                     "p": (1 + int(better.sum())) / (1 + len(r))}
    return out


def _evaluate_keep_xy(scores, wer, k, tied) -> dict:
    """evaluate_ranking with each row's score and -error lists kept (for the resampling tests)."""
    rows = []
    for t in sorted(set(scores) & set(wer)):
        row = evaluate_target(scores[t], wer[t], t, k, (tied or {}).get(t))
        if row:
            rows.append(row)
    summary = evaluate_ranking(scores, wer, k, tied)["summary"]
    return {"summary": summary, "targets": rows}


def paired_comparison(a: dict, b: dict, metric: str = "regret") -> dict:
    """Does predictor a beat predictor b over the targets both evaluated? Exact sign-flip test on the per-target
    differences of `metric` ("regret": lower is better; "top1": higher is better): p = share of the 2^n sign
    assignments whose mean difference is at least as favourable to a as the observed one (one-sided)."""
    ra = {r["target"]: r[metric] for r in a["targets"]}
    rb = {r["target"]: r[metric] for r in b["targets"]}
    common = sorted(set(ra) & set(rb))
    d = np.array([ra[t] - rb[t] for t in common], dtype=float)
    if metric != "regret":
        d = -d  # favourable to a = negative
    n = len(d)
    if n == 0:
        return {"n_targets": 0, "mean_difference": float("nan"), "p": float("nan")}
    if n > 20:  # 2^n would be too many: a Monte Carlo sample of sign assignments
        signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(100000, n))
    else:
        signs = np.array([[1.0 if (m >> i) & 1 else -1.0 for i in range(n)] for m in range(2 ** n)])
    means = (signs * np.abs(d)[None, :]).mean(1)
    observed = d.mean()
    diff = observed if metric == "regret" else -observed
    return {"n_targets": n, "metric": metric, "mean_difference": float(diff),
            "p": float((means <= observed + 1e-12).mean())}
