"""Self-supervised encoders as sources (xlingual/ssl.py, ssl_encoder.py, ssl_model.py, ssl_cache.py): a tiny randomly
initialized wav2vec 2.0-architecture encoder saved to a local file, adapted end to end (resume, adaptation layers,
freezing plans), the frozen-output cache, and the errors for files of another architecture."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchaudio

import xlingual.ssl_cache as ssl_cache
import xlingual.train as train_mod
from helpers import SPLITS, save_source, write_tiny_corpus
from xlingual.audio import load_audio
from xlingual.checkpoint import CheckpointError, load_checkpoint
from xlingual.cli import main
from xlingual.config import AdaptConfig, SSLConfig, TrainConfig, UnitConfig
from xlingual.runs import execute, train
from xlingual.runspec import RunSpec, config_dict, load_language
from xlingual.schedules import param_groups, plan_for
from xlingual.ssl import check_source, load_ssl_model, model_store, ssl_spec
from xlingual.ssl_encoder import build_encoder, bundle_config, read_encoder, save_encoder, save_pretrained
from xlingual.ssl_model import WAVE_FRAME, model_from_file, waveform_rows

# XLS-R's architecture (layer-norm feature extractor, pre-LN transformer, 320-sample stride) at a tiny width
XLSR_TINY = dict(extractor_mode="layer_norm", extractor_conv_bias=True,
                 extractor_conv_layer_config=[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2,
                 encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16,
                 encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=2, encoder_attention_dropout=0.0,
                 encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0, encoder_dropout=0.1,
                 encoder_layer_norm_first=True, encoder_layer_drop=0.0)
# HuBERT / wav2vec 2.0 base's (group-norm extractor: normalizes over time; post-LN transformer)
HUBERT_TINY = {**XLSR_TINY, "extractor_mode": "group_norm", "extractor_conv_bias": False,
               "encoder_layer_norm_first": False}
WAVLM_TINY = {**HUBERT_TINY, "encoder_num_buckets": 32, "encoder_max_distance": 64}  # + relative position bias


def fast_train(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "max_batch_seconds": 4.0, "lr": 3e-3, "schedule": "stlr", "progress": False,
                          "threads": 1, "device": "cpu", "checkpoint_every_steps": 0, **kw})


def save_tiny(path: Path, config=XLSR_TINY, normalize=True, seed=0) -> Path:
    builder = "wavlm_model" if "encoder_num_buckets" in config else "wav2vec2_model"
    torch.manual_seed(seed)
    return save_encoder(build_encoder(builder, config), config, path, builder, normalize_waveform=normalize,
                        name="tiny")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("enc") / "xlsr_tiny.pt")


def spec_for(corpus, encoder, language="tr", ssl=None, **adapt):
    return ssl_spec(encoder, language, AdaptConfig(**{"train": fast_train(), **adapt}), corpus,
                    UnitConfig(kind="char"), ssl=ssl)


def state(path):
    return load_checkpoint(path)["model"]


def rows_of(utt) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.from_numpy(waveform_rows(load_audio(utt.audio)))
    return rows[None], torch.tensor([rows.shape[0]])


# ----------------------------------------------------------------------------------------------------------------
# The model


@pytest.mark.parametrize("config", [XLSR_TINY, HUBERT_TINY, WAVLM_TINY], ids=["xlsr", "hubert", "wavlm"])
def test_the_model_computes_what_torchaudio_computes(tmp_path, corpus, config):
    """All layers kept, eval mode: SSLModel.encode is torchaudio's Wav2Vec2Model forward (same weights)."""
    path = save_tiny(tmp_path / "e.pt", config, normalize=True)
    enc = read_encoder(path)
    model = model_from_file(enc, None, vocab_size=5).eval()
    ref = build_encoder(enc.builder, config)
    ref.load_state_dict(state(path))
    ref.eval()
    feats, n = rows_of(load_language(corpus, "tr")["train"][0])
    wav = feats.reshape(1, -1)
    with torch.no_grad():
        hidden, out = model.encode(feats, n)
        expected, _ = ref(torch.nn.functional.layer_norm(wav, wav.shape))  # one utterance: no lengths needed
    assert int(out) == expected.shape[1] and torch.allclose(hidden, expected, atol=1e-5)


