"""Run by tests/test_distributed.py under `python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py`.

On every rank: one uninterrupted 2-process fit ("full"), then the same fit killed at a step and resumed
("resumed"). Rank 1 is forbidden to write any file of the run. Each rank records the batches that fit gave it
(rank<r>.json), for the test to check the sharding.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xlingual.asr import build_tokenizer, make_evaluator, make_examples, new_model  # noqa: E402
from xlingual.config import FeatureConfig, ModelConfig, TrainConfig, UnitConfig  # noqa: E402
from xlingual.corpus import read_manifest  # noqa: E402
from xlingual.features import compute_features  # noqa: E402

FEATS = FeatureConfig(n_mels=40, specaugment=False)
MODEL = ModelConfig(preset="tiny", d_model=32, n_heads=2, ffn_dim=64, n_layers=1, subsample_channels=8, dropout=0.0)
KILL_AT_CALL = 3  # compute_loss calls before the simulated kill (the same on both ranks: they step in lockstep)


def train_cfg() -> TrainConfig:
    # 6 utterances of 0.8-1.0 s in 2.1 s batches: 3 batches per epoch, so 2 ranks take 2 steps each and rank 1
    # runs a zero-weight step at the end of every epoch
    return TrainConfig(epochs=2, max_batch_seconds=2.1, lr=3e-3, warmup_steps=1, progress=False, threads=1,
                       device="cpu", checkpoint_every_steps=1, seed=0)


def setup(corpus_dir: str | Path):
    """(train utterances, dev utterances, store, tokenizer): the same in the test process and on every rank."""
    root = Path(corpus_dir)
    train, dev = read_manifest(root / "bn" / "train.jsonl"), read_manifest(root / "bn" / "dev.jsonl")
    store = compute_features(train + dev, root / ".features", FEATS, progress=False)
    return train, dev, store, build_tokenizer(train, UnitConfig())


def fresh_model(train, store, tok):
    return new_model(MODEL, FEATS, tok.vocab_size, store, [u.id for u in train], seed=0)


def main(corpus_dir: str, out: str) -> None:
    from xlingual import distributed
    from xlingual import train as train_mod

    torch.set_num_threads(1)
    out = Path(out)
    rank = int(__import__("os").environ["RANK"])
    train, dev, store, tok = setup(corpus_dir)
    examples, _ = make_examples(train, store, tok)
    seen = []
    real_shard = distributed.shard_batches

    def recording(batches, r, w):
        mine = real_shard(batches, r, w)
        seen.append(mine)
        return mine

    distributed.shard_batches = recording
    if rank != 0:
        def refuse(*a, **k):
            raise AssertionError(f"rank {rank} tried to write {a[0]}")
        train_mod._save = train_mod.write_json = train_mod.write_text = refuse

    def fit(folder: str) -> list[dict]:
        return train_mod.fit(fresh_model(train, store, tok), examples, store, train_cfg(), out / folder,
                             make_evaluator(store, dev, tok), run_key="ddp")

    history = fit("full")
    real_loss, calls = train_mod.compute_loss, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == KILL_AT_CALL:
            raise KeyboardInterrupt  # stands in for a kill between two steps
        return real_loss(*a, **k)

    train_mod.compute_loss = dying
    try:
        fit("resumed")
        raise AssertionError("the simulated kill did not happen")
    except KeyboardInterrupt:
        pass
    train_mod.compute_loss = real_loss
    resumed = fit("resumed")
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world": distributed.world_size(),
                                                      "history": history, "resumed_history": resumed,
                                                      "shards": seen}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    from xlingual.rank_exit import leave

    leave(0)  # as the CLI ends a rank (a plain exit may abort in gloo's threads: see xlingual/rank_exit.py)
