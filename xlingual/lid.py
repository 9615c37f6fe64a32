"""Language identification: a classifier over the source languages, its posteriors and utterance embeddings.

The reference method ranks pre-training sources by how much a target language "sounds like" each of them: an LID
model is trained on the source languages, run over the target's speech, and each source's posterior averaged over
the target's frames. The model is the ASR AcousticModel (conformer encoder) with one output per language and two
heads, trained together:
  - a frame head: a language posterior for every 40 ms frame (the reference's frame posteriors, averaged by the
    ranking), trained with frame-level cross-entropy (weight `LIDConfig.frame_weight`);
  - an utterance head: attentive statistics pooling over the frames -> an embedding (`LIDConfig.embed_dim`) ->
    languages, trained with utterance-level cross-entropy. It decides an utterance's language, and its embeddings
    give a similarity between a new language's speech and each source's.
With embed_dim 0 the model has the frame head only (the reference's design) and an utterance's decision is the
argmax of its mean frame posterior.

    ckpt = recipe.train_lid(load_config(LIDConfig, "recipes/synthetic/lid.yaml"))
    out = posteriors_for(*load_lid(ckpt), utterances)   # LIDOutputs: frame posteriors, pooled, embeddings
"""

from __future__ import annotations

import csv
import io
import itertools
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import FeatureConfig, LIDConfig, from_dict, to_dict
from .corpus import Utterance, total_hours
from .features import FeatureStore, cache_dir, compute_features
from .fileio import read_json, write_json, write_text
from .model import AcousticModel, padding_mask
from .runspec import RunSpec
from .train import FRAMES_PER_SECOND, Example, Setup, bucket_batches, collate, pick_device

SELECT = {"dev_acc": "max", "dev_loss": "min"}  # LIDConfig.select -> direction
MAX_OVERSAMPLE = 8  # a language is repeated at most this many times per epoch (tiny languages would dominate noise)
INFER_BATCH_SECONDS = 300.0  # audio seconds per inference batch


# --------------------------------------------------------------------------------------------------------------
# Training


def check_languages(languages: list[str]) -> None:
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


def setup_lid(spec: RunSpec, data: dict, out_dir: Path) -> Setup:
    """An LID model over spec.languages (class i = languages[i]) with balanced examples and a dev evaluator."""
    from .asr import new_model
    from .checkpoint import model_meta

    cfg, languages = spec.lid, list(spec.languages)
    check_languages(languages)
    features = spec.features or FeatureConfig()
    label: dict[str, int] = {}
    for i, lang in enumerate(languages):
        for u in data[lang]["train"] + data[lang]["dev"]:
            if label.setdefault(u.id, i) != i:
                raise ValueError(f"utterance id {u.id!r} occurs in two languages ({languages[label[u.id]]}, {lang}); "
                                 f"LID needs ids unique across languages (prefix them with the language code)")
    train = [u for lang in languages for u in data[lang]["train"]]
    dev = [u for lang in languages for u in data[lang]["dev"]]
    cache, progress = cache_dir(spec.corpus), spec.train.progress
    store = compute_features(train, cache, features, progress=progress, desc="LID train feats")
    dev_store = compute_features(dev, cache, features, progress=progress, desc="LID dev feats")
    repeats = repeats_for_balance({lang: total_hours(data[lang]["train"]) for lang in languages}, cfg.oversample)
    crop = int(cfg.crop_seconds * FRAMES_PER_SECOND)
    per_language = [[Example(u.id, crop or store.num_frames(u.id), label[u.id], crop=crop)
                     for _ in range(repeats[lang]) for u in data[lang]["train"]] for lang in languages]
    # round-robin over the languages: with crops every example budgets the same frames, so batching keeps this
    # order and every batch holds the languages in equal shares (one-language batches make the classifier
    # chase the language of the last batch)
    examples = [e for group in itertools.zip_longest(*per_language) for e in group if e is not None]
    model = new_model(spec.model, features, len(languages), store, [u.id for u in train], spec.train.seed,
                      embed_dim=cfg.embed_dim)
    if cfg.init_from:
        init_encoder(model, cfg.init_from, features)
    if cfg.prlm:
        from .runspec import budget, load_language

        ensure_prlm(cfg, {lang: budget(load_language(spec.corpus, lang)["train"], cfg.prlm_hours, spec.corpus.seed)
                          for lang in languages}, out_dir, cache)
    hours = {lang: round(total_hours(data[lang]["train"]), 4) for lang in languages}
    meta = model_meta(model, "lid", features, languages=languages, train_hours_used=hours, repeats=repeats,
                      config=to_dict(cfg))
    loss = lid_loss(cfg.frame_weight)
    return Setup(model, examples, store, make_lid_evaluator(dev_store, dev, label, loss),
                 (cfg.select, SELECT[cfg.select]), meta, features, loss=loss)