@pytest.mark.parametrize("config", [HUBERT_TINY, WAVLM_TINY], ids=["hubert", "wavlm"])
def test_outputs_do_not_depend_on_the_batch(tmp_path, corpus, config):
    """A group-norm extractor normalizes over time: it runs on each utterance alone, so padding changes nothing;
    WavLM's attention gets the padding as a key padding mask."""
    model = model_from_file(read_encoder(save_tiny(tmp_path / "h.pt", config)), None, vocab_size=5).eval()
    utts = load_language(corpus, "bn")["train"][:3]
    alone = [rows_of(u) for u in utts]
    lens = torch.cat([n for _, n in alone])
    batch = torch.zeros(len(utts), int(lens.max()), WAVE_FRAME)
    for i, (f, n) in enumerate(alone):
        batch[i, :int(n)] = f[0]
    with torch.no_grad():
        logits, out = model(batch, lens)
        for i, (f, n) in enumerate(alone):
            one, m = model(f, n)
            assert int(out[i]) == int(m[0]) and torch.allclose(logits[i, :int(m[0])], one[0], atol=1e-5)


def test_layer_groups_truncation_and_freezing_plans(encoder):
    enc = read_encoder(encoder)
    model = model_from_file(enc, 1, vocab_size=7)
    assert len(model.encoder.encoder.transformer.layers) == 1 and model.dims.n_layers == 1
    names = [n for n, _ in model.layer_groups()]
    assert names == ["frontend", "layer0", "head"]
    groups = param_groups(model, 1e-3, 2.6)  # every parameter in exactly one group (or it would never train)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 / 2.6 ** 2, 1e-3 / 2.6, 1e-3])
    assert [sorted(s) for s, _ in plan_for("chain_thaw", names, 4)] == [["head"], ["frontend"], ["layer0"],
                                                                        ["frontend", "head", "layer0"]]
    full = model_from_file(enc, None, vocab_size=7)
    before = {k: v.clone() for k, v in full.state_dict().items()}
    full.reinit_layers_from(1, seed=3)
    changed = {k.split(".")[4] for k, v in full.state_dict().items()
               if ".transformer.layers." in k and not torch.equal(v, before[k])}
    assert changed == {"1"}  # only the layer above k; the one below and everything else untouched
    # seeded heads: a cached run and an uncached run of the same seed start from the same head
    a = model_from_file(enc, None, 7, cached=True, seed=5).head.weight
    assert torch.equal(a, model_from_file(enc, None, 7, seed=5).head.weight)


@pytest.mark.parametrize("kw, match", [
    ({"ssl": SSLConfig(layers=3)}, r"ssl.layers=3: .* has 2 transformer layers"),
    ({"adaptation": ["lin"], "mode": "adaptation"}, "transforms filterbank features"),
    ({"transfer_layers": 2, "ssl": SSLConfig(layers=1)}, "must be 0..1"),
    ({"mode": "gradual_unfreeze"}, "needs at least 4 epochs"),
])
def test_settings_that_cannot_work_are_refused_up_front(encoder, kw, match):
    ssl = kw.pop("ssl", SSLConfig())
    with pytest.raises(ValueError, match=match):
        check_source(encoder, AdaptConfig(**{"train": fast_train(), **kw}), ssl)


# ----------------------------------------------------------------------------------------------------------------
# End to end


