"""Reliability: bad input (long utterances, units outside the unit set, property tests of the parsers and text
normalizers), numerical faults in training, and failed writes (disk full, permissions).

The rest of the bad-input table lives beside each reader (tests/test_corpus.py, tests/test_audio.py,
tests/data_prep/*); kills, locks and untrusted files have their own files. results/reliability.md maps them all.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pathlib
import pwd
import resource
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.commonvoice import read_commonvoice_tsv
from data_prep.fleurs import FLEURS_COLUMNS, read_fleurs_tsv
from data_prep.kaldi import read_kaldi_dir
from helpers import FEATS, ROOT, save_source, write_tiny_corpus
from xlingual import train as train_mod
from xlingual.checkpoint import load_model, model_meta
from xlingual.runspec import load_language
from xlingual.asr import (build_tokenizer, make_evaluator, make_examples,
                          new_model)
from xlingual.cli import main
from xlingual.config import ModelConfig, TrainConfig, UnitConfig
from xlingual.corpus import (MIN_DURATION_S, EmptyManifestError, ManifestError, PrepReport, Utterance, read_manifest,
                             write_manifest)
from xlingual.fileio import WriteError, read_json, write_json
from xlingual.text import TextError, normalize, normalize_or_raise
from xlingual.tokenizer import Tokenizer
from xlingual.train import Example, TrainingError, fit

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TINY_MODEL = ModelConfig(n_layers=1, d_model=32, n_heads=2, ffn_dim=64, subsample_channels=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def cli_sets(corpus, out, *extra) -> list[str]:
    items = [f"corpus.dir={corpus.dir}", "corpus.kind=manifests", f"out_dir={out}", "language=tr",
             "features.n_mels=40", "train.epochs=1", "train.max_batch_seconds=3", "train.progress=false",
             "train.threads=1", "train.device=cpu", "model.n_layers=1", "model.d_model=32", "model.n_heads=2",
             "model.ffn_dim=64", "model.subsample_channels=8", *extra]
    return [x for s in items for x in ("--set", s)]


def one_clear_line(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


# ------------------------------------------------------------------------------------------ bad input: training


def test_utterance_longer_than_a_batch_stops_with_the_fix(corpus, tmp_path, capsys):
    """Policy: a clear stop (not a silent skip, which would change what the run trains on)."""
    assert main(["recipe", *cli_sets(corpus, tmp_path / "exp", "train.max_batch_seconds=0.85")]) == 2
    one_clear_line(capsys.readouterr().err, "training utterance(s) are longer than one batch", "'tr_train",
                   "the longest 1.0 s; raise train.max_batch_seconds to at least 1.1")
    assert not (tmp_path / "exp" / "last.pt").exists()


def test_adaptation_target_units_outside_a_shared_unit_set(corpus, tmp_path, capsys):
    """A same-language source keeps its unit set only if it covers the target's text; otherwise a clear error
    naming the missing characters and the setting that trains a new output layer instead."""
    few = [Utterance("x", "/x.wav", "merhaba evet hayır", "tr", "s", 1.0)]
    source = save_source(tmp_path / "tr_small_units.pt", corpus, "tr", UnitConfig(kind="char"), texts_from=few)
    sets = [f"corpus.dir={corpus.dir}", "corpus.kind=manifests", "adapt.train.epochs=1", "adapt.mode=head",
            "adapt.train.progress=false", "adapt.train.threads=1", "adapt.train.device=cpu"]
    argv = ["adapt", str(source), "--language", "tr", "--out", str(tmp_path / "a"),
            *[x for s in sets for x in ("--set", s)]]
    assert main(argv) == 2
    one_clear_line(capsys.readouterr().err, "lacks", "ü", "ç", "keep_head_if_shared=false")
    assert main(argv + ["--set", "adapt.keep_head_if_shared=false"]) == 0
    assert read_json(tmp_path / "a" / "results.json")["adapt"]["kept_head"] is False


def test_spm_units_outside_the_unit_set_are_found():
    from xlingual.transfer import choose_units

    utts = [Utterance(f"u{i}", "/x.wav", t, "tr", "s", 1.0) for i, t in
            enumerate(["merhaba evet", "hayır evet", "merhaba hayır"])]
    tok = Tokenizer.build("spm", [(u.text, u.language) for u in utts], 16)
    target = utts + [Utterance("ü", "/x.wav", "güzel gün", "tr", "s", 1.0)]
    with pytest.raises(ValueError, match=r"lacks \d+ unit\(s\).*ü"):
        choose_units(tok, "tr", "tr", target, UnitConfig(kind="spm"), keep_if_shared=True)


# -------------------------------------------------------------------------- bad input: property-based parsing


def _tmpdir():
    return tempfile.TemporaryDirectory(prefix="xl-prop-")


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=8))
FIELDS = ["id", "audio", "text", "language", "speaker", "duration", "offset", "extra"]
RECORDS = st.dictionaries(st.sampled_from(FIELDS), JSON_SCALARS, max_size=8)
LINES = st.one_of(RECORDS.map(json.dumps), st.text(max_size=30), st.just(""),
                  st.lists(JSON_SCALARS, max_size=3).map(json.dumps))


@PROPERTY
@given(lines=st.lists(LINES, max_size=6), require_text=st.booleans())
def test_manifest_reader_accepts_or_names_the_line(lines, require_text):
    with _tmpdir() as d:
        path = Path(d) / "m.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            utts = read_manifest(path, require_text=require_text)
        except ManifestError as e:
            assert str(path) in str(e)
            return
        assert len({u.id for u in utts}) == len(utts)
        assert all(math.isfinite(u.duration) and u.duration >= MIN_DURATION_S and u.offset >= 0 for u in utts)


UTTERANCES = st.lists(st.builds(
    Utterance, id=st.text(min_size=1, max_size=12),
    audio=st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=8).map(lambda s: f"/data/{s}.wav"),
    text=st.text(min_size=1, max_size=20).filter(str.strip), language=st.sampled_from(["bn", "tr", "as", "th"]),
    speaker=st.text(max_size=6), duration=st.floats(MIN_DURATION_S, 1e4), offset=st.floats(0, 1e4)),
    max_size=5, unique_by=lambda u: u.id)


@PROPERTY
@given(utts=UTTERANCES)
def test_manifest_round_trip(utts):
    with _tmpdir() as d:
        write_manifest(Path(d) / "m.jsonl", utts)
        assert read_manifest(Path(d) / "m.jsonl") == utts


KALDI_IDS = st.sampled_from(["u1", "u2", "u3", "rec1", "rec2", "a-b_c"])
WORDS = st.one_of(KALDI_IDS, st.text(string.printable, max_size=8), st.text(max_size=5),
                  st.sampled_from(["0", "0.5", "1.25", "-1", "nan", "inf", "1e400", "|", "cat x |"]))
SEPARATORS = st.sampled_from([" ", "\t", "  "])


def _kaldi_lines(first=KALDI_IDS):
    line = st.tuples(first, st.lists(st.tuples(SEPARATORS, WORDS), max_size=4)).map(
        lambda t: (t[0] + "".join(s + w for s, w in t[1])).encode("utf-8", "surrogatepass"))
    raw = st.binary(max_size=12)  # anything at all, including non-UTF-8 bytes and stray line breaks
    return st.lists(st.one_of(line, line, raw), max_size=6).map(b"\n".join)


@PROPERTY
@given(text=_kaldi_lines(), wav_scp=_kaldi_lines(), segments=st.one_of(st.none(), _kaldi_lines()),
       utt2spk=st.one_of(st.none(), _kaldi_lines()))
def test_kaldi_reader_keeps_or_reports_every_transcript(text, wav_scp, segments, utt2spk):
    with _tmpdir() as d:
        d = Path(d)
        for name, data in (("text", text), ("wav.scp", wav_scp), ("segments", segments), ("utt2spk", utt2spk)):
            if data is not None:
                (d / name).write_bytes(data)
        report = PrepReport("train")
        try:
            raws = read_kaldi_dir(d, report, root=d)
        except EmptyManifestError as e:  # an empty text file: refused, naming it
            assert text == b"" and str(d / "text") in str(e)
            return
        ids = [r.id for r in raws]
        assert len(set(ids)) == len(ids)
        keys = set()
        for i, line in enumerate(text.splitlines()):
            try:
                first = line.removeprefix(b"\xef\xbb\xbf" if i == 0 else b"").decode("utf-8").split(maxsplit=1)
            except UnicodeDecodeError:
                continue
            if first:
                keys.add(first[0])
        for k in keys:  # every transcript is used, or counted as skipped with a reason
            assert k in ids or report.was_skipped(k), k
        for r in raws:
            assert r.id in keys and r.text is not None
            assert r.duration is None or (math.isfinite(r.duration) and r.duration > 0 and r.offset >= 0)


CELLS = st.text(st.characters(blacklist_characters="\t\r\n", blacklist_categories=("Cs",)), max_size=10)


def _rows(n_columns: int):
    row = st.lists(CELLS, min_size=1, max_size=n_columns + 2).map("\t".join).map(str.encode)
    return st.lists(st.one_of(row, st.binary(max_size=10).filter(lambda b: b"\n" not in b and b"\r" not in b)),
                    max_size=6)


def _data_rows(rows: list[bytes], first_line: bool) -> int:
    """Rows that are not blank (a BOM opening the file does not count)."""
    if first_line and rows:
        rows = [rows[0].removeprefix(b"\xef\xbb\xbf"), *rows[1:]]
    return sum(1 for r in rows if r.decode("utf-8", "replace").strip())


@PROPERTY
@given(rows=_rows(4))
def test_commonvoice_reader_keeps_or_reports_every_row(rows):
    with _tmpdir() as d:
        tsv = Path(d) / "train.tsv"
        tsv.write_bytes(b"\n".join([b"client_id\tpath\tsentence\tlocale", *rows]) + b"\n")
        report = PrepReport("train")
        raws = read_commonvoice_tsv(tsv, Path(d) / "clips", report)
        assert len(raws) + report.num_skipped == _data_rows(rows, first_line=False)
        assert all(r.audio.startswith(str(Path(d) / "clips")) for r in raws)


@pytest.mark.parametrize("clip, kept", [("a.mp3", True), ("sub/a.mp3", True), ("/", False), ("/etc/passwd", False),
                                        ("../a.mp3", False), ("x/../../a.mp3", False)])
def test_commonvoice_clip_paths_stay_inside_clips(tmp_path, clip, kept):
    """A path column naming a file outside clips/ (absolute, or climbing with ..) is reported, never read (found by
    the property test above: the row '<TAB>/' gave the audio path '/')."""
    tsv = tmp_path / "train.tsv"
    tsv.write_text(f"client_id\tpath\tsentence\nspk\t{clip}\thello\n", encoding="utf-8")
    report = PrepReport("train")
    raws = read_commonvoice_tsv(tsv, tmp_path / "clips", report)
    assert (len(raws), report.num_skipped) == ((1, 0) if kept else (0, 1))
    assert report.skipped == ({} if kept else {"clip path outside clips/": 1})


@PROPERTY
@given(rows=_rows(len(FLEURS_COLUMNS)))
def test_fleurs_reader_keeps_or_reports_every_row(rows):
    with _tmpdir() as d:
        tsv = Path(d) / "train.tsv"
        tsv.write_bytes(b"\n".join(rows) + b"\n")
        report = PrepReport("train")
        raws = read_fleurs_tsv(tsv, Path(d) / "audio", report, speaker="s")
        assert len(raws) + report.num_skipped == _data_rows(rows, first_line=True)


@PROPERTY
@given(text=st.one_of(st.text(), st.none(), st.integers(), st.binary(max_size=5), st.lists(st.text(), max_size=2)),
       language=st.one_of(st.sampled_from(["bn", "as", "tr", "az", "th", "en", "tr-TR"]), st.text(max_size=6)))
def test_normalizer_returns_usable_text_or_a_text_error(text, language):
    try:
        out = normalize_or_raise(text, language, "t.tsv:3")
    except TextError as e:
        assert "t.tsv:3" in str(e)
        return
    assert out and out == out.strip() and "  " not in out and out == normalize(text, language)
    assert not any(c in out for c in "\t\n\r\x00")


# --------------------------------------------------------------------------------------------- numerical faults


@pytest.fixture(scope="module")
def tiny(corpus):
    from xlingual.features import compute_features

    data = load_language(corpus, "tr")
    store = compute_features(data["train"] + data["dev"], Path(corpus.dir) / ".features", FEATS, progress=False)
    return data, store, build_tokenizer(data["train"], UnitConfig())


def fit_tiny(tiny, out: Path, examples=None, **over) -> list[dict]:
    data, store, tok = tiny
    cfg = TrainConfig(**{"epochs": 2, "max_batch_seconds": 2.0, "progress": False, "checkpoint_every_steps": 1,
                         "threads": 1, "device": "cpu", "warmup_steps": 2, **over})
    model = new_model(TINY_MODEL, FEATS, tok.vocab_size, store, [u.id for u in data["train"]], cfg.seed)
    return fit(model, examples or make_examples(data["train"], store, tok)[0], store, cfg, out,
               make_evaluator(store, data["dev"], tok), specaug=FEATS, meta=model_meta(model, "asr", FEATS, tok),
               run_key="k")


def model_weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_isolated_nonfinite_losses_are_skipped_and_counted(tiny, tmp_path, monkeypatch):
    real, calls = train_mod.compute_loss, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        return torch.tensor(float("nan"), requires_grad=True) if calls["n"] in (2, 5) else real(*a, **k)

    monkeypatch.setattr(train_mod, "compute_loss", flaky)
    hist = fit_tiny(tiny, tmp_path / "r")
    log = [json.loads(x) for x in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert [h["nonfinite_steps"] for h in hist] == [r["nonfinite_steps"] for r in log] == [1, 1]
    assert all(torch.isfinite(v).all() for v in model_weights(tmp_path / "r" / "best.pt").values())


def test_transcript_too_long_for_its_audio_is_a_counted_skip(tiny, tmp_path):
    """A real fault: CTC cannot align 400 units to ~20 output frames, so that batch's loss is inf."""
    data, store, tok = tiny
    examples, _ = make_examples(data["train"], store, tok)
    examples[0] = Example(examples[0].id, examples[0].frames, examples[0].target * 40)
    hist = fit_tiny(tiny, tmp_path / "r", examples)
    assert [h["nonfinite_steps"] for h in hist] == [1, 1] and all(math.isfinite(h["train_loss"]) for h in hist)


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite backward: a finite loss whose gradient overflows."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.mark.parametrize("fault", ["nan loss", "inf gradient"])
def test_run_that_keeps_failing_stops_and_keeps_its_last_good_checkpoint(tiny, tmp_path, monkeypatch, fault):
    out = tmp_path / "r"
    real, calls, before = train_mod.compute_loss, {"n": 0}, {}

    def failing(*a, **k):
        if not (out / "best.pt").is_file():  # the first epoch is fine...
            return real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 1:  # ...and one step of the second
            return real(*a, **k)
        if not before:  # what was on disk when the fault began
            before.update(best=(out / "best.pt").read_bytes(), last=model_weights(out / "last.pt"))
        loss = real(*a, **k)
        return loss * float("nan") if fault == "nan loss" else _InfGrad.apply(loss)

    monkeypatch.setattr(train_mod, "compute_loss", failing)
    with pytest.raises(TrainingError) as e:
        fit_tiny(tiny, out, max_nonfinite=3)
    msg = str(e.value)
    assert "3 consecutive non-finite losses or gradients" in msg and str(out) in msg
    assert "last good checkpoints are kept (last.pt, best.pt)" in msg and "lower train.lr" in msg
    assert (out / "best.pt").read_bytes() == before["best"]  # untouched
    last = model_weights(out / "last.pt")  # rewritten during the streak, but with the same (good) weights
    assert all(torch.equal(last[k], v) for k, v in before["last"].items())
    assert all(torch.isfinite(v).all() for v in last.values())
    load_model(out / "best.pt")  # and usable
    monkeypatch.setattr(train_mod, "compute_loss", real)  # the cause fixed, the run resumes and finishes
    fit_tiny(tiny, out, max_nonfinite=3)
    assert (out / "done.json").is_file()


