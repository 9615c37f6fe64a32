"""The linear CTC probe (xlingual/probe.py): it must tell a trained encoder from an untrained one on real speech
(run once with the encodings replaced by zeros: both scores were then equal and the test failed), not depend on how
utterances are batched, and pick a matrix's single-source cells."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from xlingual.checkpoint import load_checkpoint, load_model, save_checkpoint
from xlingual.config import AdaptConfig, CorpusConfig, FeatureConfig, ModelConfig, TrainConfig
from xlingual.probe import ProbeConfig, ProbeError, encode, probe_loss, probe_matrix, probe_source, target_set
from xlingual.runs import execute
from xlingual.runspec import RunSpec

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
    model, _, _ = load_model(sources["trained"])
    t = target_set(spec)
    losses = [probe_loss(encode(model, t.store, t.train, seconds), encode(model, t.dev_store, t.dev, seconds),
                         t.vocab_size, FAST) for seconds in (600, 8)]
    assert len(encode(model, t.store, t.train, 8)) > 1  # several batches on the second pass
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert probe_source(spec, FAST, t) == pytest.approx(-losses[0], rel=1e-4)


def test_probe_matrix_scores_the_planned_single_source_cells(sources, learning_corpus, tmp_path):
    """The lowest seed of each (target, source) cell that matrix.yaml plans (its targets set to the asked ones); not
    the target itself, not a later seed (their checkpoints are missing here: using them would fail); a missing
    checkpoint or folder is named."""
    from xlingual.config import MatrixConfig, load_config
    from xlingual.matrix import plan_cells, write_plan
    from helpers import TINY_YAML

    out = tmp_path / "m"
    cfg = load_config(MatrixConfig, TINY_YAML, [
        f"out_dir={out}", "sources=[bn,th,tr]", "targets=[bn]", "seeds=[0,1]", "size_pairs=[]", "variants={}",
        "variant_pairs=[]", "layer_sweep=[]", "sweep_pairs=[]", "target_hours=1.0", f"corpus.dir={learning_corpus}",
        "corpus.kind=manifests"])
    write_plan(out, cfg, plan_cells(cfg))  # planned for target bn: the probe asks for tr
    planned = {c.roles[0]["source"]: Path(c.spec.source) for c in plan_cells(load_config(
        MatrixConfig, out / "matrix.yaml", ["targets=[tr]"])).values()
        if c.kind == "adapt" and c.seed == 0 and c.roles and c.roles[0]["table"] == "matrix"}
    for source, ckpt in (("bn", sources["trained"]), ("th", sources["untrained"])):
        planned[source].parent.mkdir(parents=True)
        shutil.copy(ckpt, planned[source])
    scores = probe_matrix(out, ["tr"], ["bn", "th", "tr"], FAST, progress=False)
    assert list(scores) == ["tr"] and set(scores["tr"]) == {"bn", "th"}
    assert scores["tr"]["bn"] > scores["tr"]["th"]  # the trained encoder is ranked first
    with pytest.raises(ProbeError, match="no single-source matrix cell"):
        probe_matrix(out, ["tr"], ["tr"], FAST)
    planned["th"].unlink()
    with pytest.raises(ProbeError, match="th-.*best.pt"):
        probe_matrix(out, ["tr"], ["bn", "th"], FAST, progress=False)
    with pytest.raises(ProbeError, match="matrix.yaml not found"):
        probe_matrix(tmp_path, ["tr"], ["bn"], FAST)
