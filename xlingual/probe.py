"""Source ranking by a linear CTC probe: how well does each candidate source's frozen encoder serve the target?

A transferability estimate in the spirit of LEEP / LogME (Nguyen et al. 2020, You et al. 2021), made for CTC: each
source model encodes the target's adaptation utterances once (eval mode, no gradient); a new linear output layer
over the target's units is trained with CTC on the encodings of the train utterances (Adam, seeded) and scored on
those of the dev utterances every few steps; the source's score is minus the lowest dev loss per utterance. The
lowest rather than the last, because a linear layer on 3 minutes of speech over-fits within a few hundred steps,
and its last loss would measure the over-fitting more than the encoder.

Unlike the LID predictors this needs the few transcribed minutes that the adaptation would use (the same train and
dev utterances, the same unit set) and a trained model of every candidate source; it trains no acoustic model, so
it costs one forward pass of each source over those minutes and a few hundred steps of a (d x units) matrix.
The sources never heard the target, so it is leave-one-out by construction. `probe_matrix` scores the single-source
cells that a matrix folder plans, from its source checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .asr import build_tokenizer, make_examples, stores
from .checkpoint import load_model
from .runspec import RunSpec, run_data
from .train import FRAMES_PER_SECOND, bucket_batches, collate


@dataclass(frozen=True)
class ProbeConfig:
    steps: int = 150  # Adam steps of the linear layer, each on the gradient of every train utterance
    lr: float = 0.01  # its learning rate
    eval_every: int = 10  # the dev loss is computed every this many steps; the lowest one scores the source
    batch_seconds: float = 120.0  # audio per batch when encoding (memory only: the steps see every batch)
    seed: int = 0  # the linear layer's initialization


class ProbeError(RuntimeError):
    """A probe that cannot run: a source checkpoint gone, a matrix without single-source cells."""


def encode(model, store, examples, batch_seconds: float) -> list[dict]:
    """Batches of frozen encodings: [{"hidden" (B, T', d), "lengths" (B,), "targets", "target_lens", "n"}]."""
    batches = bucket_batches([e.frames for e in examples], int(batch_seconds * FRAMES_PER_SECOND), seed=0, epoch=0)
    out = []
    model.eval()
    with torch.no_grad():
        for idx in batches:
            b = collate(store, [examples[i] for i in idx])
            hidden, lengths = model.encode(b["feats"], b["feat_lens"])
            out.append({"hidden": hidden, "lengths": lengths, "targets": b["targets"],
                        "target_lens": b["target_lens"], "n": len(idx)})
    return out


def _ctc(head: torch.nn.Linear, b: dict) -> torch.Tensor:
    """Summed CTC loss of the batch under `head` (an utterance too short for its transcript adds 0)."""
    log_probs = head(b["hidden"]).log_softmax(-1).transpose(0, 1)  # (T', B, V)
    return F.ctc_loss(log_probs, b["targets"], b["lengths"], b["target_lens"], blank=0, reduction="sum",
                      zero_infinity=True)


def probe_loss(train: list[dict], dev: list[dict], vocab_size: int, cfg: ProbeConfig = ProbeConfig()) -> float:
    """The lowest dev CTC loss per utterance reached by a linear layer (d -> vocab_size) trained on `train`."""
    torch.manual_seed(cfg.seed)
    head = torch.nn.Linear(train[0]["hidden"].shape[-1], vocab_size)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    n_train, n_dev = sum(b["n"] for b in train), sum(b["n"] for b in dev)
    best = float("inf")
    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        for b in train:  # full-batch steps: the result does not depend on how the utterances were batched
            (_ctc(head, b) / n_train).backward()
        opt.step()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            with torch.no_grad():
                best = min(best, sum(float(_ctc(head, d)) for d in dev) / n_dev)
    return best


@dataclass(frozen=True)
class TargetSet:
    """What every source is probed on for one target: its examples, feature stores and unit count."""
    store: object  # features.FeatureStore of the train utterances
    dev_store: object  # and of the dev utterances
    train: list  # train.Example of the train utterances
    dev: list  # and of the dev utterances (units the set lacks dropped)
    vocab_size: int  # the target's units incl. blank


def target_set(spec: RunSpec, data: dict | None = None) -> TargetSet:
    """The train and dev utterances of an adaptation spec, with its features and a unit set of the target's
    training text (what the adaptation would use); the same for every source of that target."""
    data = data if data is not None else run_data(spec)
    train = [u for lang in spec.languages for u in data[lang]["train"]]
    dev = [u for lang in spec.languages for u in data[lang]["dev"]]
    tokenizer = build_tokenizer(train, spec.units)
    store, dev_store = stores(spec, train, dev, spec.features)
    train_ex, _ = make_examples(train, store, tokenizer)
    dev_ex, _ = make_examples(dev, dev_store, tokenizer, strict=False)
    if not train_ex or not dev_ex:
        raise ProbeError(f"{spec.language}: no train or dev utterance long enough for its transcript")
    return TargetSet(store, dev_store, train_ex, dev_ex, tokenizer.vocab_size)


def probe_source(spec: RunSpec, cfg: ProbeConfig = ProbeConfig(), target: TargetSet | None = None) -> float:
    """Score (minus the probe's dev loss) of spec.source for the target of an adaptation spec, on `target`
    (default: target_set(spec))."""
    source = Path(spec.source)
    if not source.is_file():
        raise ProbeError(f"source checkpoint not found: {source}; the probe needs every candidate source's best.pt "
                         f"(re-run the matrix's sources: `xlingual matrix` retrains a finished source whose "
                         f"checkpoint is gone only where an adaptation still needs it, so give it a fresh out_dir)")
    target = target if target is not None else target_set(spec)
    model, _, _ = load_model(source, task="asr")
    return -probe_loss(encode(model, target.store, target.train, cfg.batch_seconds),
                       encode(model, target.dev_store, target.dev, cfg.batch_seconds), target.vocab_size, cfg)


def probe_matrix(matrix_dir: str | Path, targets: list[str], sources: list[str], cfg: ProbeConfig = ProbeConfig(),
                 progress: bool = True) -> dict[str, dict[str, float]]:
    """{target: {source: probe score}} over the single-source matrix cells (main adaptation, lowest seed) that the
    matrix folder's configuration (matrix.yaml) plans for `targets`, the target itself left out: each cell's spec
    gives the data, units and source checkpoint. Only the sources need to have been trained (in this folder): the
    matrix's targets are set to `targets`, so a folder where only the sources ran serves every target.
    """
    from .config import MatrixConfig, load_config
    from .matrix import plan_cells

    matrix_dir = Path(matrix_dir)
    path = matrix_dir / "matrix.yaml"
    if not path.is_file():
        raise ProbeError(f"{path} not found: the probe reads a matrix folder (`xlingual matrix` writes matrix.yaml)")
    mcfg = load_config(MatrixConfig, path, [f"targets=[{','.join(targets)}]", f"out_dir={matrix_dir}"])
    cells = {}
    for c in plan_cells(mcfg).values():
        for role in c.roles:
            t, s = role.get("target"), role.get("source")
            if role.get("table") == "matrix" and c.kind == "adapt" and t in targets and s in sources and s != t:
                if (t, s) not in cells or c.seed < cells[(t, s)].seed:
                    cells[(t, s)] = c
    if not cells:
        raise ProbeError(f"{matrix_dir}: no single-source matrix cell for targets {targets} and sources {sources}")
    scores: dict[str, dict[str, float]] = {}
    sets: dict[str, TargetSet] = {}  # a target's data, units and features: read once for all its sources
    for (t, s), c in sorted(cells.items()):
        if t not in sets:
            sets[t] = target_set(c.spec)
        scores.setdefault(t, {})[s] = round(probe_source(c.spec, cfg, sets[t]), 4)
        if progress:
            print(f"probe: {t} <- {s}: {scores[t][s]:.2f}", flush=True)
    return scores
