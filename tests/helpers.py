"""Plain helpers shared by the tests (fixtures live in conftest.py): tiny synthetic corpora, an untrained source
checkpoint, the tiny matrix recipe's settings, `python -m xlingual.cli` subprocesses, and the tiny eSpeak LID setup.

Test modules import what they need from here; no test module imports another.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from xlingual.asr import build_tokenizer, new_model
from xlingual.checkpoint import model_meta
from xlingual.audio import SAMPLE_RATE, resample, save_audio
from xlingual.config import CorpusConfig, FeatureConfig, LIDConfig, ModelConfig, UnitConfig, from_dict
from xlingual.corpus import Utterance, read_manifest, write_manifest
from xlingual.espeak import synthesize
from xlingual.features import compute_features
from xlingual.runspec import load_language

ROOT = Path(__file__).resolve().parents[1]


# --- test audio -----------------------------------------------------------------------------------------------

def signal(seconds: float = 0.5, sr: int = 16000, channels: int = 1, freq: float = 220.0,
           seed: int = 0) -> np.ndarray:
    """A sine plus a little noise, (frames,) or (frames, channels) float32 in [-1, 1]."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    x = x.astype(np.float32)
    return x if channels == 1 else np.tile(x[:, None], (1, channels))


# --- a tiny 2-language corpus of tones and an untrained source checkpoint on it --------------------------------

TEXTS = {
    "bn": ["আমি ভাত খাই", "তুমি কেমন আছ", "বাংলা ভাষা", "আমার নাম রাম", "এখানে এসো", "ভালো আছি"],
    "tr": ["merhaba dünya", "bugün hava güzel", "iyi günler", "nasılsın", "çok teşekkürler", "evet hayır"],
    "th": ["สวัสดี", "ขอบคุณ", "ภาษาไทย", "แมว", "น้ำ", "บ้าน"],
}
SPLITS = {"train": 6, "dev": 2, "test": 2}
TINY = ModelConfig(preset="tiny", d_model=32, n_heads=2, ffn_dim=64, n_layers=2, subsample_channels=8)
FEATS = FeatureConfig(n_mels=40, specaugment=False)


def write_tiny_corpus(root: Path, languages=("bn", "tr")) -> CorpusConfig:
    """<root>/<lang>/{train,dev,test}.jsonl over ~1 s tones: enough to run every stage, not to learn speech."""
    rng = np.random.default_rng(0)
    for li, lang in enumerate(languages):
        for split, n in SPLITS.items():
            utts = []
            for i in range(n):
                sec = 0.8 + 0.1 * (i % 3)
                t = np.arange(int(16000 * sec)) / 16000
                wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * li + 25 * i) * t) + 0.02 * rng.standard_normal(t.size)
                path = root / lang / "wav" / f"{split}{i}.wav"
                save_audio(path, wav)
                utts.append(Utterance(f"{lang}_{split}{i}", str(path), TEXTS[lang][i % 6], lang, f"spk{i % 2}", sec))
            write_manifest(root / lang / f"{split}.jsonl", utts)
    return CorpusConfig(kind="manifests", dir=str(root))


def save_source(path: Path, corpus: CorpusConfig, language: str, units: UnitConfig, texts_from=None,
                model_cfg: ModelConfig = TINY) -> Path:
    """An untrained but complete source checkpoint (real CMVN, tokenizer, meta), as a pre-training run writes."""
    data = load_language(corpus, language)
    store = compute_features(data["train"], Path(corpus.dir) / ".features", FEATS, progress=False)
    tok = build_tokenizer(texts_from or data["train"], units)
    model = new_model(model_cfg, FEATS, tok.vocab_size, store, [u.id for u in data["train"]], seed=1)
    torch.save({"model": model.state_dict(), "meta": model_meta(model, "asr", FEATS, tok, language=language,
                                                                languages=[language], train_hours=None)}, path)
    return path


# --- the tiny pretrain x adapt matrix recipe -------------------------------------------------------------------

TINY_YAML = ROOT / "recipes" / "synthetic" / "matrix_tiny.yaml"


def settings(corpus_dir, out_dir, *extra) -> list[str]:
    return [f"corpus.dir={corpus_dir}", "corpus.kind=manifests", f"out_dir={out_dir}", "target_hours=0.001",
            "train.device=cpu", "adapt.train.device=cpu", "train.threads=1", "adapt.train.threads=1", *extra]


