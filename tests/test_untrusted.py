"""Untrusted files: checkpoints (weights_only, foreign shapes/units/versions, malicious pickles), YAML, paths from
manifests and archives. Nothing a file says may run code or make the toolkit write outside its output folder."""

from __future__ import annotations

import ast
import io
import os
import tarfile
from pathlib import Path

import pytest
import soundfile as sf
import torch

from helpers import FEATS, save_source, signal, write_tiny_corpus
from xlingual.checkpoint import load_checkpoint, load_model
from xlingual.cli import main
from xlingual.config import AdaptConfig, ConfigError, MatrixConfig, RecipeConfig, UnitConfig, load_config
from xlingual.corpus import PrepReport, RawUtterance, Utterance, build_manifest
from xlingual.train import TrainingError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "xlingual").glob("*.py")) + sorted((ROOT / "data_prep").glob("*.py"))


# ------------------------------------------------------------------------------------------- what the code calls


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else \
                getattr(f, "id", None)
            yield name, {k.arg: k.value for k in node.keywords}, node.lineno


def test_sources_load_checkpoints_weights_only_and_yaml_safely():
    """Every torch.load passes weights_only=True; YAML is read only with safe_load; no pickle, no allow_pickle."""
    bad = []
    for path in SOURCES:
        for name, kw, line in _calls(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if name == "torch.load":
                w = kw.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    bad.append(f"{where}: torch.load without weights_only=True")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "pickle.load",
                          "pickle.loads", "marshal.loads", "eval", "exec"):
                bad.append(f"{where}: {name}")
            elif name == "np.load" and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
                bad.append(f"{where}: np.load(allow_pickle=True)")
    assert bad == []


# ------------------------------------------------------------------------------------------------- checkpoints


