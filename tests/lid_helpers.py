"""Builders shared by test_lid.py and test_ranking.py: a tiny 3-language eSpeak corpus and a tiny LID on it.

Both are built under pytest's session base temp folder and reused (the corpus by its files, the LID through
train_lid's done.json), so the two test modules pay for them once.
"""

from __future__ import annotations

from pathlib import Path

from xlingual.audio import SAMPLE_RATE, resample, save_audio
from xlingual.config import LIDConfig, from_dict
from xlingual.corpus import Utterance, read_manifest, write_manifest
from xlingual.espeak import synthesize

WORDS = {  # a few normalized words per language; an utterance speaks two of them
    "bn": ["আমি", "ভাত", "খাই", "বাংলা", "দেশ", "নদী", "পানি", "বই", "মাছ", "গান"],
    "tr": ["merhaba", "dünya", "kitap", "ev", "deniz", "güneş", "okul", "çay", "kalem", "yol"],
    "th": ["สวัสดี", "ประเทศ", "น้ำ", "บ้าน", "หนังสือ", "แมว", "ข้าว", "ภาษา", "ดอกไม้", "ถนน"],
}
SPLITS = {"train": 8, "dev": 3, "test": 3}  # utterances per language


def build_corpus(root: Path, languages=("bn", "tr", "th")) -> Path:
    """root/<lang>/{train,dev,test}.jsonl with 16 kHz WAVs; ids are '<lang>-<split>-<i>'."""
    for lang in languages:
        words = WORDS[lang]
        for split, n in SPLITS.items():
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
