"""The linear CTC probe (xlingual/probe.py): it must tell a trained encoder from an untrained one on real speech
(run once with the encodings replaced by zeros: both scores were then equal and the test failed), not depend on how
utterances are batched, and pick a matrix's single-source cells."""

from __future__ import annotations

import json

import pytest
import torch

from xlingual.asr import build_tokenizer, make_examples, stores
from xlingual.checkpoint import load_checkpoint, load_model, save_checkpoint
from xlingual.config import AdaptConfig, CorpusConfig, FeatureConfig, ModelConfig, TrainConfig, to_dict
from xlingual.probe import ProbeConfig, ProbeError, encode, probe_loss, probe_matrix, probe_source
from xlingual.runs import execute
from xlingual.runspec import RunSpec, run_data

MODEL = ModelConfig(preset="tiny", d_model=64, n_heads=2, ffn_dim=128, n_layers=2, subsample_channels=16)
FAST = ProbeConfig(steps=60)


def _spec(corpus, kind="scratch", language="tr", source=None) -> RunSpec:
    return RunSpec(kind=kind, languages=[language], corpus=CorpusConfig(kind="manifests", dir=str(corpus)),
                   features=FeatureConfig(n_mels=40), model=MODEL, source=source,
                   adapt=AdaptConfig() if kind == "adapt" else None,
                   train=TrainConfig(epochs=15, max_batch_seconds=6, lr=5e-3, warmup_steps=20, threads=1,
                                     checkpoint_every_steps=0, progress=False, device="cpu"))


@pytest.fixture(scope="module")
def sources(learning_corpus, tmp_path_factory):
    """best.pt of a tiny tr recognizer (15 epochs) and of the same model with its weights re-initialized."""
    out = tmp_path_factory.mktemp("probe_sources")
    trained = execute(_spec(learning_corpus), out / "trained")
    assert trained["learned"], trained
    ck = load_checkpoint(out / "trained" / "best.pt")
    model, _, _ = load_model(out / "trained" / "best.pt")
    torch.manual_seed(0)
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    ck["model"] = model.state_dict()  # the CMVN buffers stay: only what training learned is undone
    save_checkpoint(out / "untrained.pt", ck)
    return {"trained": out / "trained" / "best.pt", "untrained": out / "untrained.pt"}


def test_probe_tells_a_trained_encoder_from_an_untrained_one(sources, learning_corpus):
    """On tr speech (new voices in dev), the tr recognizer's encoder must serve a fresh CTC layer far better than
    the same architecture untrained: the probe's score is minus the dev loss per utterance."""
    trained = probe_source(_spec(learning_corpus, "adapt", source=str(sources["trained"])), FAST)
    untrained = probe_source(_spec(learning_corpus, "adapt", source=str(sources["untrained"])), FAST)
    assert trained > untrained + 0.25 * abs(untrained), (trained, untrained)


def test_probe_loss_does_not_depend_on_the_batching(sources, learning_corpus):
    spec = _spec(learning_corpus, "adapt", source=str(sources["trained"]))
    data = run_data(spec)
    model, _, _ = load_model(sources["trained"])
    tok = build_tokenizer(data["tr"]["train"], spec.units)
    store, dev_store = stores(spec, data["tr"]["train"], data["tr"]["dev"], spec.features)
    train, _ = make_examples(data["tr"]["train"], store, tok)
    dev, _ = make_examples(data["tr"]["dev"], dev_store, tok, strict=False)
    losses = [probe_loss(encode(model, store, train, seconds), encode(model, dev_store, dev, seconds),
                         tok.vocab_size, FAST) for seconds in (600, 8)]
    assert len(encode(model, store, train, 8)) > 1  # several batches on the second pass
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert probe_source(spec, FAST, data) == pytest.approx(-losses[0], rel=1e-4)


def _cell(out, name, seed, target, source, ckpt, corpus, table="matrix"):
    spec = _spec(corpus, "adapt", language=target, source=str(ckpt))
    (out / name).mkdir(parents=True)
    (out / name / "cell.json").write_text(json.dumps({"name": name, "spec": to_dict(spec)}))
    return {"name": name, "kind": "adapt", "language": target, "seed": seed,
            "roles": [{"table": table, "source": source, "target": target}]}


def test_probe_matrix_scores_each_single_source_cell_once(sources, learning_corpus, tmp_path):
    """The lowest seed of each (target, source) cell of the matrix table; not the target itself, not a pool, not
    another table; a missing checkpoint is named."""
    c = lambda *a, **k: _cell(tmp_path, *a, corpus=learning_corpus, **k)  # noqa: E731
    cells = [c("adapt/bn_to_tr/seed1", 1, "tr", "bn", "missing.pt"),  # a later seed: not used
             c("adapt/bn_to_tr/seed0", 0, "tr", "bn", sources["trained"]),
             c("adapt/th_to_tr/seed0", 0, "tr", "th", sources["untrained"]),
             c("adapt/tr_to_tr/seed0", 0, "tr", "tr", "missing.pt"),  # the target itself
             c("adapt/pool_to_tr/seed0", 0, "tr", "bn+th", "missing.pt"),  # a pool
             c("adapt/bn_to_tr/k1", 0, "tr", "bn", "missing.pt", table="layer_sweep")]
    (tmp_path / "cells.json").write_text(json.dumps({"cells": cells}))
    scores = probe_matrix(tmp_path, ["tr"], ["bn", "th", "tr"], FAST, progress=False)
    assert list(scores) == ["tr"] and set(scores["tr"]) == {"bn", "th"}
    assert scores["tr"]["bn"] > scores["tr"]["th"]  # the trained encoder is ranked first
    with pytest.raises(ProbeError, match="no single-source matrix cell"):
        probe_matrix(tmp_path, ["as"], ["bn"], FAST)
    gone = c("adapt/bn_to_tr/seed0b", 0, "tr", "bn", tmp_path / "gone.pt")
    (tmp_path / "cells.json").write_text(json.dumps({"cells": [gone, cells[2]]}))
    with pytest.raises(ProbeError, match="gone.pt"):
        probe_matrix(tmp_path, ["tr"], ["bn", "th"], FAST)
    (tmp_path / "cells.json").unlink()
    with pytest.raises(ProbeError, match="cells.json not found"):
        probe_matrix(tmp_path, ["tr"], ["bn"], FAST)