def test_fine_tuning_with_adapters_learns_resumes_bit_identical_and_scores(corpus, encoder, tmp_path, monkeypatch):
    spec = spec_for(corpus, encoder, mode="full+adaptation", adaptation=["adapter", "lhuc"],
                    train=fast_train(epochs=3, checkpoint_every_steps=1))
    reference = train(spec, tmp_path / "ref")
    history = [json.loads(x) for x in (tmp_path / "ref" / "train_log.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # it learns (CTC from a random head falls fast)

    real, calls = train_mod.compute_loss, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # stands in for a kill between two steps (mid epoch 2)
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "compute_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, tmp_path / "killed")
    monkeypatch.setattr(train_mod, "compute_loss", real)
    assert (tmp_path / "killed" / "last.pt").is_file() and not (tmp_path / "killed" / "done.json").exists()
    results = execute(spec, tmp_path / "killed")
    ref, resumed = state(tmp_path / "ref" / "last.pt"), state(tmp_path / "killed" / "last.pt")
    assert ref.keys() == resumed.keys() and all(torch.equal(ref[k], resumed[k]) for k in ref)

    assert results["kind"] == "ssl" and results["language"] == "tr" and isinstance(results["learned"], bool)
    assert results["test"]["n_utts"] == SPLITS["test"] and results["dev"]["n_utts"] == SPLITS["dev"]
    assert results["source"]["name"] == "tiny" and results["source"]["builder"] == "wav2vec2_model"
    assert results["adapt"] == {"mode": "full+adaptation", "transfer_layers": None,
                                "adaptation": ["adapter", "lhuc"], "kept_head": False}
    assert (tmp_path / "killed" / "decode_test" / "hyp.txt").is_file()

    model, tok, meta = load_ssl_model(reference)
    assert meta["adaptation"]["kinds"] == ["adapter", "lhuc"] and meta["ssl"]["cached"] is False
    src, new = state(encoder), state(reference)
    extractor = [k for k in src if k.startswith("feature_extractor.")]
    assert extractor and all(torch.equal(src[k], new["encoder." + k]) for k in extractor)  # frozen throughout
    assert not torch.equal(src["encoder.transformer.layers.0.feed_forward.output_dense.weight"],
                           new["encoder.encoder.transformer.layers.0.feed_forward.output_dense.weight"])
    assert any(k.startswith("adapters.0.0.up") and v.abs().sum() > 0 for k, v in new.items())  # adapters moved
    info = json.loads((tmp_path / "ref" / "adapt.json").read_text())
    assert info["plan"] == [[["adaptation", "frontend", "head", "layer0", "layer1"], None]]

    again = execute(spec, tmp_path / "killed")  # finished: reused, not retrained
    assert again["key"] == results["key"]


def test_head_only_trains_on_cached_encoder_outputs_reused_by_later_targets(corpus, encoder, tmp_path, monkeypatch):
    calls = []
    real = ssl_cache._EncoderOutputs.__call__
    monkeypatch.setattr(ssl_cache._EncoderOutputs, "__call__", lambda self, wav: calls.append(1) or real(self, wav))

    tr = execute(spec_for(corpus, encoder, "tr", mode="head"), tmp_path / "tr")
    assert len(calls) == sum(SPLITS.values())  # tr's train, dev and test utterances, each encoded once
    best = tmp_path / "tr" / "best.pt"
    assert set(state(best)) == {"head.weight", "head.bias"}  # the head alone: the encoder is the "feature"
    assert tr["kind"] == "ssl" and tr["test"]["n_utts"] == SPLITS["test"]

    # the cache holds exactly what the encoder computes for the utterance alone
    model, _, meta = load_ssl_model(best)
    utt = load_language(corpus, "tr")["train"][0]
    store = model_store(model, meta, [utt], corpus)
    full = model_from_file(read_encoder(encoder), None, 1).eval()
    with torch.no_grad():
        hidden, _ = full.encode(*rows_of(utt))
    assert torch.allclose(store[utt.id], hidden[0], atol=1e-6)

    calls.clear()
    execute(spec_for(corpus, encoder, "bn", mode="head"), tmp_path / "bn")  # a second target: only its own
    assert len(calls) == sum(SPLITS.values())
    calls.clear()
    # another seed on tr, and the two targets pooled: every utterance is cached already
    execute(spec_for(corpus, encoder, "tr", mode="head", train=fast_train(seed=1)), tmp_path / "tr1")
    pooled = RunSpec(kind="ssl", languages=["tr", "bn"], corpus=corpus, units=UnitConfig(kind="char"),
                     train=fast_train(), adapt=AdaptConfig(mode="head", train=fast_train()), source=str(encoder))
    assert execute(pooled, tmp_path / "pool")["language"] == "tr+bn"
    assert calls == []

    # decoding a manifest with the head-only model reads the same cache (xlingual decode)
    assert main(["decode", str(best), str(Path(corpus.dir) / "tr" / "test.jsonl"), "--out", str(tmp_path / "d")]) == 0
    assert calls == [] and (tmp_path / "d" / "hyp.txt").is_file()

    # without the cache, the encoder runs in every step (frozen, without autograd) and the same head trains
    execute(spec_for(corpus, encoder, "tr", mode="head", ssl=SSLConfig(cache_features=False)), tmp_path / "nc")
    new = state(tmp_path / "nc" / "best.pt")
    assert "head.weight" in new and all(torch.equal(v, state(encoder)[k[len("encoder."):]])
                                        for k, v in new.items() if k.startswith("encoder."))


def test_cli_adapt_takes_an_encoder_file_and_decode_reads_its_model(corpus, encoder, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["adapt", str(encoder), "--language", "tr", "--out", str(out), "--set", f"corpus.dir={corpus.dir}",
            "--set", "corpus.kind=manifests", "--set", "adapt.train.epochs=2", "--set", "adapt.train.progress=false",
            "--set", "adapt.train.threads=1", "--set", "adapt.train.device=cpu", "--set", "adapt.mode=gradual_unfreeze",
            "--set", "adapt.stage_epochs=1", "--set", "adapt.train.max_batch_seconds=4", "--set", "ssl.layers=1"]
    # gradual unfreezing over frontend, layer0, head needs 3 epochs: refused before anything is written
    assert main(argv) == 2 and "needs at least 3 epochs" in capsys.readouterr().err and not out.exists()
    argv[argv.index("adapt.train.epochs=2")] = "adapt.train.epochs=3"
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert json.loads(capsys.readouterr().out) == results and results["kind"] == "ssl"
    info = json.loads((out / "adapt.json").read_text())
    assert info["layers"] == 1 and [g for g, _ in info["plan"]] == [["head"], ["head", "layer0"],
                                                                     ["frontend", "head", "layer0"]]
    assert main(["decode", str(out / "best.pt"), str(Path(corpus.dir) / "tr" / "dev.jsonl"), "--out",
                 str(tmp_path / "dec")]) == 0
    assert json.loads((tmp_path / "dec" / "summary.json").read_text())["n_utts"] == SPLITS["dev"]


# ----------------------------------------------------------------------------------------------------------------
# Files of another kind or architecture


def _write(kind: str, tmp_path: Path, corpus) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "fewer_layers":  # weights of a 2-layer encoder, config of a 3-layer one
        torch.manual_seed(0)
        model = build_encoder("wav2vec2_model", XLSR_TINY)
        ck = {**load_checkpoint(save_encoder(model, XLSR_TINY, path)), "config": {**XLSR_TINY, "encoder_num_layers": 3}}
        torch.save(ck, path)
    elif kind == "hubert_weights":  # a group-norm (HuBERT-style) encoder's weights under an XLS-R config
        ck = load_checkpoint(save_tiny(path, HUBERT_TINY))
        torch.save({**ck, "config": {**XLSR_TINY, "extractor_conv_layer_config": ck["config"][
            "extractor_conv_layer_config"]}}, path)
    elif kind == "bare":
        torch.save(build_encoder("wav2vec2_model", XLSR_TINY).state_dict(), path)
    elif kind == "conformer":
        save_source(path, corpus, "bn", UnitConfig(kind="char"))
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind, error, match", [
    ("fewer_layers", CheckpointError, r"weights are not those of the wav2vec2_model its config describes \(3 "
                                      r"transformer layers.*missing, e\.g\. encoder\.transformer\.layers\.2"),
    ("hubert_weights", CheckpointError, r"weights are not those of the wav2vec2_model.*(missing|unexpected)"),
    ("bare", CheckpointError, "holds a bare state dict .* without the builder config"),
    ("conformer", CheckpointError, "is an xlingual conformer checkpoint, not a self-supervised encoder"),
    ("garbage", CheckpointError, "cannot load SSL encoder"),
    ("folder", IsADirectoryError, "is a folder; convert a Hugging Face checkpoint"),
    ("missing", FileNotFoundError, "SSL encoder checkpoint not found"),
])
def test_a_file_of_another_architecture_is_a_clear_error(corpus, tmp_path, kind, error, match):
    path = _write(kind, tmp_path, corpus)
    with pytest.raises(error, match=match) as e:
        read_encoder(path)
    assert str(path) in str(e.value)  # names the file
    assert kind == "conformer" or "ssl-save" in str(e.value)  # and says how to make a good one


def test_cli_adapt_refuses_a_wrong_encoder_before_touching_anything(corpus, tmp_path, capsys):
    path = _write("fewer_layers", tmp_path, corpus)
    corpus_dir = tmp_path / "synthetic"  # kind "synthetic" by default: a corpus would be generated here
    assert main(["adapt", str(path), "--language", "tr", "--out", str(tmp_path / "o"),
                 "--set", f"corpus.dir={corpus_dir}"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "weights are not those of" in err and "ssl-save" in err
    assert not corpus_dir.exists() and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------------
# Getting real encoders (no download here: torchaudio's bundle configs, a stand-in bundle, the optional importer)


@pytest.mark.parametrize("name, builder, width, normalize", [("WAV2VEC2_XLSR_300M", "wav2vec2_model", 1024, True),
                                                              ("HUBERT_BASE", "wav2vec2_model", 768, False),
                                                              ("WAVLM_BASE", "wavlm_model", 768, False)])
def test_bundle_configs_build_the_models_ssl_save_writes(name, builder, width, normalize):
    """The README's command relies on torchaudio keeping a bundle's builder arguments (no download here)."""
    got_builder, config, norm = bundle_config(name)
    assert (got_builder, config["encoder_embed_dim"], norm) == (builder, width, normalize)
    model = build_encoder(builder, {**config, "encoder_num_layers": 1})  # one layer: the shapes, cheaply
    assert model.encoder.transformer.layers[0].attention is not None


def test_ssl_save_writes_a_bundle_as_an_encoder_file(tmp_path, monkeypatch, capsys):
    base = torchaudio.pipelines.WAV2VEC2_XLSR_300M
    torch.manual_seed(0)
    tiny = build_encoder("wav2vec2_model", XLSR_TINY)
    # a bundle as torchaudio defines it, whose download is replaced by the tiny model
    fake = replace(base, _params=dict(XLSR_TINY))
    monkeypatch.setattr(type(fake), "get_model", lambda self, **kw: tiny)
    monkeypatch.setattr(torchaudio.pipelines, "TINY_TEST_BUNDLE", fake, raising=False)
    out = tmp_path / "tiny.pt"
    assert main(["ssl-save", "TINY_TEST_BUNDLE", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["layers"] == 2 and printed["normalize_waveform"] is True
    enc = read_encoder(out)
    assert enc.name == "TINY_TEST_BUNDLE" and all(torch.equal(v, tiny.state_dict()[k]) for k, v in enc.state.items())


def test_a_hugging_face_name_without_transformers_says_what_to_install(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *a, **k):
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    assert main(["ssl-save", "facebook/wav2vec2-xls-r-300m", str(tmp_path / "x.pt")]) == 2
    assert "pip install transformers" in capsys.readouterr().err


def test_a_hugging_face_checkpoint_converts_through_torchaudio(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
                                      feat_extract_norm="layer")
    transformers.Wav2Vec2Model(cfg).save_pretrained(tmp_path / "hf")
    enc = read_encoder(save_pretrained(str(tmp_path / "hf"), tmp_path / "hf.pt"))
    assert enc.n_layers == 2 and enc.d_model == 32


# ----------------------------------------------------------------------------------------------------------------
# Run keys


def test_other_kinds_keep_their_configuration_hash(corpus, encoder):
    """SSL sources add a spec field; the configuration of every other kind (matrix config hashes, which
    --reuse-stale-code compares) must be what it was before."""
    for spec in (RunSpec(kind="scratch", languages=["bn"]),
                 RunSpec(kind="adapt", languages=["bn"], adapt=AdaptConfig(), source="x.pt")):
        assert "ssl" not in config_dict(spec)
    d = config_dict(spec_for(corpus, encoder, mode="head"))
    assert d["ssl"] == {"layers": None, "freeze_extractor": True, "mask_time_prob": 0.05, "mask_time_length": 10,
                        "cache_features": True} and len(d["source"]) == 16  # the encoder file's content hash
    assert WAVE_FRAME == 160  # 10 ms at 16 kHz: the rows the training loop batches as frames
