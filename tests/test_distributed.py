"""Data-parallel training (xlingual/distributed.py + train.fit under torchrun), on CPU with gloo and 2 processes.

The 2-process run is compared with a single process that takes the same global batches (the union of the two
ranks' batches at each step, the loss averaged over all their utterances). The two agree to float32 rounding,
not bit for bit: DDP sums the ranks' gradients in its all-reduce (bucketed, in its own order), where the single
process accumulates the two batches' gradients through autograd, and float addition is not associative; Adam's
normalization then carries differences of ~1e-7 relative into the weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ddp_worker as W
from helpers import write_tiny_corpus
from xlingual.distributed import shard_batches, step_sizes
from xlingual.schedules import lr_factor
from xlingual.checkpoint import load_checkpoint
from xlingual.train import FRAMES_PER_SECOND, adamw_impl, bucket_batches, collate, compute_loss

TOLERANCE = dict(rtol=1e-4, atol=1e-5)  # float32 summation order (see the module docstring)


@pytest.mark.parametrize("n_batches, world", [(3, 2), (4, 2), (1, 2), (7, 3), (5, 1), (2, 4)])
def test_shards_cover_every_batch_once_with_equal_steps(n_batches, world):
    batches = [[10 * i, 10 * i + 1] for i in range(n_batches)]
    shards = [shard_batches(batches, r, world) for r in range(world)]
    steps = -(-n_batches // world)
    assert all(len(s) == steps for s in shards)  # every rank takes the same number of steps
    used = sorted(i for s in shards for b in s for i in b)
    assert used == sorted(i for b in batches for i in b)  # each utterance exactly once
    assert sum(b == [] for s in shards for b in s) == steps * world - n_batches  # zero-weight steps, last only
    for s in range(steps):  # step s is batches s*world .. s*world+world-1
        assert [shards[r][s] for r in range(world) if shards[r][s]] == batches[s * world:(s + 1) * world]
    assert step_sizes(batches, world) == [sum(len(b) for b in batches[s * world:(s + 1) * world])
                                          for s in range(steps)]


def single_process_reference(train, dev, store, tok, world: int):
    """What the 2-process run should compute: each step on the union of the ranks' batches, in one process."""
    torch.set_num_threads(1)
    cfg = W.train_cfg()
    model = W.fresh_model(train, store, tok)
    from xlingual.asr import make_examples

    examples, _ = make_examples(train, store, tok)
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": params, "lr": cfg.lr}], lr=cfg.lr, betas=cfg.betas,
                            weight_decay=cfg.weight_decay, **adamw_impl(torch.device("cpu")))  # as train.py
    frames = [e.frames for e in examples]
    max_frames = int(cfg.max_batch_seconds * FRAMES_PER_SECOND)
    steps = -(-len(bucket_batches(frames, max_frames, cfg.seed, 0)) // world)
    step, losses = 0, []
    for epoch in range(cfg.epochs):
        model.train()
        batches = bucket_batches(frames, max_frames, cfg.seed, epoch)
        total, n = 0.0, 0
        for s in range(0, len(batches), world):
            group = batches[s:s + world]
            size = sum(len(b) for b in group)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(step, steps * cfg.epochs, cfg)
            loss = sum(compute_loss(model, collate(store, [examples[i] for i in b]), torch.device("cpu")) * len(b)
                       for b in group) / size
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            total += loss.item() * size
            n += size
            step += 1
        losses.append(total / n)
    return model, losses


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    corpus = write_tiny_corpus(tmp_path_factory.mktemp("corpus"), languages=("bn",))
    W.setup(corpus.dir)  # features cached here first: the ranks only read them
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).with_name("ddp_worker.py")), corpus.dir, str(out)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:  # show what the ranks were doing
        pytest.fail(f"torchrun timed out:\n{(e.stdout or b'')[-3000:]}\n{(e.stderr or b'')[-5000:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return corpus, out, ranks


def test_every_utterance_once_per_epoch_across_ranks(ddp_run):
    corpus, out, ranks = ddp_run
    train, _, _, _ = W.setup(corpus.dir)
    assert [r["world"] for r in ranks] == [2, 2]
    for epoch in range(W.train_cfg().epochs):  # the first fit's epochs
        shards = [r["shards"][epoch] for r in ranks]
        assert len(shards[0]) == len(shards[1]) == 2  # 3 batches: 2 steps each, rank 1's last one empty
        used = sorted(i for s in shards for b in s for i in b)
        assert used == list(range(len(train)))
        assert shards[1][-1] == []


def test_two_processes_match_one_process_on_the_same_global_batches(ddp_run):
    corpus, out, ranks = ddp_run
    train, dev, store, tok = W.setup(corpus.dir)
    reference, losses = single_process_reference(train, dev, store, tok, world=2)
    history = ranks[0]["history"]
    assert ranks[1]["history"] == history  # rank 0's records, broadcast
    assert [h["train_loss"] for h in history] == pytest.approx(losses, rel=1e-5)
    ddp = load_checkpoint(out / "full" / "last.pt")["model"]
    # parameters only: BatchNorm running statistics differ by design (each rank's come from its own batches,
    # and DDP keeps rank 0's), and they do not enter training-mode forward passes
    for name, p in reference.named_parameters():
        torch.testing.assert_close(ddp[name], p.detach(), **TOLERANCE, msg=name)  # (measured: equal here)
    start = W.fresh_model(train, store, tok).state_dict()
    changed = max(float((ddp[n] - start[n]).abs().max()) for n, _ in reference.named_parameters())
    assert changed > 1e-3  # the comparison is not vacuous: training moved the weights


def test_rank0_alone_writes_and_resume_is_bit_identical(ddp_run):
    corpus, out, ranks = ddp_run
    for run in ("full", "resumed"):
        assert {p.name for p in (out / run).iterdir()} == {"last.pt", "best.pt", "train_log.jsonl", "done.json"}
        assert len((out / run / "train_log.jsonl").read_text().splitlines()) == 2
    # (rank 1 ran with its write functions replaced by ones that raise: it wrote nothing)
    full, resumed = load_checkpoint(out / "full" / "last.pt"), load_checkpoint(out / "resumed" / "last.pt")
    assert full["state"]["step"] == resumed["state"]["step"] == 4
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
    assert [h["train_loss"] for h in ranks[0]["resumed_history"]] == [h["train_loss"] for h in ranks[0]["history"]]
