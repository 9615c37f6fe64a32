"""LID data selection end to end at toy size: select, pre-train, adapt, score — three conditions."""

import json

from helpers import build_corpus, tiny_lid_config

from xlingual.config import MatrixConfig, from_dict
from xlingual.recipe import train_lid
from xlingual.selection import run_selection_experiment

TINY_MODEL = {"preset": "tiny", "d_model": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 1, "conv_kernel": 7,
              "subsample_channels": 8}


def test_selection_experiment(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    corpus = build_corpus(root / "lid_corpus")
    lid = train_lid(tiny_lid_config(corpus, root / "lid_tiny"))
    train = {"epochs": 1, "max_batch_seconds": 12.0, "threads": 1, "progress": False, "warmup_steps": 2}
    cfg = from_dict(MatrixConfig, {
        "corpus": {"kind": "manifests", "dir": str(corpus)}, "features": {"n_mels": 40}, "model": TINY_MODEL,
        "train": train, "target_hours": 0.005, "adapt": {"train": {**train, "schedule": "stlr"}}})
    out = root / "selection"
    result = run_selection_experiment(lid, "bn", ["bn", "tr", "th"], 0.004, cfg, out)
    names = [r["condition"] for r in result["rows"]]
    assert names[:2] == ["lid_selected", "pool_random"] and names[2].startswith("best_single_")
    assert all(r["pretrain_hours"] <= 0.004 + 1e-6 and "bn" not in r["hours_by_language"] for r in result["rows"])
    assert json.loads((out / "selection.json").read_text())["target"] == "bn"
    assert "| lid_selected |" in (out / "selection.md").read_text()
