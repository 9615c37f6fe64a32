"""A tiny end-to-end recipe run through the CLI: prepare -> train -> decode -> score, then a resumed re-run."""

import json

import pytest

from helpers import write_tiny_corpus
from xlingual.cli import main

TINY = ["corpus.train_hours=0.01", "corpus.dev_hours=0.003", "corpus.test_hours=0.003", "train.epochs=2",
        "train.max_batch_seconds=10", "train.progress=false", "train.threads=1", "model.n_layers=1",
        "model.d_model=32", "model.ffn_dim=64", "model.subsample_channels=8"]


def test_tiny_recipe_end_to_end(tmp_path, capsys):
    sets = TINY + [f"corpus.dir={tmp_path / 'corpus'}", f"out_dir={tmp_path / 'exp'}", "language=tr"]
    args = ["recipe"] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 0
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    for split in ("dev", "test"):
        summary = json.loads((tmp_path / "exp" / f"decode_{split}" / "summary.json").read_text())
        assert {k: results[split][k] for k in ("wer", "cer", "n_utts")} == {k: summary[k] for k in
                                                                           ("wer", "cer", "n_utts")}
        assert results[split]["n_utts"] == len((tmp_path / "corpus" / "tr" / f"{split}.jsonl").read_text()
                                               .splitlines())
    assert results["kind"] == "scratch" and results["language"] == "tr" and results["training"]["epochs"] == 2
    assert isinstance(results["learned"], bool) and results["code_version"].startswith("0.")
    assert results["wall_seconds"] >= results["training"]["train_seconds"] > 0
    assert (tmp_path / "exp" / "best.pt").is_file()
    stamp = (tmp_path / "exp" / "best.pt").stat().st_mtime_ns
    # re-running finds the finished run and reuses it; scoring alone (stage 2) still reports the training time
    (tmp_path / "exp" / "results.json").unlink()
    assert main(args + ["--stage", "2"]) == 0
    assert (tmp_path / "exp" / "best.pt").stat().st_mtime_ns == stamp
    again = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert again["training"] == results["training"] and again["wall_seconds"] >= results["training"]["train_seconds"]
    # wall_seconds is the whole run's (its training, resumes included, + scoring), not the call's: after an
    # 11-minute training a stage-2-only call reported 2.8 s (issue 14)
    done = json.loads((tmp_path / "exp" / "done.json").read_text())
    (tmp_path / "exp" / "done.json").write_text(json.dumps({**done, "seconds": 660.0}))
    assert main(args + ["--stage", "2"]) == 0
    scored = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert scored["training"]["train_seconds"] == 660.0
    assert scored["wall_seconds"] == pytest.approx(660.0 + scored["eval_seconds"], abs=0.11)


def test_recipe_config_errors_are_clear(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {epochs: 1}\n")
    assert main(["recipe", str(bad)]) == 2
    assert "unknown key(s) ['trian']" in capsys.readouterr().err


def test_recipe_decodes_last_pt_too_when_asked(tmp_path, capsys):
    """decode_last=true: last.pt (the final weights, not the selected ones) is decoded into decode_last_<split>/ and
    printed beside the results; results.json stays the best checkpoint's, and the run is the same run."""
    corpus = write_tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "exp"
    sets = [f"corpus.dir={corpus.dir}", "corpus.kind=manifests", f"out_dir={out}", "language=tr", "features.n_mels=40",
            "train.epochs=2", "train.max_batch_seconds=3", "train.progress=false", "train.threads=1",
            "train.device=cpu", "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.ffn_dim=64",
            "model.subsample_channels=8"]
    args = ["recipe"] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 0
    assert "last" not in json.loads(capsys.readouterr().out) and not list(out.glob("decode_last_*"))
    stamp = (out / "best.pt").stat().st_mtime_ns
    assert main(args + ["--set", "decode_last=true", "--stage", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (out / "best.pt").stat().st_mtime_ns == stamp  # the finished training is reused: the same run key
    assert printed["last"]["checkpoint"] == str(out / "last.pt")
    for split in ("dev", "test"):
        summary = json.loads((out / f"decode_last_{split}" / "summary.json").read_text())
        assert printed["last"][split] == {k: summary[k] for k in ("wer", "cer", "n_utts", "len_ratio")}
        assert (out / f"decode_{split}" / "summary.json").is_file()  # best.pt's decodes stay where they were
    assert "last" not in json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_an_empty_split_stops_the_run_before_training(tmp_path, capsys, split):
    """An empty dev.jsonl trained, scored dev WER 0.0 with n_utts 0, kept epoch 1 as best and exited 0 (issue 14).
    Now every split of a run must hold utterances: one line naming the manifest, and nothing is trained."""
    corpus = write_tiny_corpus(tmp_path / "corpus", ("tr",))
    (tmp_path / "corpus" / "tr" / f"{split}.jsonl").write_text("")
    out = tmp_path / "exp"
    sets = [f"corpus.dir={corpus.dir}", "corpus.kind=manifests", f"out_dir={out}", "language=tr", "train.epochs=1",
            "train.progress=false", "train.threads=1", "model.n_layers=1", "model.d_model=32", "model.ffn_dim=64",
            "model.subsample_channels=8"]
    assert main(["recipe"] + [x for s in sets for x in ("--set", s)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{split}.jsonl: no " in err and "Traceback" not in err
    assert not (out / "best.pt").exists() and not (out / "results.json").exists()
