"""Predictors of the best pre-training source for a target: scores target -> source -> float (higher = better).

  - LID (the reference method): the average posterior of source s over the target's frames, from an LID model
    trained on the sources; "in_set" (the target among the LID's languages, its own column excluded) or "loo"
    (an LID retrained without the target, so the target is truly new);
  - LID utterance embeddings: the cosine similarity of the target speech's mean embedding and each source
    speech's, under an LID that never heard the target (the utterance head's pooled representation);
  - phonotactics (the classic PRLM idea): a multilingual IPA phone recognizer trained on the sources (without
    the target) transcribes the target's speech and each source's; the phone n-gram distributions are compared
    (score = minus the Jensen-Shannon distance, averaged over n = 1..order);
  - a combination: the mean of the predictors' within-target normalized ranks (a fixed rule, nothing fitted);
  - unit-inventory overlap (characters, IPA phones) between the target's and the source's transcripts;
  - typological similarity from URIEL (lang2vec's data files).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .config import LIDConfig, PhonotacticConfig
from .corpus import Utterance
from .lid import LIDOutputs, average_scores, load_lid, posteriors_for
from .recipe import phone_recognizer_spec, train_lid
from .lid_scores import ScoreMatrix, matrix_from_outputs
from .transfer_prior import normalized_ranks

INVENTORY_KINDS = ("char", "ipa")

INVENTORY_METRICS = ("jaccard", "coverage")

TYPOLOGY_SETS = {  # name -> (lang2vec data file, feature-name prefix); similarity = cosine of the feature vectors
    "syntax": ("feature_predictions.npz", "S_"),  # kNN-completed WALS/SSWL/Ethnologue syntax features
    "phonology": ("feature_predictions.npz", "P_"),  # kNN-completed phonological features
    "inventory": ("feature_predictions.npz", "INV_"),  # kNN-completed phoneme inventory (PHOIBLE) features
    "genetic": ("family_features.npz", "F_"),  # Glottolog family-tree membership
    "geographic": ("geocoord_features.npz", ""),  # distances to fixed points on the globe
}


def lid_scores(lid_ckpt: str | Path, targets: dict[str, list[Utterance]], level: str = "frame",
               cache_dir: str | Path | None = None, device: str | None = None) -> tuple[dict, ScoreMatrix]:
    """target -> LID language -> average posterior, for each target's utterances (and the ScoreMatrix)."""
    model, meta = load_lid(lid_ckpt)
    utts = [u for us in targets.values() for u in us]
    out = posteriors_for(model, meta, utts, cache_dir, device)
    m = matrix_from_outputs(out, {t: [u.id for u in us] for t, us in targets.items()})
    return m.table(level), m


def loo_config(cfg: LIDConfig, target: str, root: str | Path | None = None,
               init_from: str | Path | None = None) -> LIDConfig:
    """The LID configuration without `target` (out_dir: <root or cfg.out_dir/loo>/without_<target>); init_from:
    an encoder that never heard the target either (that fold's phone recognizer)."""
    if init_from is not None:  # that fold's recognizer: the LID's encoder and its PRLM back-end
        cfg = replace(cfg, init_from=str(init_from), prlm=True)
    if target not in cfg.languages:
        return cfg
    langs = [x for x in cfg.languages if x != target]
    root = Path(root) if root is not None else Path(cfg.out_dir) / "loo"
    return replace(cfg, languages=langs, out_dir=str(root / f"without_{target}"))


def train_loo_lids(cfg: LIDConfig, targets: list[str], root: str | Path | None = None,
                   init_from: dict[str, Path] | None = None, jobs: int = 1) -> dict[str, Path]:
    """One LID per target, trained without it (cached: a finished model is reused); target -> best.pt.

    A target that is not among cfg.languages is already new to cfg's LID, which is trained (or reused) as is.
    init_from: per target, the encoder to start from (must not have heard the target). jobs: folds trained at
    once, each in its own process (set cfg.train.threads so that jobs x threads fits the cores).
    Whether each learned is in its results.json (lid.lid_learned): callers decide what an unlearned one is worth.
    """
    configs = {}
    for t in targets:
        sub = loo_config(cfg, t, root, (init_from or {}).get(t))
        if len(sub.languages) < 2:
            raise ValueError(f"leaving {t!r} out leaves fewer than 2 LID languages: {sub.languages}")
        configs[t] = sub
    return dict(zip(configs, _in_processes(train_lid, list(configs.values()), jobs)))


