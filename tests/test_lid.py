import csv
from dataclasses import replace
import json

import pytest
import torch
import yaml

from helpers import build_corpus, split_utts, tiny_lid_config
from xlingual.cli import main
from xlingual.config import ConfigError, LIDConfig, load_config, to_dict
from xlingual.features import compute_features
from xlingual.lid import average_posteriors, frame_posteriors, load_lid, repeats_for_balance
from xlingual.recipe import train_lid
from xlingual.lid_scores import ScoreMatrix, matrix_markdown, read_score_matrix, score_matrix, write_score_matrix
from xlingual.model import subsampled_lengths

LANGS = ["bn", "tr", "th"]


@pytest.fixture(scope="module")
def lid_run(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "lid_shared"
    corpus = build_corpus(root / "corpus")
    cfg = tiny_lid_config(corpus, root / "lid")
    return cfg, train_lid(cfg), corpus


def test_train_lid_writes_checkpoint_reports_and_meta(lid_run):
    cfg, best, corpus = lid_run
    out = best.parent
    assert best.name == "best.pt" and (out / "done.json").is_file() and (out / "train_log.jsonl").is_file()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all({"dev_loss", "dev_acc", "dev_post_acc", "dev_frame_acc"} <= set(r) for r in log)
    report = json.loads((out / "decode_dev" / "report.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "lid" and results["dev"] == report and isinstance(results["learned"], bool)
    assert report["languages"] == LANGS and report["n_utts"] == 9
    assert all(sum(report["confusion"][t].values()) == 3 for t in LANGS)  # 3 dev utterances per language
    assert report["accuracy"] == pytest.approx(sum(report["confusion"][t][t] for t in LANGS) / 9)
    rows = list(csv.reader((out / "decode_dev" / "confusion.csv").open()))
    assert rows[0] == ["true \\ predicted", *LANGS] and [r[0] for r in rows[1:]] == LANGS
    ck = torch.load(best, map_location="cpu", weights_only=True)  # plain data only
    meta = ck["meta"]
    assert meta["task"] == "lid" and meta["languages"] == LANGS and meta["toolkit"] == "xlingual"
    assert meta["features"]["n_mels"] == 40 and meta["dims"]["vocab_size"] == 3 and meta["version"]
    model, meta2 = load_lid(best)
    assert model.dims.vocab_size == 3 and meta2["languages"] == LANGS and not model.training


def test_finished_training_is_reused(lid_run):
    cfg, best, _ = lid_run
    stamp = best.stat().st_mtime_ns
    assert train_lid(cfg) == best and best.stat().st_mtime_ns == stamp


def test_frame_posteriors_sum_to_one_per_frame(lid_run):
    cfg, best, corpus = lid_run
    model, meta = load_lid(best)
    utts = split_utts(corpus, "tr", "test")
    store = compute_features(utts, corpus / ".features", cfg.features, progress=False)
    post = frame_posteriors(model, store, [u.id for u in utts])
    assert list(post) == [u.id for u in utts]
    for u in utts:
        p = post[u.id]
        t = int(subsampled_lengths(torch.tensor([store.num_frames(u.id)]))[0])
        assert p.shape == (t, 3) and (p >= 0).all()
        assert torch.allclose(p.sum(1), torch.ones(t), atol=1e-5)


@pytest.mark.parametrize("posts, frame, utterance", [
    # one utterance: both averages are its frame mean
    ([[[1.0, 0.0], [0.0, 1.0]]], [0.5, 0.5], [0.5, 0.5]),
    # a 3-frame and a 1-frame utterance: frames weigh equally vs utterances weigh equally
    ([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0]]], [0.75, 0.25], [0.5, 0.5]),
    ([[[0.2, 0.8]], [[0.6, 0.4]], [[0.4, 0.6], [0.4, 0.6]]], [0.4, 0.6], [0.4, 0.6]),
])
def test_average_posteriors_frame_and_utterance_level(posts, frame, utterance):
    avg = average_posteriors({f"u{i}": torch.tensor(p) for i, p in enumerate(posts)})
    assert avg["frame"].tolist() == pytest.approx(frame)
    assert avg["utterance"].tolist() == pytest.approx(utterance)


def test_average_posteriors_rejects_empty():
    with pytest.raises(ValueError, match="no frames"):
        average_posteriors({})


def test_score_matrix_shape_labels_and_files(lid_run, tmp_path):
    cfg, best, corpus = lid_run
    inputs = {"th": split_utts(corpus, "th", "test"), "bn": split_utts(corpus, "bn", "test")}
    scores = score_matrix(best, inputs, cache_dir=corpus / ".features")
    assert scores.rows == ["th", "bn"] and scores.columns == LANGS and scores.utterances == [3, 3]
    for level in ("frame", "utterance", "pooled"):
        table = scores.table(level)
        assert list(table) == ["th", "bn"] and all(list(r) == LANGS for r in table.values())
        assert all(sum(r.values()) == pytest.approx(1.0, abs=1e-5) for r in table.values())
    paths = write_score_matrix(scores, tmp_path)
    assert {p.name for p in paths.values()} == {"lid_scores.json", "lid_scores.md", "lid_scores.png",
                                                "lid_scores_frame.csv", "lid_scores_utterance.csv",
                                                "lid_scores_pooled.csv"}
    assert paths["png"].stat().st_size > 1000
    rows = list(csv.reader(paths["csv_frame"].open()))
    assert rows[0] == ["input \\ LID", *LANGS] and [r[0] for r in rows[1:]] == ["th", "bn"]
    assert "| input \\ LID | bn | tr | th |" in paths["md"].read_text()
    assert read_score_matrix(paths["json"]).table() == scores.table()


def test_matrix_markdown_layout():
    m = ScoreMatrix(rows=["bn", "lo"], columns=["bn", "as"], frame=[[0.6, 0.4], [0.25, 0.75]],
                    utterance=[[0.5, 0.5], [0.3, 0.7]])
    assert matrix_markdown(m).splitlines() == ["| input \\ LID | bn | as |", "|---|---|---|",
                                               "| bn | 0.60 | 0.40 |", "| lo | 0.25 | 0.75 |"]
    assert m.table("utterance")["lo"] == {"bn": 0.3, "as": 0.7}


@pytest.mark.parametrize("hours, oversample, expected", [
    ({"bn": 1.0, "tr": 1.0}, True, {"bn": 1, "tr": 1}),
    ({"bn": 1.0, "tr": 0.5, "th": 0.26}, True, {"bn": 1, "tr": 2, "th": 4}),
    ({"bn": 1.0, "tr": 0.01}, True, {"bn": 1, "tr": 8}),  # capped
    ({"bn": 1.0, "tr": 0.5}, False, {"bn": 1, "tr": 1}),
])
def test_repeats_for_balance(hours, oversample, expected):
    assert repeats_for_balance(hours, oversample) == expected


@pytest.mark.parametrize("override, message", [
    ({"languages": ["bn"]}, "at least 2 languages"),
    ({"languages": ["bn", "tr", "bn"]}, "listed twice"),
    ({"select": "dev_wer"}, "LIDConfig.select"),
])
def test_train_lid_rejects_bad_configs(tmp_path, override, message):
    cfg = tiny_lid_config(tmp_path / "none", tmp_path / "lid")
    for k, v in override.items():
        setattr(cfg, k, v)
    with pytest.raises(ValueError, match=message):
        train_lid(cfg)


def test_lid_config_yaml_is_strict(tmp_path):
    p = tmp_path / "lid.yaml"
    p.write_text("languages: [bn, as]\ntrain_hours: 0.1\ntrain: {epochs: 3}\n")
    cfg = load_config(LIDConfig, p, ["model.preset=small"])
    assert cfg.languages == ["bn", "as"] and cfg.train_hours == 0.1 and cfg.train.epochs == 3
    assert cfg.model.preset == "small"
    p.write_text("langauges: [bn]\n")
    with pytest.raises(ConfigError, match="langauges"):
        load_config(LIDConfig, p)


def test_load_lid_refuses_an_asr_checkpoint(lid_run, tmp_path):
    _, best, _ = lid_run
    ck = torch.load(best, map_location="cpu", weights_only=True)
    ck["meta"]["task"] = "asr"
    torch.save(ck, tmp_path / "asr.pt")
    with pytest.raises(ValueError, match="'asr' checkpoint; this needs a language-ID model"):
        load_lid(tmp_path / "asr.pt")


def test_cli_lid_train_reuses_and_lid_score_writes(lid_run, tmp_path, capsys):
    cfg, best, corpus = lid_run
    conf = tmp_path / "lid.yaml"
    conf.write_text(yaml.safe_dump(to_dict(cfg)))
    assert main(["lid", "train", str(conf)]) == 0  # same configuration: the finished run is reused
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"] == str(best) and set(out["test_per_language_accuracy"]) == set(LANGS)
    manifests = [str(corpus / lang / "test.jsonl") for lang in ("bn", "th")]
    assert main(["lid", "score", str(best), *manifests, "--out", str(tmp_path / "scores")]) == 0
    text, err = capsys.readouterr()
    assert text.startswith("| input \\ LID | bn | tr | th |") and "| th |" in text
    assert "LID feats: 6/6 utt (100%) done in" in err and "\r" not in err  # its progress, as lines in a log
    assert (tmp_path / "scores" / "lid_scores.png").is_file()
    assert main(["lid", "score", str(tmp_path / "missing.pt"), *manifests, "--out", str(tmp_path / "x")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_lid_starts_from_an_asr_encoder(tmp_path):
    """init_from copies the encoder (CMVN, frontend, conformer layers) of an ASR checkpoint; the heads stay new;
    another encoder shape or other features are refused with the reason."""
    from pathlib import Path

    from helpers import FEATS, TINY, save_source, write_tiny_corpus
    from xlingual.asr import new_model
    from xlingual.checkpoint import load_model
    from xlingual.config import UnitConfig
    from xlingual.features import compute_features
    from xlingual.lid import init_encoder
    from xlingual.runspec import load_language

    corpus = write_tiny_corpus(tmp_path / "corpus")
    asr_path = save_source(tmp_path / "asr.pt", corpus, "bn", UnitConfig(kind="char"))
    asr, _, _ = load_model(asr_path)
    train = load_language(corpus, "tr")["train"]
    store = compute_features(train, Path(corpus.dir) / ".features", FEATS, progress=False)
    lid = new_model(TINY, FEATS, 2, store, [u.id for u in train], seed=5, embed_dim=8)
    head_before = lid.head.weight.clone()
    init_encoder(lid, asr_path, FEATS)
    theirs = asr.state_dict()
    for k, v in lid.state_dict().items():
        if k.startswith(("frontend.", "encoder.", "cmvn_")):
            assert torch.equal(v, theirs[k]), k
    assert torch.equal(lid.head.weight, head_before)  # a head over languages, not units: new
    other = new_model(replace(TINY, d_model=48), FEATS, 2, store, [u.id for u in train], seed=5)
    with pytest.raises(ValueError, match="d_model: checkpoint 32 vs LID 48"):
        init_encoder(other, asr_path, FEATS)
    with pytest.raises(ValueError, match="n_mels: checkpoint 40 vs config 80"):
        init_encoder(lid, asr_path, replace(FEATS, n_mels=80))
