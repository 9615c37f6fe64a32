"""Learning tests: tiny runs on real (synthetic) speech that must learn, and the same runs with their labels
shuffled that must not. Each would fail if the target or label path were broken (a wrong transcript or language
reaching the loss, masks that hide the speech, a decoder that drops units): they were run once with such a break
to see them fail.

Chance levels are measured on the data, not assumed: for ASR, the CER of the best constant hypothesis (the one
training transcript that, output for every test utterance, scores best); for LID, the share of the largest class.
"""

from __future__ import annotations

import random

import pytest

from xlingual.config import CorpusConfig, FeatureConfig, LIDConfig, ModelConfig, TrainConfig
from xlingual.runs import execute
from xlingual.runspec import RunSpec, run_data
from xlingual.score import error_rates

# The ASR runs use one torch thread: the suite runs two test processes on two cores, and two spinning OpenMP threads
# beside another busy process ran that setup 5x slower (303 s instead of ~60 s) in CI. (The LID keeps 2 threads: with
# 1 its float path differs and it reached 0.71 instead of >= 0.8; the threshold is not lowered to suit a thread count.)
MODEL = ModelConfig(preset="tiny", d_model=64, n_heads=2, ffn_dim=128, n_layers=2, subsample_channels=16)
FEATS = FeatureConfig(n_mels=40)


def _asr_spec(corpus, epochs=40, cpu_bf16=False) -> RunSpec:
    return RunSpec(kind="scratch", languages=["tr"], corpus=CorpusConfig(kind="manifests", dir=str(corpus)),
                   features=FEATS, model=MODEL,
                   train=TrainConfig(epochs=epochs, max_batch_seconds=6, lr=5e-3, warmup_steps=20, threads=1,
                                     checkpoint_every_steps=0, progress=False, device="cpu", cpu_bf16=cpu_bf16))


def _shuffle_texts(utts, seed=0) -> None:
    texts = [u.text for u in utts]
    random.Random(seed).shuffle(texts)
    for u, t in zip(utts, texts):
        u.text = t


@pytest.fixture(scope="module")
def asr_runs(learning_corpus, tmp_path_factory):
    """The tiny ASR trained on the real transcripts and on transcripts shuffled across utterances."""
    out = tmp_path_factory.mktemp("asr_learning")
    real = execute(_asr_spec(learning_corpus), out / "real")
    data = run_data(_asr_spec(learning_corpus))
    _shuffle_texts(data["tr"]["train"])
    shuffled = execute(_asr_spec(learning_corpus), out / "shuffled", data=data)
    train, test = data["tr"]["train"], data["tr"]["test"]
    chance = min(error_rates([u.text for u in test], [h.text] * len(test))["cer"] for h in train)
    return real, shuffled, chance, out


def test_asr_training_loss_falls(asr_runs):
    real, _, _, out = asr_runs
    import json

    log = [json.loads(line) for line in (out / "real" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < 0.4 * log[0]["train_loss"]


def test_asr_learns_far_below_chance_on_new_voices(asr_runs):
    real, _, chance, _ = asr_runs
    assert chance > 60  # the constant hypothesis gets most characters wrong: the test is not trivial
    assert real["learned"] and real["test"]["cer"] < chance / 3, (real["test"], chance)


def test_asr_learns_with_cpu_bf16_autocast(asr_runs, learning_corpus):
    """train.cpu_bf16 (the forward pass in bf16 on CPU) must learn as float32 does: the same run, the same bar."""
    real, _, chance, out = asr_runs
    bf16 = execute(_asr_spec(learning_corpus, cpu_bf16=True), out / "bf16")
    assert bf16["key"] != real["key"]  # a different computation, so a different run
    assert bf16["learned"] and bf16["test"]["cer"] < chance / 3, (bf16["test"], real["test"], chance)


def test_asr_with_shuffled_transcripts_stays_near_chance(asr_runs):
    _, shuffled, chance, _ = asr_runs
    assert shuffled["test"]["cer"] > chance - 15, (shuffled["test"], chance)


def _lid_spec(corpus, out, epochs=20) -> tuple[LIDConfig, RunSpec]:
    cfg = LIDConfig(languages=["tr", "bn", "th"], out_dir=str(out), embed_dim=32,
                    corpus=CorpusConfig(kind="manifests", dir=str(corpus)), features=FEATS, model=MODEL,
                    # lr 1e-3, 20 epochs: at 3e-3 and 12 epochs this tiny LID reached 0.8 test accuracy for 2 of
                    # train seeds 0-4 (0.38-0.96; runs learned, then fell back to chance), so the test passed by the
                    # luck of seed 0 and float rounding could fail it; at 1e-3: 0.77-0.96 for seeds 0-9 with 12
                    # epochs, 0.85-0.98 with 20
                    train=TrainConfig(epochs=epochs, max_batch_seconds=12, lr=1e-3, warmup_steps=10, threads=2,
                                      checkpoint_every_steps=0, progress=False, device="cpu"))
    from xlingual.recipe import lid_spec

    return cfg, lid_spec(cfg)


@pytest.fixture(scope="module")
def lid_runs(learning_corpus, tmp_path_factory):
    """A tiny LID on 3 languages, and the same with the train utterances' languages shuffled."""
    out = tmp_path_factory.mktemp("lid_learning")
    _, spec = _lid_spec(learning_corpus, out / "real")
    real = execute(spec, out / "real", splits=("dev", "test"))
    data = run_data(spec)
    pool = [u for lang in spec.languages for u in data[lang]["train"]]
    random.Random(0).shuffle(pool)
    start = 0
    for lang in spec.languages:  # the same number of utterances per language, drawn from all languages
        n = len(data[lang]["train"])
        data[lang]["train"], start = pool[start:start + n], start + n
    shuffled = execute(spec, out / "shuffled", splits=("dev", "test"), data=data)
    return real, shuffled


def test_lid_identifies_new_voices_far_above_chance(lid_runs):
    real, _ = lid_runs
    chance = 1 / 3  # three languages of equal size
    assert real["learned"] and real["test"]["accuracy"] >= 0.8, real["test"]
    assert real["test"]["posterior_accuracy"] > chance + 0.3  # the frame head (averaged by the ranking) too


def test_lid_with_shuffled_languages_stays_near_chance(lid_runs):
    _, shuffled = lid_runs
    assert shuffled["test"]["accuracy"] < 0.6, shuffled["test"]