# ------------------------------------------------------------------------- disk full and permission errors


def _no_tmp(folder: Path) -> bool:
    return not any(".tmp" in p.name for p in folder.rglob("*"))


def _raise_for(name: str, err: int):
    """A Path.write_text that fails with `err` for the temporary file of `name` and works otherwise."""
    real = pathlib.Path.write_text

    def write_text(self, *a, **k):
        if self.name.startswith(f".{name}.tmp"):
            raise OSError(err, os.strerror(err))
        return real(self, *a, **k)

    return write_text


@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "no permission"),
                                        (errno.EROFS, "read-only"), (errno.EIO, "fix the cause")])
def test_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, err, words):
    path = tmp_path / "out" / "results.json"
    write_json(path, {"wer": 10.0})
    monkeypatch.setattr(pathlib.Path, "write_text", _raise_for("results.json", err))
    with pytest.raises(WriteError) as e:
        write_json(path, {"wer": 99.0})
    assert e.value.errno == err and isinstance(e.value, OSError)
    assert str(e.value).startswith(f"cannot write {path}: {os.strerror(err)}") and words in str(e.value)
    assert read_json(path) == {"wer": 10.0} and _no_tmp(tmp_path)


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json(path, {"v": 1})
    real = os.replace

    def replace(src, dst):
        if Path(dst) == path:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError, match=f"cannot write {path}: Operation not permitted"):
        write_json(path, {"v": 2})
    assert read_json(path) == {"v": 1} and _no_tmp(tmp_path)


