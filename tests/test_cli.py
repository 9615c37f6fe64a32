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
