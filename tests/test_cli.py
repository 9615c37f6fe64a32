import json

import pytest

from xlingual.cli import build_parser, main


def test_help_lists_verbs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("recipe", "prepare", "decode"):
        assert verb in out


@pytest.mark.parametrize("corpus", ["synthetic", "kaldi", "fleurs", "commonvoice", "audiodir"])
def test_prepare_subcommands_exist(corpus):
    extra = [] if corpus == "synthetic" else ["src", "--out", "o", "--language", "bn"]
    args = build_parser().parse_args(["prepare", corpus] + extra)
    assert args.corpus == corpus


@pytest.mark.parametrize("extra, excluded", [([], ()), (["--exclude-shared", "tr", "az"], ("tr", "az"))])
def test_prepare_synthetic_passes_the_control_option(monkeypatch, capsys, extra, excluded):
    """The control corpus (corpus.exclude_shared in a config) can be made by `prepare synthetic` too."""
    import data_prep.synthetic

    seen = {}
    monkeypatch.setattr(data_prep.synthetic, "prepare_synthetic", lambda out, **kw: seen.update(kw) or {})
    assert main(["prepare", "synthetic", "--out", "o", "--languages", "tr", "az", *extra]) in (0, None)
    assert seen["exclude_shared"] == excluded and seen["languages"] == ("tr", "az")


def test_prepare_audiodir_through_cli(tmp_path, make_wav, capsys):
    for name in ("a.wav", "b.wav"):
        make_wav(tmp_path / "in" / name, seconds=0.5)
    assert main(["prepare", "audiodir", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--language", "xx"]) == 0
    paths = json.loads(capsys.readouterr().out)
    lines = open(paths["test"]).read().splitlines()
    assert len(lines) == 2


def test_missing_kaldi_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["prepare", "kaldi", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--language", "bn"]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("code", ["", " ", "b n", "../bn", "12", "bn/x"])
def test_prepare_refuses_an_empty_or_malformed_language_code(tmp_path, make_wav, capsys, code):
    make_wav(tmp_path / "in" / "a.wav")
    assert main(["prepare", "audiodir", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--language", code]) == 2
    err = capsys.readouterr().err
    assert f"language code {code!r}" in err and "--language" in err
    assert not (tmp_path / "out").exists()


def test_language_without_a_normalizer_is_one_warning_naming_the_generic_one(tmp_path, make_wav, caplog,
                                                                            monkeypatch):
    from xlingual import text

    monkeypatch.setattr(text, "_warned", set())  # once per process: other tests may have warned for 'xx'
    make_wav(tmp_path / "in" / "a.wav")
    (tmp_path / "in" / "a.txt").write_text("Hello there")
    assert main(["prepare", "audiodir", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--language", "xx"]) == 0
    [warning] = [r.message for r in caplog.records if "NORMALIZERS" in r.message]
    assert "'xx'" in warning and "generic normalization" in warning and "\n" not in warning
    caplog.clear()
    assert main(["prepare", "audiodir", str(tmp_path / "in"), "--out", str(tmp_path / "out2"),
                 "--language", "tr"]) == 0  # Turkish has its own: no warning
    assert not [r for r in caplog.records if "NORMALIZERS" in r.message]


def test_decode_reads_the_features_the_recipe_cached(tmp_path, capsys):
    """`xlingual decode <ckpt> <corpus>/<lang>/test.jsonl` uses the corpus's feature cache (<corpus>/.features),
    where the recipe cached that split, instead of building a second one beside the manifest (issue 14); it
    scores as the recipe's decoding did."""
    from helpers import save_source, write_tiny_corpus
    from xlingual.asr import evaluate_asr
    from xlingual.config import DecodeConfig, UnitConfig
    from xlingual.corpus import read_manifest

    corpus = write_tiny_corpus(tmp_path / "corpus", ("tr",))
    ckpt = save_source(tmp_path / "src.pt", corpus, "tr", UnitConfig())
    manifest = tmp_path / "corpus" / "tr" / "test.jsonl"
    recipe = evaluate_asr(ckpt, read_manifest(manifest), tmp_path / "decode_test", corpus, DecodeConfig())
    cache = tmp_path / "corpus" / ".features"
    entries = sorted(p.name for p in cache.iterdir())
    assert main(["decode", str(ckpt), str(manifest), "--out", str(tmp_path / "d")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in cache.iterdir()) == entries  # the recipe's entry, reused
    assert not (manifest.parent / ".features").exists()
    assert {k: summary[k] for k in ("wer", "cer", "n_utts")} == {k: recipe[k] for k in ("wer", "cer", "n_utts")}


def test_decoding_a_test_set_shows_its_progress(tmp_path, capsys):
    """Scoring decodes silently for minutes at real sizes: `xlingual decode` and a run's scoring (train.progress)
    print the batches decoded on stderr; the decoding of dev inside training (transcribe's default) stays quiet."""
    from helpers import save_source, write_tiny_corpus
    from xlingual.asr import evaluate_asr
    from xlingual.config import DecodeConfig, UnitConfig
    from xlingual.corpus import read_manifest

    corpus = write_tiny_corpus(tmp_path / "corpus", ("tr",))
    ckpt = save_source(tmp_path / "src.pt", corpus, "tr", UnitConfig())
    manifest = tmp_path / "corpus" / "tr" / "test.jsonl"
    assert main(["decode", str(ckpt), str(manifest), "--out", str(tmp_path / "d")]) == 0
    assert "decode" in capsys.readouterr().err
    evaluate_asr(ckpt, read_manifest(manifest), tmp_path / "quiet", corpus, DecodeConfig())
    assert "decode" not in capsys.readouterr().err
    evaluate_asr(ckpt, read_manifest(manifest), tmp_path / "loud", corpus, DecodeConfig(), progress=True)
    assert "decode" in capsys.readouterr().err


@pytest.mark.parametrize("argv, loo", [([], False), (["--loo"], True), (["--no-loo"], False)])
def test_the_demo_trains_leave_one_out_lids_only_when_asked(argv, loo):
    """The leave-one-out LIDs add about a third to the demo's time and some do not learn at its size: opt-in."""
    assert build_parser().parse_args(["demo", *argv]).loo is loo