class Payload:
    """Unpickling this calls os.mkdir(marker): what a hostile 'checkpoint' would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def source(corpus, tmp_path_factory):
    return save_source(tmp_path_factory.mktemp("src") / "tr.pt", corpus, "tr", UnitConfig(kind="char"))


def test_malicious_pickle_is_refused_without_running(source, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    ck = torch.load(source, weights_only=True)
    ck["meta"]["note"] = Payload(marker)
    torch.save(ck, evil)

    from xlingual.lid import load_lid
    from xlingual.transfer import load_source

    for load in (load_model, load_lid, lambda p: load_source(p, AdaptConfig()), load_checkpoint):
        with pytest.raises(ValueError, match="cannot load checkpoint"):
            load(evil)
    assert main(["decode", str(evil), str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "d")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
    assert main(["adapt", str(evil), "--language", "tr", "--out", str(tmp_path / "a")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "a").exists()
    # the payload is real: an unsafe load runs it (the control that makes the assertions above meaningful)
    torch.load(evil, weights_only=False)
    assert marker.is_dir()


def _tamper(ck: dict, case: str) -> object:
    meta = ck["meta"]
    if case == "other model shape":
        meta["dims"] = {**meta["dims"], "d_model": 48}
    elif case == "other unit set":
        meta["tokenizer"] = {**meta["tokenizer"], "units": meta["tokenizer"]["units"][:-2]}
    elif case == "other model architecture":
        meta["architecture"] = 1
    elif case == "other toolkit":
        meta["toolkit"] = "espnet"
    elif case == "not a checkpoint dict":
        return torch.zeros(3)
    elif case == "unknown model field":
        meta["dims"] = {**meta["dims"], "experts": 8}
    elif case == "unusable model field":
        meta["dims"] = {**meta["dims"], "n_layers": "many"}
    elif case == "unknown adaptation layer":
        meta["adaptation"] = {"kinds": ["backdoor"], "bottleneck": 4}
    elif case == "unreadable unit set":
        meta["tokenizer"] = {"kind": "spm", "units": ["<blank>", "|"], "spm_model": b"garbage"}
    elif case == "missing weights":
        del ck["model"]["head.weight"]
    elif case in ("NaN weights", "infinite weights"):  # what a diverged run would leave
        ck["model"]["head.weight"][0, 0] = float("nan" if case == "NaN weights" else "inf")
    return ck


CRAFTED = [
    ("other model shape", "weights do not fit the recorded model shape"),
    ("other unit set", r"unit set has \d+ units but its output layer \d+"),
    ("other model architecture", "model architecture 1; this xlingual .* builds architecture 2"),
    ("other toolkit", "not an xlingual checkpoint"),
    ("not a checkpoint dict", "not an xlingual checkpoint"),
    ("unknown model field", r"unknown \['experts'\]"),
    ("unusable model field", "cannot be built"),
    ("unknown adaptation layer", "cannot be built"),
    ("unreadable unit set", "unit set .* cannot be read"),
    ("missing weights", "weights do not fit"),
    ("NaN weights", r"holds non-finite \(NaN/inf\) weights: the run that wrote it diverged"),
    ("infinite weights", r"holds non-finite \(NaN/inf\) weights"),
]


@pytest.mark.parametrize("case, message", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_checkpoints_are_refused_clearly(source, tmp_path, case, message):
    from xlingual.transfer import load_source

    path = tmp_path / "crafted.pt"
    torch.save(_tamper(torch.load(source, weights_only=True), case), path)
    for load in (load_model, lambda p: load_source(p, AdaptConfig())):
        with pytest.raises(ValueError, match=message) as e:
            load(path)
        assert str(path) in str(e.value)


def test_crafted_checkpoint_through_the_cli_is_one_line(source, tmp_path, capsys):
    path = tmp_path / "crafted.pt"
    torch.save(_tamper(torch.load(source, weights_only=True), "other unit set"), path)
    assert main(["adapt", str(path), "--language", "tr", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output layer" in err and "Traceback" not in err


# -------------------------------------------------------------------------------------------------------- YAML


@pytest.mark.parametrize("text", [
    "language: !!python/object/apply:os.mkdir ['{marker}']\n",
    "train: !!python/object:xlingual.config.TrainConfig {{epochs: 1}}\n",
    "out_dir: !!python/name:os.system\n",
])
def test_yaml_python_tags_are_refused(tmp_path, capsys, text):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(RecipeConfig, path)
    with pytest.raises(ConfigError, match="invalid YAML value"):  # the same through a --set override
        load_config(RecipeConfig, None, [f"language={text.split(': ', 1)[1].strip().format(marker=marker)}"])
    assert main(["recipe", str(path)]) == 2
    assert "invalid YAML" in capsys.readouterr().err
    assert not marker.exists()


def test_bad_override_values_are_config_errors(capsys):
    assert main(["recipe", "--set", "train.epochs=[1"]) == 2
    assert "override 'train.epochs=[1': invalid YAML value" in capsys.readouterr().err


# ---------------------------------------------------------------------------- paths from manifests and archives

HOSTILE_IDS = ["../../escaped", "/tmp/absolute", "..", ".", "a/../../b", "..\\..\\win", ".hidden", "x" * 300,
               "ক" * 120, "", "con", "a\nb"]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_utterance_ids_cannot_write_outside_the_output_folder(tmp_path, make_wav):
    wav = make_wav(tmp_path / "in" / "a.wav", sr=8000).read_bytes()  # 8 kHz bytes: converted and written
    raws = [RawUtterance(id=i, audio=wav, text="hello", speaker="s", where=f"row{n}")
            for n, i in enumerate(HOSTILE_IDS)]
    before = _files(tmp_path)
    out = tmp_path / "work" / "out"
    utts = build_manifest(raws, "en", out, "train", PrepReport("train", strict=True))
    assert len(utts) == len(HOSTILE_IDS) and len({u.audio for u in utts}) == len(HOSTILE_IDS)  # none overwritten
    audio_dir = (out / "audio" / "train").resolve()
    for u in utts:
        p = Path(u.audio)
        assert p.parent.resolve() == audio_dir and not p.name.startswith(".") and len(p.name.encode()) < 200
    assert _files(tmp_path) - before == {Path(u.audio) for u in utts}


def test_ids_in_decoding_outputs_and_feature_cache_stay_inside(tmp_path, make_wav):
    from xlingual.features import compute_features
    from xlingual.score import write_scores

    wav = make_wav(tmp_path / "in" / "a.wav")
    utts = [Utterance(i, str(wav), "hello", "en", "s", 0.5) for i in HOSTILE_IDS]
    before = _files(tmp_path)
    store = compute_features(utts, tmp_path / "cache", FEATS, progress=False)
    assert store[HOSTILE_IDS[0]].shape[1] == FEATS.n_mels
    write_scores(tmp_path / "dec", {i: "hello" for i in HOSTILE_IDS}, {i: "hello" for i in HOSTILE_IDS})
    new = _files(tmp_path) - before
    assert new and all(p.is_relative_to(tmp_path / "cache") or p.is_relative_to(tmp_path / "dec") for p in new)


@pytest.mark.parametrize("language", ["../escaped", "/abs", "..", ".hidden", "a/b"])
def test_matrix_language_codes_must_be_folder_names(tmp_path, language):
    from xlingual.matrix import plan_cells

    with pytest.raises(ValueError, match="cannot be a folder name"):
        plan_cells(MatrixConfig(out_dir=str(tmp_path), sources=[language], targets=["bn"]))


def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    """A .tar.gz with (name, data, link target) members: data for files, a link target for symlinks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _wav_bytes() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, signal(0.3), 16000, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("member, link, why", [
    ("../../evil.wav", None, "has '..' in its path"),
    ("test/../../evil.wav", None, "has '..' in its path"),
    ("/tmp/evil.wav", None, "has an absolute path"),
    ("test/link.wav", "/etc/passwd", "data filter"),
    ("test/link.wav", "../../../outside", "data filter"),
])
def test_fleurs_archive_members_outside_the_folder_are_refused(tmp_path, member, link, why):
    from data_prep.fleurs import _extract_wavs
    from xlingual.corpus import ManifestError

    wav = _wav_bytes()
    tar = _tar(tmp_path / "corpus" / "test.tar.gz", [("test/1.wav", wav, None), (member, wav, link)])
    dest = tmp_path / "work" / "out" / "fleurs_audio" / "test"
    before = _files(tmp_path)
    with pytest.raises(ManifestError, match=f"member .*{why}.*refusing to extract") as e:
        _extract_wavs(tar, dest)
    assert str(tar) in str(e.value)
    assert {p for p in _files(tmp_path) - before if not p.is_relative_to(dest)} == set()
    assert not (dest / ".extracted.json").exists()  # never marked done: a fixed archive is extracted afresh


def test_fleurs_archive_with_repeated_names_is_refused(tmp_path):
    from data_prep.fleurs import _extract_wavs
    from xlingual.corpus import ManifestError

    wav = _wav_bytes()
    tar = _tar(tmp_path / "t.tar.gz", [("test/1.wav", wav, None), ("other/1.wav", wav, None)])
    with pytest.raises(ManifestError, match="are both 1.wav"):
        _extract_wavs(tar, tmp_path / "dest")
    good = _tar(tmp_path / "good.tar.gz", [("test/1.wav", wav, None), ("test/2.wav", wav, None)])
    assert sorted(p.name for p in _extract_wavs(good, tmp_path / "ok").iterdir()) == [".extracted.json", "1.wav",
                                                                                     "2.wav"]