def test_real_file_size_limit(tmp_path):
    """A real failing write, not a simulated one: the process file-size limit (ulimit -f) makes it EFBIG."""
    path = tmp_path / "big.json"
    write_json(path, {"small": True})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # Python ignores SIGXFSZ: write() fails instead
    try:
        with pytest.raises(WriteError) as e:
            write_json(path, {"x": "y" * 10000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert e.value.errno == errno.EFBIG and str(path) in str(e.value) and "ulimit -f" in str(e.value)
    assert read_json(path) == {"small": True} and _no_tmp(tmp_path)


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "exp").write_text("not a folder")
    with pytest.raises(WriteError) as e:
        write_json(tmp_path / "exp" / "results.json", {})
    assert str(e.value) == (f"cannot write {tmp_path / 'exp' / 'results.json'}: {tmp_path / 'exp'} is a file, not a "
                            f"folder; remove or rename that file, or choose another output folder")


@pytest.mark.parametrize("blocked", ["exp", "exp/sub"])  # the folder itself is a file, or a folder above it is
def test_locked_output_folder_that_is_a_file(tmp_path, blocked):
    from xlingual.fileio import exclusive_lock

    (tmp_path / "exp").write_text("not a folder")
    with pytest.raises(WriteError) as e:
        with exclusive_lock(tmp_path / blocked):
            pass
    assert e.value.errno == errno.ENOTDIR and str(e.value) == (
        f"cannot use {tmp_path / blocked} as an output folder: {tmp_path / 'exp'} is a file, not a folder; remove "
        f"or rename that file, or choose another output folder")


def test_cli_out_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "exp").write_text("not a folder")
    assert main(["recipe", "--set", f"out_dir={tmp_path / 'exp'}", "--set", "corpus.kind=manifests"]) == 2
    one_clear_line(capsys.readouterr().err, f"xlingual recipe: error: cannot use {tmp_path / 'exp'} as an output "
                   f"folder: {tmp_path / 'exp'} is a file, not a folder; remove or rename that file")
    assert (tmp_path / "exp").read_text() == "not a folder"


