"""A source's transfer record as a ranking predictor: how well it served *other* targets of a measured matrix.

Some sources are good or bad pre-training for almost every target (in the synthetic benchmark Thai is the worst
source for all 13 targets), whatever their similarity to the one at hand. A similarity predictor (the LID's
posteriors, an inventory overlap) cannot see that; a record of measured transfers can. This is the "dataset
features" half of learning-to-rank source selection (Lin et al. 2019, LangRank), reduced to one feature and one
weight so that 12 training targets can fit it:

  prior(s; excluded)   the mean over the matrix's targets u not in `excluded` of s's within-target normalized rank
                       (1 = u's best source, 0 = its worst; rank-based, so a target's overall difficulty drops out)
  score(t, s)          (1 - w) * r_t(s) + w * prior(s; {t}), where r_t is the similarity predictor's normalized
                       rank among t's candidates and w in [0, 1] is fitted on the other targets only

Both are leave-one-out: the prior for target t never reads t's cells, and w is the grid value with the best mean
NDCG@k (LangRank's objective) over the other targets u, each scored with a prior that leaves out t and u. The
user's case it stands for: a measured matrix over the candidate sources exists (the toolkit's benchmark) and a new
language is to be placed without training anything on it.
"""

from __future__ import annotations

import numpy as np

from .rank_metrics import evaluate_ranking

WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))  # the grid w is fitted on


def normalized_ranks(row: dict[str, float]) -> dict[str, float]:
    """Within-row ranks scaled to [0, 1] (highest value 1; equal values share their mean rank); {s: 0.5} for one."""
    from scipy.stats import rankdata

    keys = sorted(row)
    if len(keys) == 1:
        return {keys[0]: 0.5}
    ranks = (rankdata([row[k] for k in keys]) - 1) / (len(keys) - 1)
    return dict(zip(keys, map(float, ranks)))


def transfer_prior(errors: dict[str, dict[str, float]], excluded: set[str] | frozenset = frozenset()) \
        -> dict[str, float]:
    """source -> its mean normalized rank (lower error = higher) over the targets of `errors` (target -> source ->
    error %) that are not in `excluded`; sources never measured there are absent. An excluded language is dropped
    as a source too: a new language is in no row of the matrix, and its cells as a source would move the others'
    ranks."""
    acc: dict[str, list[float]] = {}
    for u, row in errors.items():
        row = {s: e for s, e in row.items() if s not in excluded and s != u}  # a matrix CSV may hold the diagonal
        if u in excluded or len(row) < 2:
            continue
        for s, v in normalized_ranks({s: -e for s, e in row.items()}).items():
            acc.setdefault(s, []).append(v)
    return {s: float(np.mean(v)) for s, v in acc.items()}


def prior_scores(errors: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The prior alone as a predictor (no speech, no similarity): target -> source -> prior(s; {target}); a target
    with fewer than 2 sources measured elsewhere is left out."""
    out = {}
    for t, row in errors.items():
        prior = transfer_prior(errors, {t})
        scored = {s: prior[s] for s in row if s in prior}
        if len(scored) >= 2:
            out[t] = scored
    return out


def _blend(similarity: dict[str, float], prior: dict[str, float], w: float) -> dict[str, float]:
    r = normalized_ranks(similarity)
    return {s: (1 - w) * r[s] + w * prior[s] for s in similarity if s in prior}


def fit_weight(similarity: dict[str, dict[str, float]], errors: dict[str, dict[str, float]],
               tied: dict[str, set[str]], held_out: str, k: int = 3) -> float:
    """The grid weight with the best mean NDCG@k over the targets other than `held_out`, the held-out language left
    out of their candidates and priors too (ties in the objective: the smallest weight, i.e. the least prior)."""
    train = [u for u in similarity if u != held_out and u in errors]
    # what does not depend on w, once: each training target's candidates and record without the held-out language
    candidates = {u: {s: v for s, v in similarity[u].items() if s != held_out} for u in train}
    priors = {u: transfer_prior(errors, {held_out, u}) for u in train}
    best_w, best = 0.0, -np.inf
    for w in WEIGHTS:
        blended = {u: _blend(candidates[u], priors[u], w) for u in train}
        value = evaluate_ranking(blended, {u: errors[u] for u in train}, k,
                                 {u: tied[u] for u in train if u in tied})["summary"][f"ndcg@{k}"]
        if value > best + 1e-12:
            best_w, best = float(w), value
    return best_w


def with_prior(similarity: dict[str, dict[str, float]], errors: dict[str, dict[str, float]],
               tied: dict[str, set[str]] | None = None, k: int = 3) -> tuple[dict[str, dict[str, float]],
                                                                                dict[str, float]]:
    """A similarity predictor (target -> source -> score) blended with the transfer prior, leave-one-out: (scores,
    the weight fitted for each target). Targets without measured cells, or with fewer than 2 sources that the other
    targets measured, are left out."""
    tied = tied or {}
    scores, weights = {}, {}
    for t in sorted(similarity):
        prior = transfer_prior(errors, {t})
        if t not in errors or sum(s in prior for s in similarity[t]) < 2:
            continue
        w = fit_weight(similarity, errors, tied, t, k)
        scores[t] = _blend(similarity[t], prior, w)
        weights[t] = w
    return scores, weights