# a 2 x 1 matrix (sources bn, tr; target bn) of one-epoch runs: the executors' tests (local jobs and real SLURM)
TWO_BY_ONE = ("sources=[bn, tr]", "targets=[bn]", "source_hours=0.001", "size_pairs=[]", "variant_pairs=[]",
              "layer_sweep=[]", "train.epochs=1", "small_train={epochs: 1}", "adapt.train.epochs=1")


def two_by_one(corpus_dir, out_dir, *extra):
    """The MatrixConfig of TWO_BY_ONE over the tiny manifests in corpus_dir."""
    from xlingual.config import MatrixConfig, load_config

    return load_config(MatrixConfig, TINY_YAML, settings(corpus_dir, out_dir, *TWO_BY_ONE, *extra))


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("**/results.json")}


# --- `python -m xlingual.cli` in a subprocess: a tiny recipe run ------------------------------------------------

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
RECIPE = ["corpus.kind=manifests", "language=tr", "train.epochs=3", "train.max_batch_seconds=6",
          "train.checkpoint_every_steps=1", "train.warmup_steps=2", "train.progress=false", "train.threads=1",
          "train.device=cpu", "model.n_layers=1", "model.d_model=32", "model.ffn_dim=64",
          "model.subsample_channels=8", "features.n_mels=40"]


def sets(items) -> list[str]:
    return [x for s in items for x in ("--set", s)]


def start(args: list[str], log: Path) -> subprocess.Popen:
    """`python -m xlingual.cli <args>` in its own process, output to `log`."""
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "xlingual.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                                env=ENV, cwd=ROOT)


# --- a tiny 3-language eSpeak corpus and a tiny LID on it (test_lid, test_ranking, test_selection) ---------------
# Built under pytest's session base temp folder and reused (the corpus by its files, the LID through train_lid's
# done.json), so the modules pay for them once.

LID_WORDS = {  # a few normalized words per language; an utterance speaks two of them
    "bn": ["আমি", "ভাত", "খাই", "বাংলা", "দেশ", "নদী", "পানি", "বই", "মাছ", "গান"],
    "tr": ["merhaba", "dünya", "kitap", "ev", "deniz", "güneş", "okul", "çay", "kalem", "yol"],
    "th": ["สวัสดี", "ประเทศ", "น้ำ", "บ้าน", "หนังสือ", "แมว", "ข้าว", "ภาษา", "ดอกไม้", "ถนน"],
}
LID_SPLITS = {"train": 8, "dev": 3, "test": 3}  # utterances per language


def build_corpus(root: Path, languages=("bn", "tr", "th")) -> Path:
    """root/<lang>/{train,dev,test}.jsonl with 16 kHz WAVs; ids are '<lang>-<split>-<i>'."""
    for lang in languages:
        words = LID_WORDS[lang]
        for split, n in LID_SPLITS.items():
            manifest = root / lang / f"{split}.jsonl"
            if manifest.is_file():
                continue
            utts = []
            for i in range(n):
                k = (i * 3 + len(split)) % len(words)
                text = f"{words[k]} {words[(k + 1) % len(words)]}"
                wav, sr = synthesize(text, lang, rate=170 + 10 * (i % 3), pitch=40 + 5 * (i % 4), seed=i)
                wav = resample(wav, sr, SAMPLE_RATE)
                path = root / lang / "wav" / split / f"{lang}-{split}-{i}.wav"
                save_audio(path, wav, SAMPLE_RATE)
                utts.append(Utterance(id=f"{lang}-{split}-{i}", audio=str(path), text=text, language=lang,
                                      speaker=f"{lang}-spk{i % 2}-{split}", duration=round(len(wav) / SAMPLE_RATE, 4)))
            write_manifest(manifest, utts)
    return root


def tiny_lid_config(corpus: Path, out_dir: Path, languages=("bn", "tr", "th"), epochs: int = 2) -> LIDConfig:
    return from_dict(LIDConfig, {
        "languages": list(languages), "out_dir": str(out_dir),
        "corpus": {"kind": "manifests", "dir": str(corpus)},
        "features": {"n_mels": 40},
        "model": {"preset": "tiny", "d_model": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 1,
                  "conv_kernel": 7, "subsample_channels": 8},
        "train": {"epochs": epochs, "max_batch_seconds": 12.0, "lr": 3e-3, "warmup_steps": 2, "device": "cpu",
                  "threads": 2, "progress": False},
    })