@pytest.mark.parametrize("args, flag", [
    (["decode", "ckpt.pt", "m.jsonl", "--out", "{f}"], "--out"),
    (["decode", "ckpt.pt", "m.jsonl", "--out", "{f}/sub"], "--out"),
    (["lid", "score", "lid.pt", "m.jsonl", "--out", "{f}"], "--out"),
    (["lid", "score", "lid.pt", "m.jsonl", "--out", "out", "--cache-dir", "{f}"], "--cache-dir"),
    (["rank", "--lid", "lid.pt", "--target", "m.jsonl", "--cache-dir", "{f}"], "--cache-dir"),
    (["rank", "--lid", "lid.pt", "--target", "m.jsonl", "--cache-dir", "{f}/features"], "--cache-dir"),
    (["lid", "select", "lid.pt", "--pool", "m.jsonl", "--hours", "1", "--out", "{f}/sel.jsonl"], "--out"),
    (["prepare", "audiodir", "wavs", "--out", "{f}", "--language", "bn"], "--out"),
    (["rank-eval", "--wer-matrix", "w.csv", "--out", "{f}"], "--out"),
    (["adapt", "src.pt", "--language", "bn", "--out", "{f}"], "--out"),
])
def test_cli_output_paths_that_are_files_are_one_line(tmp_path, capsys, monkeypatch, args, flag):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "taken"
    f.write_text("a file")
    args = [a.replace("{f}", str(f)) for a in args]
    verb = args[0]
    assert main(args) == 2
    path = args[args.index(flag) + 1]
    one_clear_line(capsys.readouterr().err, f"xlingual {verb}: error: {flag} {path}: ", f"{f} is a file, not a "
                   "folder; remove or rename that file, or choose another")
    assert f.read_text() == "a file"


