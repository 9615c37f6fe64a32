import json
import re

import pytest
import torch

from xlingual import train as train_mod
from xlingual.asr import build_tokenizer, make_evaluator, make_examples, new_model
from xlingual.config import FeatureConfig, ModelConfig, TrainConfig, UnitConfig
from xlingual.corpus import read_manifest
from xlingual.features import compute_features
from xlingual.train import TrainingError, bucket_batches, fit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from data_prep.synthetic import prepare_synthetic

    root = tmp_path_factory.mktemp("syn")
    prepare_synthetic(root, languages=("tr",), hours={"train": 0.01, "dev": 0.003, "test": 0.003}, progress=False)
    train, dev = read_manifest(root / "tr" / "train.jsonl"), read_manifest(root / "tr" / "dev.jsonl")
    feats = FeatureConfig()
    store = compute_features(train + dev, root / ".features", feats, progress=False)
    tok = build_tokenizer(train, UnitConfig())
    return train, dev, store, tok, feats


def run(tiny, out, resume=True, **over):
    train, dev, store, tok, feats = tiny
    args = dict(epochs=2, max_batch_seconds=8, progress=False, checkpoint_every_steps=1, threads=1, warmup_steps=2)
    cfg = TrainConfig(**{**args, **over})
    model = new_model(ModelConfig(n_layers=1, d_model=32, ffn_dim=64, subsample_channels=8), feats, tok.vocab_size,
                      store, [u.id for u in train], cfg.seed)
    hist = fit(model, make_examples(train, store, tok)[0], store, cfg, out, make_evaluator(store, dev, tok),
               specaug=feats, run_key="k", resume=resume)
    return model, hist


@pytest.mark.parametrize("frames, max_frames", [([5, 1, 9, 3, 3, 7], 10), ([4] * 10, 12), ([1], 1)])
def test_bucket_batches_cover_everything_within_limit(frames, max_frames):
    batches = bucket_batches(frames, max_frames, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(frames)))
    assert all(max(frames[i] for i in b) * len(b) <= max_frames for b in batches)
    # composition is fixed across epochs (constant steps per epoch); only the order changes
    assert sorted(map(sorted, batches)) == sorted(map(sorted, bucket_batches(frames, max_frames, 0, 5)))


def test_training_is_deterministic_and_logged(tiny, tmp_path):
    m1, h1 = run(tiny, tmp_path / "a")
    m2, h2 = run(tiny, tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert [h["train_loss"] for h in h1] == [h["train_loss"] for h in h2]
    assert len(h1) == 2 and {"dev_wer", "dev_cer", "dev_loss", "audio_sec_per_sec"} <= set(h1[0])
    assert (tmp_path / "a" / "best.pt").is_file() and (tmp_path / "a" / "done.json").is_file()
    assert len((tmp_path / "a" / "train_log.jsonl").read_text().splitlines()) == 2


def test_cpu_bf16_runs_the_forward_in_bf16_and_keeps_float32_weights(tiny, tmp_path, monkeypatch):
    seen = []
    linear = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: seen.append(linear(self, x).dtype) or
                        linear(self, x))
    m16, h16 = run(tiny, tmp_path / "bf16", cpu_bf16=True)
    assert torch.bfloat16 in seen and all(p.dtype == torch.float32 for p in m16.parameters())
    seen.clear()
    m32, h32 = run(tiny, tmp_path / "fp32")
    assert torch.bfloat16 not in seen
    # the same computation rounded differently: close to float32's loss, not equal to it
    assert h16[0]["train_loss"] == pytest.approx(h32[0]["train_loss"], rel=0.02)
    assert h16[0]["train_loss"] != h32[0]["train_loss"]


@pytest.mark.parametrize("eval_from, epochs, evaluated", [
    (0.0, 4, [1, 2, 3, 4]), (0.5, 4, [3, 4]), (0.5, 25, list(range(13, 26))), (0.9, 4, [4]), (0.99, 1, [1])])
def test_dev_passes_start_at_eval_from_and_always_include_the_last_epoch(eval_from, epochs, evaluated):
    cfg = TrainConfig(epochs=epochs, eval_from=eval_from)
    assert [e + 1 for e in range(epochs) if train_mod.evaluates(e, cfg)] == evaluated


def test_skipped_dev_passes_change_only_which_epochs_can_be_best(tiny, tmp_path):
    every, h_every = run(tiny, tmp_path / "every", epochs=4)
    late, h_late = run(tiny, tmp_path / "late", epochs=4, eval_from=0.5)
    # training itself is untouched: same weights, same losses
    assert all(torch.equal(a, b) for a, b in zip(every.state_dict().values(), late.state_dict().values()))
    assert [h["train_loss"] for h in h_every] == [h["train_loss"] for h in h_late]
    assert ["dev_cer" in h for h in h_late] == [False, False, True, True]  # one record per epoch all the same
    assert [h["dev_cer"] for h in h_late[2:]] == [h["dev_cer"] for h in h_every[2:]]
    done = json.loads((tmp_path / "late" / "done.json").read_text())
    best = min(range(2, 4), key=lambda e: h_every[e]["dev_wer"])  # the first minimum among epochs 3-4
    assert done["best_epoch"] == best + 1 and done["best"] == h_every[best]["dev_wer"]
    assert torch.load(tmp_path / "late" / "best.pt", weights_only=False)["epoch"] == best + 1


