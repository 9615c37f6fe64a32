"""The ranking query: which language to pre-train on for a new target, predicted without training ASR.

`rank_query` runs an LID model over the target's speech (a manifest, an audio folder, or utterances) and ranks
the LID's languages by their average posterior (the reference method), excluding the target's own language. It
shows its evidence: how sure it is (the margin between the first two sources, with a 95% interval and the share of
resamples of the target's utterances that keep the same first source), a warning below MIN_QUERY_SECONDS of
speech, and, given a benchmark's oracle.json (`xlingual rank-eval`): the measured best source(s) where it measured
the target language, and each source's transfer record there (how it served the benchmark's other targets:
transfer_prior.py; it orders sources well but does not pick the best among relatives).
Evaluating predictors against a WER matrix: rank_eval.py; the predictors: predictors.py; the metrics: rank_metrics.py.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter

import numpy as np
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import Utterance, read_manifest, subset_hours, total_hours
from .fileio import read_json
from .lid import LIDOutputs, lid_learned, load_lid, posteriors_for
from .lid_scores import LEVELS

MIN_QUERY_SECONDS = 60.0  # below this much target speech the query warns that its ranking is unstable
N_BOOT = 1000  # resamples of the target's utterances for the margin's interval


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
    margin: float = float("nan")  # score of the first source minus the second's
    margin_interval: tuple[float, float] = (float("nan"), float("nan"))  # 95% over resampled target utterances
    stability: float = float("nan")  # share of resamples whose first source is the same
    warnings: list[str] = field(default_factory=list)  # e.g. too little speech
    measured: dict | None = None  # the benchmark's answer for this language: {"best", "tied", "metric", "errors"}
    record: dict[str, float] | None = None  # source -> its transfer record in the oracle's matrix (1 = best source
    #   of every other target, 0 = worst), the target language left out; None without an oracle

    def to_dict(self) -> dict:
        return {"target": self.target, "language": self.language, "level": self.level,
                "score": "average LID posterior over the target's speech (higher = predicted better source)",
                "ranking": [{"language": s, "score": round(v, 6)} for s, v in self.ranking],
                "excluded": self.excluded, "n_utterances": self.n_utterances, "hours": round(self.hours, 4),
                "margin": round(self.margin, 6), "margin_interval": [round(x, 6) for x in self.margin_interval],
                "stability": round(self.stability, 4), "warnings": self.warnings, "measured": self.measured,
                "record": None if self.record is None else {k: round(v, 4) for k, v in self.record.items()},
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
               cache_dir: str | Path | None = None, device: str | None = None,
               oracle: str | Path | dict | None = None, n_boot: int = N_BOOT, progress: bool = False) -> RankResult:
    """Rank the LID model's languages as pre-training sources for `target` (manifest, audio folder or utterances).

    No ASR training: features of the target plus one LID forward pass. With exclude_self, the target's own
    language (given, or the manifest's majority language) is left out when the LID knows it. oracle: an
    oracle.json (or its content) of a ranking evaluation; where it measured the target's language, its answer is
    returned beside the prediction (RankResult.measured). progress: show the feature extraction (on stderr;
    plain lines when it is not a terminal).
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
        post = posteriors_for(model, meta, utts, cache_dir if cache_dir is not None else Path(tmp) / "feats", device,
                              progress)
    languages = list(meta["languages"])
    keep = [j for j, x in enumerate(languages) if not (exclude_self and x == lang)]
    sums, weights = _utterance_sums(post, [u.id for u in utts], level)  # (U, L), (U,)
    avg = sums.sum(0) / weights.sum()
    scores = {languages[j]: float(avg[j]) for j in keep}
    ranking = ranked(scores)
    res = RankResult(target=name, language=lang, level=level, ranking=ranking, n_utterances=len(utts),
                     hours=total_hours(utts), seconds=0.0, excluded=[x for x in languages if x not in scores])
    if len(ranking) >= 2:
        first, second = languages.index(ranking[0][0]), languages.index(ranking[1][0])
        draws = np.random.default_rng(0).integers(0, len(utts), size=(n_boot, len(utts)))
        boot = sums[draws].sum(1) / weights[draws].sum(1)[:, None]  # (B, L)
        margins = boot[:, first] - boot[:, second]
        res.margin = ranking[0][1] - ranking[1][1]
        res.margin_interval = tuple(float(x) for x in np.quantile(margins, [0.025, 0.975]))
        res.stability = float((boot[:, keep].argmax(1) == keep.index(first)).mean())
    if res.hours * 3600 < MIN_QUERY_SECONDS:
        res.warnings.append(f"only {res.hours * 3600:.1f} s of speech (fewer than {MIN_QUERY_SECONDS:.0f} s): the "
                            f"ranking is unstable; score a few minutes of the target's speech")
    if lid_learned(lid_ckpt) is False:
        res.warnings.append(f"the LID {lid_ckpt} did not learn (its results.json: dev accuracy not clearly above "
                            "chance): this ranking is no evidence; train it longer or on more speech")
    res.measured = measured_answer(oracle, lang)
    res.record = transfer_record(oracle, lang, [s for s, _ in ranking])
    res.seconds = time.perf_counter() - t0
    return res


def _utterance_sums(out: LIDOutputs, ids: list[str], level: str):
    """Per utterance, the summed scores (L,) and the weight they average with: frames ("frame"), or 1."""
    if level == "frame":
        sums = np.stack([out.frame[i].double().sum(0).numpy() for i in ids])
        weights = np.array([out.frame[i].shape[0] for i in ids], dtype=float)
    else:
        per = out.frame if level == "utterance" else None
        sums = np.stack([(per[i].double().mean(0) if per is not None else out.pooled[i].double()).numpy()
                         for i in ids])
        weights = np.ones(len(ids))
    return sums, weights


def measured_answer(oracle: str | Path | dict | None, language: str | None) -> dict | None:
    """{"best", "tied", "metric", "errors"} of `language` in a ranking evaluation's oracle, or None."""
    if oracle is None or language is None:
        return None
    o = read_json(oracle) if not isinstance(oracle, dict) else oracle
    errors = o.get("errors", {}).get(language)
    if not errors:
        return None
    best = min(errors, key=errors.get)
    return {"metric": o.get("metric", "wer"), "best": best, "tied": o.get("tied", {}).get(language, [best]),
            "errors": errors, "source": str(oracle) if not isinstance(oracle, dict) else o.get("matrix_dir")}


def transfer_record(oracle: str | Path | dict | None, language: str | None,
                    sources: list[str]) -> dict[str, float] | None:
    """Each of `sources`' transfer record in the oracle's matrix (transfer_prior.transfer_prior), with `language`
    left out as a target and as a source (as for a new language); None without an oracle or any recorded source."""
    o = read_json(oracle) if oracle is not None and not isinstance(oracle, dict) else oracle
    if not o or not o.get("errors"):
        return None
    from .transfer_prior import transfer_prior

    record = transfer_prior(o["errors"], {language} if language else set())
    return {s: record[s] for s in sources if s in record} or None


def rank_sources(lid_ckpt: str | Path, target: str | Path | list[Utterance], exclude_self: bool = True,
                 **kwargs) -> list[tuple[str, float]]:
    """[(source language, average LID posterior)] best first; see rank_query for the options."""
    return rank_query(lid_ckpt, target, exclude_self, **kwargs).ranking