def ensure_prlm(cfg: LIDConfig, train: dict[str, list[Utterance]], out_dir: Path, cache: Path) -> Path:
    """The run's phonotactic back-end (prlm.json beside its checkpoints), built from cfg.init_from's
    transcriptions of the training utterances; rebuilt only when the recognizer or the utterances changed."""
    from .prlm import PRLM_FILE, build_prlm
    from .runspec import data_fingerprint, file_digest

    if not cfg.init_from:
        raise ValueError("lid.prlm needs lid.init_from: the phone recognizer whose transcriptions it models")
    path = out_dir / PRLM_FILE
    stamp = {"recognizer": file_digest(cfg.init_from),
             "train": data_fingerprint([u for utts in train.values() for u in utts])}
    if path.is_file() and read_json(path).get("stamp") == stamp:
        return path
    build_prlm(cfg.init_from, train, path, cache)
    write_json(path, {**read_json(path), "stamp": stamp})
    return path


def init_encoder(model: AcousticModel, checkpoint: str | Path, features: FeatureConfig) -> None:
    """Copy the encoder (CMVN, frontend, conformer layers) of an ASR checkpoint into `model`; its heads stay new.

    Raises:
        ValueError: the checkpoint computes other features or has another encoder shape.
    """
    from .checkpoint import load_model
    from .transfer import check_features

    asr, _, meta = load_model(checkpoint, task="asr")
    check_features(meta.get("features") or {}, features, str(checkpoint))
    mine = {"d_model", "n_heads", "ffn_dim", "n_layers", "conv_kernel", "subsample_channels", "n_mels"}
    diff = {k: (getattr(asr.dims, k), getattr(model.dims, k)) for k in mine
            if getattr(asr.dims, k) != getattr(model.dims, k)}
    if diff:
        raise ValueError(f"lid init_from {checkpoint}: its encoder differs from the LID's model config "
                         f"({', '.join(f'{k}: checkpoint {a} vs LID {b}' for k, (a, b) in diff.items())}); use the "
                         f"same model settings")
    encoder = {k: v for k, v in asr.state_dict().items() if not k.startswith(("head.", "adapters.", "input_net."))}
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    assert not unexpected, unexpected