@pytest.mark.parametrize("kill_at_call", [2, 5])
def test_resume_after_interruption_is_bit_identical(tiny, tmp_path, monkeypatch, kill_at_call):
    reference, _ = run(tiny, tmp_path / "ref")
    real, calls = train_mod.compute_loss, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == kill_at_call:
            raise KeyboardInterrupt  # stands in for a kill between two steps
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "compute_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, tmp_path / "killed")
    monkeypatch.setattr(train_mod, "compute_loss", real)
    resumed, _ = run(tiny, tmp_path / "killed")
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()))


def test_resume_refuses_other_configuration(tiny, tmp_path):
    run(tiny, tmp_path / "x")
    (tmp_path / "x" / "done.json").unlink()
    train, dev, store, tok, feats = tiny
    model = new_model(ModelConfig(n_layers=1, d_model=32, ffn_dim=64, subsample_channels=8), feats, tok.vocab_size,
                      store, [u.id for u in train], 0)
    with pytest.raises(TrainingError, match="different configuration"):
        fit(model, make_examples(train, store, tok)[0], store, TrainConfig(epochs=2, progress=False), tmp_path / "x",
            make_evaluator(store, dev, tok), run_key="other")


def test_nonfinite_losses_stop_with_clear_message(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "compute_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match="non-finite"):
        run(tiny, tmp_path / "nan", max_nonfinite=3)


DIVERGED = [  # (lr, max_nonfinite, what stops the run); the tiny epoch has 6 steps
    (float("inf"), 3, "3 consecutive non-finite losses"),  # the step check, within the epoch
    (1e12, 3, "non-finite"),
    (float("inf"), 20, "the model's weights became non-finite"),  # the epoch ends first: the end-of-epoch check
]


@pytest.mark.parametrize("lr, max_nonfinite, message", DIVERGED, ids=["inf, step check", "1e12, step check",
                                                                      "inf, end of epoch"])
def test_a_diverged_model_is_never_saved_as_a_result(tiny, tmp_path, lr, max_nonfinite, message):
    """An infinite or absurd learning rate makes the weights non-finite: the run stops, and no best.pt with NaN
    weights is left as its result. Where the epoch ends before `max_nonfinite` skipped steps (every step after
    the first skipped), its dev score would still select the diverged model (issue 14: `train.lr=.inf` exited 0
    with NaN in best.pt); the weights are checked before best.pt is written."""
    with pytest.raises(TrainingError, match=message):
        run(tiny, tmp_path / "div", lr=lr, max_nonfinite=max_nonfinite, epochs=1)
    assert not (tmp_path / "div" / "best.pt").exists()  # epoch 1 diverged: nothing to keep as a result


def test_console_shows_small_rates_and_writes_plain_lines_to_a_log(tiny, tmp_path, capsys):
    """With stderr not a terminal (captured here, as a log file or a pipe would be) the epoch's progress is plain
    lines, no carriage-return redraws; the epoch line shows a small learning rate in significant digits (issue
    14: `lr=0.0` for 2e-5, and a 15-epoch log of 168 KB of redraws)."""
    run(tiny, tmp_path / "log", lr=2e-5, epochs=1, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    record = json.loads((tmp_path / "log" / "train_log.jsonl").read_text().splitlines()[0])
    epoch_line = [line for line in err.splitlines() if line.startswith("[log] epoch=1 ")]
    assert len(epoch_line) == 1
    shown = re.search(r" lr=(\S+)", epoch_line[0]).group(1)
    assert float(shown) == pytest.approx(record["lr"], rel=1e-3) and 0 < float(shown) < 1e-4
    assert len(err.splitlines()) < 10  # the bar's first and last line, and the epoch line


def test_utterance_longer_than_a_batch_is_reported(tiny, tmp_path):
    with pytest.raises(TrainingError, match="longer than one batch"):
        run(tiny, tmp_path / "long", max_batch_seconds=0.5)


def test_interrupted_run_needs_explicit_resume_when_asked(tiny, tmp_path, monkeypatch):
    real, calls = train_mod.compute_loss, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "compute_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, tmp_path / "r")
    monkeypatch.setattr(train_mod, "compute_loss", real)
    with pytest.raises(TrainingError, match="pass --resume"):
        run(tiny, tmp_path / "r", resume=False)