def _in_processes(fn, args: list, jobs: int) -> list:
    """[fn(a) for a in args], in up to `jobs` worker processes (spawned: a clean torch in each)."""
    if jobs <= 1 or len(args) <= 1:
        return [fn(a) for a in args]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, args))


def loo_scores(ckpts: dict[str, str | Path], targets: dict[str, list[Utterance]], level: str = "frame",
               cache_dir: str | Path | None = None, device: str | None = None) -> dict[str, dict[str, float]]:
    """target -> source -> average posterior under the LID model that never saw the target."""
    out = {}
    for t, ckpt in ckpts.items():
        if t in targets:
            table, _ = lid_scores(ckpt, {t: targets[t]}, level, cache_dir, device)
            out[t] = table[t]
    return out


def loo_lid_predictors(ckpts: dict[str, str | Path], targets: dict[str, list[Utterance]],
                       sources: dict[str, list[Utterance]], cache_dir: str | Path | None = None,
                       device: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """From each target's leave-one-out LID: {"lid_frame", "lid_pooled", "embedding"} -> target -> source -> score.

    lid_frame: the mean frame posterior of each source over the target's frames (the reference method);
    lid_pooled: the mean utterance-head posterior; lid_fused / prlm (an LID with a phonotactic back-end): the mean
    fused / phonotactic posterior; embedding: cosine(mean target embedding, mean embedding of the source's own
    speech, `sources[s]`), all under the LID that never heard the target.
    """
    out: dict[str, dict] = {"lid_frame": {}, "lid_pooled": {}, "lid_fused": {}, "prlm": {}, "embedding": {}}
    for t, ckpt in ckpts.items():
        if t not in targets:
            continue
        model, meta = load_lid(ckpt)
        langs = [x for x in meta["languages"] if x != t]
        utts = list(targets[t]) + [u for s in langs for u in sources.get(s, [])]
        res = posteriors_for(model, meta, _unique(utts), cache_dir, device)
        tgt = [u.id for u in targets[t]]
        avg = average_scores(res, tgt)
        out["lid_frame"][t] = {s: float(avg["frame"][meta["languages"].index(s)]) for s in langs}
        out["lid_pooled"][t] = {s: float(avg["pooled"][meta["languages"].index(s)]) for s in langs}
        for name, per in (("lid_fused", res.fused), ("prlm", res.phonotactic)):  # with a PRLM back-end
            if per:
                mean = torch.stack([per[i] for i in tgt]).double().mean(0)
                out[name][t] = {s: float(mean[meta["languages"].index(s)]) for s in langs}
        if res.embedding:
            centre = _mean_embedding(res, tgt)
            out["embedding"][t] = {s: _cosine(centre, _mean_embedding(res, [u.id for u in sources[s]]))
                                   for s in langs if sources.get(s)}
    return {k: v for k, v in out.items() if v}


def _unique(utts: list[Utterance]) -> list[Utterance]:
    return list({u.id: u for u in utts}.values())


def _mean_embedding(res: LIDOutputs, ids: list[str]) -> np.ndarray:
    return np.stack([res.embedding[i].numpy() for i in ids]).mean(0)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


# --------------------------------------------------------------------------------------------------------------
# Phonotactics: a multilingual phone recognizer per target, trained without it


def train_loo_phone_recognizers(cfg: PhonotacticConfig, languages: list[str], targets: list[str],
                                jobs: int = 1) -> dict[str, Path]:
    """One recognizer per target on the other `languages` (cached runs under cfg.out_dir/without_<t>); -> best.pt.

    A recognizer that did not learn is no evidence: the target is then left without phonotactic scores.
    jobs: recognizers trained at once, each in its own process.
    """
    from .runspec import prepare_corpus

    prepare_corpus(cfg.corpus, languages, cfg.train.progress)
    jobs_args = [(phone_recognizer_spec(cfg, [x for x in languages if x != t]), Path(cfg.out_dir) / f"without_{t}")
                 for t in targets]
    results = _in_processes(_execute_quietly, jobs_args, jobs)
    return {t: folder / "best.pt" for t, (_, folder), res in zip(targets, jobs_args, results) if res["learned"]}


def _execute_quietly(args) -> dict:
    from .runs import execute

    spec, folder = args
    return execute(spec, folder, splits=())


def phone_ngrams(ckpt: str | Path, utts: list[Utterance], order: int, cache_dir: str | Path) -> list[Counter]:
    """Counts of phone n-grams (n = 1..order; "|" marks word boundaries, "^"/"$" utterance edges) in the
    recognizer's greedy transcriptions of `utts`."""
    from .checkpoint import load_model
    from .config import FeatureConfig, from_dict
    from .decode import transcribe
    from .features import compute_features

    model, tok, meta = load_model(ckpt, task="asr")
    store = compute_features(utts, cache_dir, from_dict(FeatureConfig, meta["features"]), progress=False)
    hyps = transcribe(model, store, [u.id for u in utts], tok)
    counts = [Counter() for _ in range(order)]
    for text in hyps.values():
        phones = ["^", *tok.split(text), "$"]
        for n in range(1, order + 1):
            counts[n - 1].update(tuple(phones[i:i + n]) for i in range(len(phones) - n + 1))
    return counts


def js_distance(p: Counter, q: Counter) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count distributions over their joint support."""
    from scipy.spatial.distance import jensenshannon

    keys = sorted(set(p) | set(q))
    a = np.array([p.get(k, 0) for k in keys], dtype=float)
    b = np.array([q.get(k, 0) for k in keys], dtype=float)
    if a.sum() == 0 or b.sum() == 0:
        return 1.0
    return float(jensenshannon(a / a.sum(), b / b.sum(), base=2))


def phonotactic_scores(ckpts: dict[str, str | Path], targets: dict[str, list[Utterance]],
                       sources: dict[str, list[Utterance]], order: int, cache_dir: str | Path) -> dict:
    """target -> source -> minus the mean (over n = 1..order) Jensen-Shannon distance between the phone n-gram
    distributions of the target's speech and the source's, both transcribed by the recognizer without the target."""
    out = {}
    for t, ckpt in ckpts.items():
        if t not in targets:
            continue
        tgt = phone_ngrams(ckpt, targets[t], order, cache_dir)
        out[t] = {}
        for s, utts in sources.items():
            if s != t and utts:
                src = phone_ngrams(ckpt, utts, order, cache_dir)
                out[t][s] = -float(np.mean([js_distance(a, b) for a, b in zip(tgt, src)]))
    return out


def combine(predictors: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The mean of the predictors' within-target normalized ranks (best source 1, worst 0): a fixed rule with
    nothing fitted, so it is leave-one-out whenever its parts are. A target or source missing from any part is
    left out."""
    out = {}
    for t in set.intersection(*(set(p) for p in predictors)) if predictors else ():
        sources = sorted(set.intersection(*(set(p[t]) for p in predictors)))
        if len(sources) < 2:
            continue
        ranks = [normalized_ranks({s: p[t][s] for s in sources}) for p in predictors]
        out[t] = {s: float(np.mean([r[s] for r in ranks])) for s in sources}
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
    """The data folder that the lang2vec wheel ships (its module needs pkg_resources; the data files do not).

    Found through the installed distribution, not the import system: the wheel also installs a console script
    bin/lang2vec.py, and when xlingual runs as its own console script, bin/ is sys.path[0], so `lang2vec` resolves
    to that script and the package's data look missing.
    """
    from importlib import metadata

    try:
        data = Path(metadata.distribution("lang2vec").locate_file("lang2vec/data"))
    except metadata.PackageNotFoundError:
        raise ImportError("typology needs the `lang2vec` package (its wheel ships the URIEL data): "
                          "pip install lang2vec") from None
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