# run as another user: try to replace results.json in a folder, print what happened as JSON
_WRITE_AS_USER = """
import json, sys
from xlingual.fileio import WriteError, write_json
try:
    write_json(sys.argv[1], {"v": 2})
    print(json.dumps({"written": True}))
except WriteError as e:
    print(json.dumps({"errno": e.errno, "message": str(e)}))
"""


def _run_as(uid: int, gid: int, python: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python <args>` as user uid/gid (dropped in the child before exec), with this checkout first on the path."""
    def drop():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(cwd),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([python, *args], cwd=cwd, env=env, preexec_fn=drop, capture_output=True, text=True,
                          timeout=120)


def _python_for(uid: int, gid: int, cwd: Path) -> tuple[str | None, list[str]]:
    """(a Python that user uid can run this checkout's xlingual.fileio with, or None; why each candidate could not).

    The tests' own Python first; then the system's python3: fileio needs only the standard library, and a virtual
    environment's interpreter may lie under a folder only root can enter (pyenv in /root)."""
    why = []
    for python in dict.fromkeys([sys.executable, shutil.which("python3") or "", "/usr/bin/python3"]):
        if not python:
            continue
        try:
            probe = _run_as(uid, gid, python, ["-c", "import sys, xlingual.fileio; assert sys.version_info >= (3, 10)"],
                            cwd)
        except OSError as e:  # the interpreter itself cannot be run by that user
            why.append(f"{python}: {e.strerror}")
            continue
        if probe.returncode == 0:
            return python, why
        why.append(f"{python}: " + (probe.stderr.strip().splitlines() or ["exit %d" % probe.returncode])[-1])
    return None, why


def test_read_only_output_folder(tmp_path):
    """A real read-only folder (chmod 555), not a simulated EACCES. Root ignores mode bits, and CI runs as root: there
    the write runs in a child process as the unprivileged user `nobody`, in a folder it owns, in a temporary folder
    every user can reach (pytest's tmp_path lies under root's private folder)."""
    if os.geteuid() != 0:
        folder = tmp_path / "exp"
        write_json(folder / "results.json", {"v": 1})
        folder.chmod(0o555)
        try:
            with pytest.raises(WriteError, match="no permission"):
                write_json(folder / "results.json", {"v": 2})
        finally:
            folder.chmod(0o755)
        assert read_json(folder / "results.json") == {"v": 1}
        return
    try:
        user = pwd.getpwnam("nobody")
        uid, gid = user.pw_uid, user.pw_gid
    except KeyError:
        uid = gid = 65534
    top = Path(tempfile.mkdtemp(prefix="xl-readonly-"))
    try:
        top.chmod(0o755)
        python, why = _python_for(uid, gid, top)
        if python is None:  # e.g. the checkout lies under a folder only root may enter
            pytest.skip(f"user {uid} can run no Python with {ROOT} on its path: {'; '.join(why)}")
        folder = top / "exp"
        write_json(folder / "results.json", {"v": 1})
        for p in (folder, folder / "results.json"):
            os.chown(p, uid, gid)  # the user's own folder: only its mode bits stop the write
        folder.chmod(0o555)
        run = _run_as(uid, gid, python, ["-c", _WRITE_AS_USER, str(folder / "results.json")], top)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out.get("errno") == errno.EACCES, out
        assert out["message"] == (f"cannot write {folder / 'results.json'}: Permission denied; no permission to "
                                  f"write there; fix the folder's permissions or choose another output folder")
        assert read_json(folder / "results.json") == {"v": 1} and _no_tmp(folder)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_disk_full_during_training_then_resume_is_bit_identical(tiny, tmp_path, monkeypatch):
    fit_tiny(tiny, tmp_path / "ref")
    real, saves = torch.save, {"n": 0}

    def save(obj, f, *a, **k):
        saves["n"] += 1
        if saves["n"] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    out = tmp_path / "r"
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(WriteError, match=f"cannot write {out / 'last.pt'}: No space left on device"):
        fit_tiny(tiny, out)
    monkeypatch.setattr(torch, "save", real)
    assert torch.load(out / "last.pt", weights_only=True)["state"]["step"] == 3 and _no_tmp(out)
    fit_tiny(tiny, out)  # space freed: resume from the last complete checkpoint
    a, b = model_weights(tmp_path / "ref" / "best.pt"), model_weights(out / "best.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_disk_full_while_scoring_is_one_line_and_keeps_results(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    args = ["recipe", *cli_sets(corpus, out)]
    assert main(args) == 0
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(pathlib.Path, "write_text", _raise_for("results.json", errno.ENOSPC))
    assert main(args + ["--stage", "2"]) == 2
    one_clear_line(capsys.readouterr().err, f"xlingual recipe: error: cannot write {out / 'results.json'}: "
                                            f"No space left on device; the disk is full")
    assert (out / "results.json").read_bytes() == before and _no_tmp(out)