def split_utts(corpus: Path, lang: str, split: str) -> list[Utterance]:
    return read_manifest(corpus / lang / f"{split}.jsonl")


# --- a small-vocabulary eSpeak corpus that a tiny model can learn in seconds (test_learning) --------------------
# Number words 1..10 in three unrelated languages; train speakers and test speakers are disjoint eSpeak voice
# variants (data_prep.synthetic.split_variants), so a test measures generalization to new voices, not memory.

NUMBER_WORDS = {
    "tr": "bir iki üç dört beş altı yedi sekiz dokuz on".split(),
    "bn": "এক দুই তিন চার পাঁচ ছয় সাত আট নয় দশ".split(),
    "th": "หนึ่ง สอง สาม สี่ ห้า หก เจ็ด แปด เก้า สิบ".split(),
}
LEARN_SPLITS = {"train": 48, "dev": 10, "test": 16}  # utterances per language


def build_learning_corpus(root: Path, languages=("tr", "bn", "th"), sizes=LEARN_SPLITS) -> Path:
    """root/<lang>/{train,dev,test}.jsonl: 2-4 number words per utterance, train/dev/test voices disjoint."""
    from data_prep.synthetic import split_variants

    variants = split_variants()
    for li, lang in enumerate(languages):
        for si, (split, n) in enumerate(sizes.items()):
            manifest = root / lang / f"{split}.jsonl"
            if manifest.is_file():
                continue
            rng = np.random.default_rng([li, si, 7])
            voices = variants[split]
            utts = []
            for i in range(n):
                text = " ".join(rng.choice(NUMBER_WORDS[lang], size=int(rng.integers(2, 5))))
                variant = voices[int(rng.integers(len(voices)))]
                wav, sr = synthesize(text, lang, variant, rate=int(rng.integers(150, 200)),
                                     pitch=int(rng.integers(35, 66)), seed=i)
                wav = resample(wav, sr, SAMPLE_RATE)
                path = root / lang / "wav" / split / f"{lang}-{split}-{i}.wav"
                save_audio(path, wav, SAMPLE_RATE)
                utts.append(Utterance(id=f"{lang}-{split}-{i}", audio=str(path), text=text, language=lang,
                                      speaker=variant, duration=round(len(wav) / SAMPLE_RATE, 4)))
            write_manifest(manifest, utts)
    return root


# --- a hand-written matrix folder: a real plan (matrix.plan_cells) with made-up results --------------------------

def fake_matrix(out: Path, sets: list[str], cer_of, n_utts: int = 60, learned=lambda cell: True) -> None:
    """Plan the tiny matrix recipe with `sets` into `out` and write each run's results.json and
    decode_test/errors.jsonl as if it had run: test CER cer_of(cell) (None: not run); per utterance of 20
    characters, Poisson errors at that rate (seeded by the run's name), so close cells are within noise; WER = 2 x CER."""
    import json

    from xlingual.config import MatrixConfig, load_config
    from xlingual.matrix import plan_cells, write_plan

    cfg = load_config(MatrixConfig, TINY_YAML, [f"out_dir={out}", *sets])
    cells = plan_cells(cfg)
    write_plan(out, cfg, cells)
    for c in json.loads((out / "cells.json").read_text())["cells"]:
        cer = cer_of(c)
        if cer is None:
            continue
        folder = out / c["name"]
        (folder / "decode_test").mkdir(parents=True)
        rng = np.random.default_rng(sum(map(ord, c["name"])))
        lines = [{"id": f"u{i}", "char_errors": int(rng.poisson(cer / 100 * 20)), "ref_chars": 20,
                  "errors": 1, "ref_words": 2} for i in range(n_utts)]
        (folder / "decode_test" / "errors.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        (folder / "results.json").write_text(json.dumps({
            "hash": c["hash"], "config_hash": c["config_hash"], "test": {"wer": 2 * cer, "cer": cer},
            "learned": learned(c), "training": {"epochs": 2, "steps": 4}}))
