"""Cross-lingual transfer (xlingual/transfer.py): head replacement, shared units, layer transfer, errors, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import FEATS, SPLITS, save_source, write_tiny_corpus
from xlingual.asr import build_tokenizer
from xlingual.checkpoint import load_model
from xlingual.cli import main
from xlingual.config import AdaptConfig, FeatureConfig, TrainConfig, UnitConfig
from xlingual.recipe import adapt_spec
from xlingual.runs import train
from xlingual.runspec import load_language
from xlingual.tokenizer import Tokenizer
from xlingual.transfer import check_adapt_config, choose_units, missing_units


def fast_train(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "max_batch_seconds": 10.0, "lr": 1e-3, "schedule": "stlr", "progress": False,
                          "threads": 1, "device": "cpu", "checkpoint_every_steps": 0, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def bn_source(corpus, tmp_path_factory):
    return save_source(tmp_path_factory.mktemp("src") / "bn.pt", corpus, "bn", UnitConfig(kind="char"))


def run(corpus, source, out, language="tr", units=UnitConfig(kind="char"), features=FEATS, **adapt_kw):
    cfg = AdaptConfig(**{"train": fast_train(), **adapt_kw})
    return train(adapt_spec(source, language, cfg, corpus, units, features), out)


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_new_head_frozen_body_and_source_cmvn(corpus, bn_source, tmp_path):
    best = run(corpus, bn_source, tmp_path / "a", mode="head")
    model, tok, meta = load_model(best)
    target_units = build_tokenizer(load_language(corpus, "tr")["train"], UnitConfig(kind="char")).units
    assert tok.units == target_units and model.dims.vocab_size == len(target_units)
    assert meta["kept_head"] is False and meta["language"] == "tr" and meta["source"]["language"] == "bn"
    src, new = state(bn_source), state(best)
    for k, v in src.items():
        if not k.startswith("head."):  # frozen body and CMVN buffers: bit-identical
            assert torch.equal(v, new[k]), k
    assert new["head.weight"].shape[0] == len(target_units) != src["head.weight"].shape[0]
    info = json.loads((tmp_path / "a" / "adapt.json").read_text())
    assert info["plan"] == [[["head"], None]] and info["new_groups"] == ["head"]


def test_same_language_keeps_the_unit_set_and_head(corpus, bn_source, tmp_path):
    best = run(corpus, bn_source, tmp_path / "keep", language="bn", mode="full", lr_decay=None)
    model, tok, meta = load_model(best)
    src_model, src_tok, _ = load_model(bn_source)
    assert meta["kept_head"] is True and tok.units == src_tok.units
    assert model.head.weight.shape == src_model.head.weight.shape
    assert not torch.equal(model.head.weight, src_model.head.weight)  # kept, then fine-tuned
    best = run(corpus, bn_source, tmp_path / "new", language="bn", mode="head", keep_head_if_shared=False)
    assert load_model(best)[2]["kept_head"] is False


def test_ipa_units_are_shared_across_languages_when_covered(corpus, tmp_path):
    both = load_language(corpus, "bn")["train"] + load_language(corpus, "tr")["train"]
    ipa = UnitConfig(kind="ipa")
    multi = save_source(tmp_path / "multi.pt", corpus, "bn", ipa, texts_from=both)
    best = run(corpus, multi, tmp_path / "a", units=ipa, mode="head")
    _, tok, meta = load_model(best)
    assert meta["kept_head"] is True and tok.units == load_model(multi)[1].units
    # a bn-only phone set lacks Turkish phones: a clear error that lists them
    bn_only = save_source(tmp_path / "bn.pt", corpus, "bn", ipa)
    with pytest.raises(ValueError, match=r"lacks \d+ unit\(s\) of the 'tr' training data: .*keep_head_if_shared"):
        run(corpus, bn_only, tmp_path / "b", units=ipa)
    best = run(corpus, bn_only, tmp_path / "c", units=ipa, keep_head_if_shared=False, mode="head")
    assert load_model(best)[2]["kept_head"] is False


def test_missing_units_and_choose_units(corpus):
    tr = load_language(corpus, "tr")["train"]
    tok = Tokenizer("char", ["<blank>", "|", "a", "e"])
    miss = missing_units(tok, tr)
    assert "ü" in miss and "a" not in miss and "|" not in miss
    built, kept = choose_units(tok, "bn", "tr", tr, UnitConfig(kind="char"), keep_if_shared=True)
    assert kept is False and not missing_units(built, tr)  # char units of another language: never shared
    with pytest.raises(ValueError, match="ü"):
        choose_units(tok, "tr", "tr", tr, UnitConfig(kind="char"), keep_if_shared=True)


def test_bottom_k_transfer_reinitializes_the_layers_above(corpus, bn_source, tmp_path):
    best = run(corpus, bn_source, tmp_path / "k1", mode="head", transfer_layers=1)
    src, new = state(bn_source), state(best)
    layer = "encoder.conformer_layers."
    for k in src:
        if k.startswith(layer + "0.") or k.startswith("frontend."):
            assert torch.equal(src[k], new[k]), k  # transferred and frozen
    changed = [k for k in src if k.startswith(layer + "1.") and not torch.equal(src[k], new[k])]
    assert len(changed) > 10  # re-initialized (and trained with the head)
    info = json.loads((tmp_path / "k1" / "adapt.json").read_text())
    assert info["plan"] == [[["head", "layer1"], None]]


def test_adaptation_layers_train_and_reload(corpus, bn_source, tmp_path):
    best = run(corpus, bn_source, tmp_path / "ad", mode="full+adaptation", adaptation=["adapter", "lhuc"],
               bottleneck=4)
    model, _, meta = load_model(best)
    assert meta["adaptation"] == {"kinds": ["adapter", "lhuc"], "bottleneck": 4}
    assert any(k.startswith("adapters.0") for k in model.state_dict())


def test_chain_thaw_plan_and_discriminative_lrs_recorded(corpus, bn_source, tmp_path):
    run(corpus, bn_source, tmp_path / "ct", mode="chain_thaw", train=fast_train(epochs=5))
    info = json.loads((tmp_path / "ct" / "adapt.json").read_text())
    assert [g for g, _ in info["plan"]] == [["head"], ["frontend"], ["layer0"], ["layer1"],
                                            ["frontend", "head", "layer0", "layer1"]]
    log = [json.loads(x) for x in (tmp_path / "ct" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 5


def test_resume_is_a_no_op_once_done(corpus, bn_source, tmp_path):
    best = run(corpus, bn_source, tmp_path / "r", mode="head")
    before = (tmp_path / "r" / "done.json").stat().st_mtime_ns, state(best)["head.weight"]
    run(corpus, bn_source, tmp_path / "r", mode="head")
    assert (tmp_path / "r" / "done.json").stat().st_mtime_ns == before[0]
    assert torch.equal(state(best)["head.weight"], before[1])


@pytest.mark.parametrize("make, kw, error, match", [
    ("missing", {}, FileNotFoundError, "source checkpoint not found"),
    ("foreign", {}, ValueError, "not an xlingual checkpoint"),
    ("garbage", {}, ValueError, "cannot load checkpoint"),
    ("source", {"features": FeatureConfig(n_mels=80)}, ValueError, "n_mels: checkpoint 40 vs config 80"),
    ("source", {"mode": "adaptation"}, ValueError, "adapt.adaptation is empty"),
    ("source", {"adaptation": ["adapter"]}, ValueError, "would stay frozen"),
    ("source", {"transfer_layers": 3}, ValueError, "must be 0..2"),
    ("source", {"mode": "chain_thaw"}, ValueError, "needs at least 5 epochs"),
    ("source", {"mode": "sideways"}, ValueError, "unknown; valid modes"),
])
def test_checkpoint_and_config_mismatch_errors(corpus, bn_source, tmp_path, make, kw, error, match):
    path = {"source": bn_source, "missing": tmp_path / "nope.pt", "foreign": tmp_path / "foreign.pt",
            "garbage": tmp_path / "garbage.pt"}[make]
    if make == "foreign":
        torch.save({"model": {}, "meta": {"toolkit": "other"}}, path)
    elif make == "garbage":
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(error, match=match):
        run(corpus, path, tmp_path / "out", **kw)


def test_check_adapt_config_alone():
    check_adapt_config(AdaptConfig(mode="gradual_unfreeze", train=TrainConfig(epochs=4)), n_layers=2)
    with pytest.raises(ValueError, match="needs at least"):
        check_adapt_config(AdaptConfig(mode="gradual_unfreeze", train=TrainConfig(epochs=3)), n_layers=2)


def test_cli_adapt(corpus, bn_source, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["adapt", str(bn_source), "--language", "tr", "--out", str(out), "--set", f"corpus.dir={corpus.dir}",
            "--set", "corpus.kind=manifests", "--set", "adapt.train.epochs=1", "--set", "adapt.train.progress=false",
            "--set", "adapt.train.threads=1", "--set", "adapt.train.device=cpu", "--set", "adapt.mode=head"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert json.loads(capsys.readouterr().out) == results
    assert results["language"] == "tr" and results["source"]["language"] == "bn"
    assert results["test"]["n_utts"] == SPLITS["test"] and results["dev"]["n_utts"] == SPLITS["dev"]
    assert results["kind"] == "adapt" and results["learned"] is False  # one epoch on tones: flagged, not hidden
    assert (out / "decode_test" / "hyp.txt").is_file() and (out / "config.yaml").is_file()
    assert main(argv[:2] + ["--language", "tr", "--out", str(tmp_path / "x"), "--set", "features.n_mels=80"]
                + argv[6:]) == 2
    assert "n_mels: checkpoint 40 vs config 80" in capsys.readouterr().err


def test_cli_adapt_checks_the_checkpoint_before_touching_the_corpus(tmp_path, capsys):
    corpus_dir = tmp_path / "synthetic"  # kind "synthetic" by default: a corpus would be generated here
    assert main(["adapt", str(tmp_path / "nope.pt"), "--language", "tr", "--out", str(tmp_path / "o"),
                 "--set", f"corpus.dir={corpus_dir}"]) == 2
    assert "source checkpoint not found" in capsys.readouterr().err
    assert not corpus_dir.exists() and not (tmp_path / "o").exists()