def lid_loss(frame_weight: float):
    """(model, batch, device) -> mean loss per utterance: utterance-level cross-entropy (utterance head) +
    frame_weight x frame-level cross-entropy (frame head); frame-level only for a model without an utterance head."""
    def loss(net, batch: dict, device: torch.device) -> torch.Tensor:
        feats, lens = batch["feats"].to(device, non_blocking=True), batch["feat_lens"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = net(feats, lens, utterance=True) if _has_head(net) else None
            frame_logits, out_lens = (out["frame_logits"], out["lengths"]) if out else net(feats, lens)
        frame = frame_cross_entropy(frame_logits.float(), out_lens, labels)
        if out is None:
            return frame
        return F.cross_entropy(out["logits"].float(), labels) + frame_weight * frame
    return loss


def _has_head(net) -> bool:
    return bool(getattr(getattr(net, "module", net), "dims").embed_dim)


def frame_cross_entropy(logits: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, T', L), lengths (B,), labels (B,) -> mean over utterances of the mean frame cross-entropy."""
    mask = ~padding_mask(lengths, logits.shape[1])
    ce = F.cross_entropy(logits.transpose(1, 2), labels[:, None].expand(-1, logits.shape[1]), reduction="none")
    return ((ce * mask).sum(1) / lengths).mean()


def make_lid_evaluator(store: FeatureStore, dev: list[Utterance], label: dict[str, int], loss):
    """model -> {"dev_loss", "dev_acc", "dev_post_acc", "dev_frame_acc"} on `dev`.

    dev_loss is the training loss; dev_acc the utterance decision (utterance head, or the mean frame posterior
    without one); dev_post_acc the argmax of the mean frame posterior (what the reference's ranking averages);
    dev_frame_acc the share of single frames right.
    """
    ids = [u.id for u in dev]

    def evaluate(model: torch.nn.Module) -> dict:
        device = next(model.parameters()).device
        examples = [Example(i, store.num_frames(i), label[i]) for i in ids]
        total = 0.0
        for idx in bucket_batches([e.frames for e in examples], int(INFER_BATCH_SECONDS * FRAMES_PER_SECOND), 0, 0):
            total += float(loss(model, collate(store, [examples[i] for i in idx]), device)) * len(idx)
        out = lid_outputs(model, store, ids, device)
        correct = sum(int(out.pooled[i].argmax()) == label[i] for i in ids)
        post = sum(int(out.frame[i].mean(0).argmax()) == label[i] for i in ids)
        frames_right = sum(int((out.frame[i].argmax(1) == label[i]).sum()) for i in ids)
        frames = sum(out.frame[i].shape[0] for i in ids)
        n = max(len(ids), 1)
        return {"dev_loss": total / n, "dev_acc": correct / n, "dev_post_acc": post / n,
                "dev_frame_acc": frames_right / max(frames, 1)}

    return evaluate


def evaluate_lid(checkpoint: str | Path, by_language: dict[str, list[Utterance]], out_dir: str | Path,
                 corpus) -> dict:
    """Accuracy of the LID at `checkpoint` on each language's utterances (a language it does not know counts as
    wrong); writes out_dir/report.json and confusion.csv (rows: true language, columns: predicted)."""
    model, meta = load_lid(checkpoint)
    languages = meta["languages"]
    utts = [u for us in by_language.values() for u in us]
    out = posteriors_for(model, meta, utts, cache_dir(corpus))
    decision = out.fused or out.pooled  # the LID's decision: acoustic x phonotactic when it has a PRLM
    confusion = {t: {p: 0 for p in languages} for t in by_language}
    right = Counter()
    for t, us in by_language.items():
        for u in us:
            confusion[t][languages[int(decision[u.id].argmax())]] += 1
            right["posterior"] += languages[int(out.frame[u.id].mean(0).argmax())] == t
            right["acoustic"] += languages[int(out.pooled[u.id].argmax())] == t
            if out.phonotactic:
                right["phonotactic"] += languages[int(out.phonotactic[u.id].argmax())] == t
    per_lang = {t: confusion[t].get(t, 0) / max(len(us), 1) for t, us in by_language.items()}
    n = max(len(utts), 1)
    report = {"languages": languages, "n_utts": len(utts),
              "accuracy": sum(confusion[t].get(t, 0) for t in by_language) / n,
              "posterior_accuracy": right["posterior"] / n,  # argmax of the mean frame posterior (the reference)
              "acoustic_accuracy": right["acoustic"] / n,  # the utterance head alone
              "phonotactic_accuracy": right["phonotactic"] / n if out.phonotactic else None,  # the PRLM alone
              "per_language_accuracy": per_lang, "confusion": confusion}
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true \\ predicted", *languages])
    for t in by_language:
        w.writerow([t, *(confusion[t][p] for p in languages)])
    write_text(out_dir / "confusion.csv", buf.getvalue())
    return report


# --------------------------------------------------------------------------------------------------------------
# Loading and inference


def lid_learned(ckpt: str | Path) -> bool | None:
    """Whether the LID run that wrote `ckpt` learned (its results.json beside it: dev accuracy clearly above
    chance); None when there is no such record (a checkpoint from elsewhere: nothing to judge it by)."""
    res = Path(ckpt).parent / "results.json"
    if not res.is_file():
        return None
    learned = read_json(res).get("learned")
    return None if learned is None else bool(learned)


def load_lid(path: str | Path) -> tuple[AcousticModel, dict]:
    """Rebuild an LID model from a checkpoint (weights_only); meta["languages"] names its output classes."""
    from .checkpoint import load_model

    from .prlm import PRLM_FILE

    model, _, meta = load_model(path, task="lid")
    model.eval()
    prlm = Path(path).parent / PRLM_FILE
    if prlm.is_file():  # the run's phonotactic back-end: its decisions use it
        meta = {**meta, "prlm": str(prlm)}
    return model, meta


@dataclass
class LIDOutputs:
    """What an LID model says about utterances: per id, frame posteriors (T', L), the utterance posterior (L,)
    (the utterance head's, or the mean frame posterior without one) and the embedding (E,) (empty without a head)."""

    languages: list[str]  # the posteriors' columns
    frame: dict[str, torch.Tensor]
    pooled: dict[str, torch.Tensor]
    embedding: dict[str, torch.Tensor]
    phonotactic: dict[str, torch.Tensor] = field(default_factory=dict)  # the PRLM's posterior (L,), if any
    fused: dict[str, torch.Tensor] = field(default_factory=dict)  # pooled x phonotactic, renormalized (L,)


def lid_outputs(model: AcousticModel, store: FeatureStore, ids: list[str], device: torch.device | None = None,
                max_batch_seconds: float = INFER_BATCH_SECONDS, languages: list[str] | None = None) -> LIDOutputs:
    """Run the model over utterances `ids` in length-bucketed batches (the training loop's batching); on the CPU,
    in the order of `ids`."""
    device = device or next(model.parameters()).device
    examples = [Example(i, store.num_frames(i), 0) for i in ids]
    max_frames = max([int(max_batch_seconds * FRAMES_PER_SECOND)] + [e.frames for e in examples])
    frame, pooled, emb = {}, {}, {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in bucket_batches([e.frames for e in examples], max_frames, seed=0, epoch=0):
                batch = collate(store, [examples[i] for i in idx])
                feats, lens = batch["feats"].to(device), batch["feat_lens"].to(device)
                if model.dims.embed_dim:
                    out = model.utterance(feats, lens)
                    logits, out_lens = out["frame_logits"], out["lengths"]
                else:
                    out, (logits, out_lens) = None, model(feats, lens)
                post = logits.float().softmax(-1).cpu()
                for j, i in enumerate(batch["ids"]):
                    frame[i] = post[j, : int(out_lens[j])]
                    if out is not None:
                        pooled[i] = out["logits"][j].float().softmax(-1).cpu()
                        emb[i] = out["embedding"][j].float().cpu()
                    else:
                        pooled[i] = frame[i].mean(0)
    finally:
        model.train(was_training)
    order = list(ids)
    return LIDOutputs(languages or [], {i: frame[i] for i in order}, {i: pooled[i] for i in order},
                      {i: emb[i] for i in order if i in emb})


def frame_posteriors(model: AcousticModel, store: FeatureStore, ids: list[str],
                     device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Per-utterance frame posteriors: id -> (T', L), each row summing to 1, in the order of `ids`."""
    return lid_outputs(model, store, ids, device).frame


def average_posteriors(posteriors: dict[str, torch.Tensor] | list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average posterior vectors (L,) of a set of utterances' frame posteriors, both ways; each sums to 1.

    "frame": the mean over all frames of all utterances (the reference's score; long utterances weigh more);
    "utterance": the mean of the per-utterance means (each utterance weighs the same).
    """
    posts = list(posteriors.values()) if isinstance(posteriors, dict) else list(posteriors)
    posts = [p for p in posts if p.shape[0] > 0]
    if not posts:
        raise ValueError("no frames to average: empty utterance set")
    return {"frame": torch.cat(posts).double().mean(0).float(),
            "utterance": torch.stack([p.double().mean(0) for p in posts]).mean(0).float()}


def average_scores(out: LIDOutputs, ids: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The averages (L,) over utterances `ids` (default all) at every level: "frame" and "utterance" (frame
    posteriors, see average_posteriors) and "pooled" (the mean utterance-head posterior)."""
    ids = list(out.frame) if ids is None else ids
    avg = average_posteriors([out.frame[i] for i in ids])
    avg["pooled"] = torch.stack([out.pooled[i].double() for i in ids]).mean(0).float()
    return avg


@contextmanager
def _cache_dir(cache: str | Path | None):
    """The given feature cache folder, or a temporary one removed afterwards."""
    if cache is not None:
        yield Path(cache)
        return
    with tempfile.TemporaryDirectory(prefix="xlingual-lid-") as tmp:
        yield Path(tmp)


def posteriors_for(model: AcousticModel, meta: dict, utts: list[Utterance], cache: str | Path | None = None,
                   device: torch.device | str | None = None, progress: bool = False) -> LIDOutputs:
    """LIDOutputs of manifest utterances, with the checkpoint's own feature settings."""
    if not utts:
        raise ValueError("no utterances to score")
    if len({u.id for u in utts}) != len(utts):
        raise ValueError("utterance ids must be unique among the utterances scored together")
    features = from_dict(FeatureConfig, meta["features"], "checkpoint features")
    device = pick_device(device) if isinstance(device, str) else (device or torch.device("cpu"))
    model.to(device)
    with _cache_dir(cache) as folder:
        store = compute_features(utts, folder, features, progress=progress, desc="LID feats")
        out = lid_outputs(model, store, [u.id for u in utts], device, languages=list(meta["languages"]))
        if meta.get("prlm"):
            from .prlm import load_prlm, phonotactic_posteriors, transcribe_phones

            recognizer, lms = load_prlm(meta["prlm"])
            out.phonotactic = phonotactic_posteriors(lms, out.languages, transcribe_phones(recognizer, utts, folder))
            # naive Bayes: the two views' posteriors multiply (uniform prior), then renormalize
            out.fused = {i: (out.pooled[i].double().log() + out.phonotactic[i].double().log()).softmax(0).float()
                         for i in out.pooled}
        return out
