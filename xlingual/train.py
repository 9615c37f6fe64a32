"""The one training loop, shared by pre-training, adaptation and language ID.

Written out top to bottom: bucketed batches -> SpecAugment -> forward -> loss (CTC for ASR, per-frame
cross-entropy for LID) -> clipped AdamW step with a per-step LR -> periodic resumable checkpoints -> per-epoch
dev evaluation, logging and best-model keeping.

Reproducibility: batch order comes from (seed, epoch), and each step reseeds dropout and SpecAugment from
(seed, step), so a run killed anywhere and resumed from its last checkpoint takes exactly the same steps as an
uninterrupted one (bit-identical on CPU).

Data parallel: launched by `torchrun` (RANK/WORLD_SIZE/LOCAL_RANK set), the same loop runs on every rank with
the model in DistributedDataParallel and each rank taking its share of every epoch's batches (see
distributed.py for the sharding rule); rank 0 alone evaluates, writes checkpoints, logs and done.json, and the
others wait for it. Not launched so, nothing below differs from a plain single-process run.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import distributed
from .config import FeatureConfig, TrainConfig
from .features import FeatureStore, spec_augment
from .progress import progress
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .fileio import write_json, write_text
from .schedules import lr_factor

FRAMES_PER_SECOND = 100  # 10 ms hop
LossFn = Callable[[torch.nn.Module, dict, torch.device], torch.Tensor]


class TrainingError(RuntimeError):
    """A run that cannot continue; the message says why and what was kept."""


@dataclass
class Example:
    id: str  # utterance id (key into the FeatureStore)
    frames: int  # number of feature frames (what batching budgets for)
    target: list[int] | int  # CTC unit ids (ASR) or a language index (LID)
    crop: int = 0  # > 0: train on a random window of at most this many frames (LID); 0 = the whole utterance


@dataclass
class Setup:
    """What a run kind (asr, transfer, lid) hands to the one training loop: runs.train passes it to fit."""

    model: object  # the AcousticModel to train
    examples: list  # the training examples (train.Example)
    store: object  # their features (features.FeatureStore)
    evaluate: Callable  # model -> dev metrics, after every epoch
    select: tuple[str, str]  # (dev metric, "min" | "max") choosing best.pt
    meta: dict  # stored in every checkpoint (checkpoint.model_meta)
    features: FeatureConfig  # the run's features (SpecAugment settings for training)
    param_groups: list[dict] | None = None  # AdamW groups (discriminative LRs); None = one group
    on_epoch_start: Callable[[int], None] | None = None  # freezing plans
    loss: Callable | None = None  # None = train.compute_loss (CTC)
    skipped: int = 0  # training utterances left out (too short for their transcript)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but no CUDA device is visible; use device=auto or cpu")
    return torch.device(name)


def adamw_impl(device: torch.device) -> dict:
    """AdamW's fused kernel where torch has one (CPU, CUDA): one pass over all parameters instead of a loop over
    the ~70 tensors of a small model, whose per-tensor cost made the optimizer ~12% of a 16-second-batch step
    (bench/optimizations.py, fused_adamw). It differs from the loop only by float rounding."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


def bucket_batches(frames: list[int], max_frames: int, seed: int, epoch: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, each at most `max_frames` padded frames.

    Sorting by length keeps padding small; the batch order (not the composition) is shuffled per epoch, so every
    epoch has the same number of steps — the LR schedule can be computed up front.
    """
    order = sorted(range(len(frames)), key=lambda i: (frames[i], i))
    batches, cur, longest = [], [], 0
    for i in order:
        longest_if = max(longest, frames[i])
        if cur and longest_if * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, longest_if = [], frames[i]
        cur.append(i)
        longest = longest_if
    if cur:
        batches.append(cur)
    random.Random(seed * 1_000_003 + epoch).shuffle(batches)
    return batches


def collate(store: FeatureStore, examples: list[Example], pin: bool = False,
            generator: torch.Generator | None = None) -> dict:
    """Pad a batch: feats (B, T, F), feat_lens (B,), and targets (sum L,) + target_lens (B,) or labels (B,).

    pin: page-locked tensors (for a CUDA device), so that the copies to it can be asynchronous (non_blocking).
    generator: draws the window of an example with a crop (its start); the same generator state, the same windows.
    """
    feats = [_window(store[e.id], e.crop, generator) for e in examples]
    lens = torch.tensor([f.shape[0] for f in feats])
    padded = torch.zeros(len(feats), int(lens.max()), store.n_mels)
    for i, f in enumerate(feats):
        padded[i, : f.shape[0]] = f
    batch = {"ids": [e.id for e in examples], "feats": padded, "feat_lens": lens}
    if isinstance(examples[0].target, int):
        batch["labels"] = torch.tensor([e.target for e in examples])
    else:
        batch["targets"] = torch.tensor([t for e in examples for t in e.target], dtype=torch.long)
        batch["target_lens"] = torch.tensor([len(e.target) for e in examples])
    if pin:
        batch.update({k: v.pin_memory() for k, v in batch.items() if isinstance(v, torch.Tensor)})
    return batch


def _window(feats: torch.Tensor, crop: int, generator: torch.Generator | None) -> torch.Tensor:
    """(T, F) -> a random window of `crop` frames when T is longer (crop 0: all of it)."""
    if not crop or feats.shape[0] <= crop:
        return feats
    start = int(torch.randint(0, feats.shape[0] - crop + 1, (1,), generator=generator))
    return feats[start:start + crop]


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_loss(model, batch: dict, device: torch.device) -> torch.Tensor:
    """Mean loss per utterance: CTC for ASR batches, frame-level cross-entropy for LID batches.

    On CUDA: the forward pass under bf16 autocast, the loss in float32. CTC runs on the GPU through PyTorch's
    native CUDA kernel (int64 targets and lengths on the device; cuDNN's CTC would need every input length equal
    to the padded length and int32 targets on the CPU, which padded batches do not meet).
    """
    feats, lens = batch["feats"].to(device, non_blocking=True), batch["feat_lens"].to(device, non_blocking=True)
    # on CPU no autocast of its own: a CPU autocast around the call (fit's train.cpu_bf16) stays in force
    with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext():
        logits, out_lens = model(feats, lens)
    return loss_from_logits(logits, out_lens, batch)


def loss_from_logits(logits: torch.Tensor, out_lens: torch.Tensor, batch: dict) -> torch.Tensor:
    """logits (B, T', V), out_lens (B,) -> mean loss per utterance (CTC, or frame cross-entropy for LID)."""
    device = logits.device
    logits = logits.float()
    if "labels" in batch:
        mask = torch.arange(logits.shape[1], device=device)[None, :] < out_lens[:, None]
        labels = batch["labels"].to(device, non_blocking=True)[:, None].expand(-1, logits.shape[1])
        ce = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (B, T')
        return ((ce * mask).sum(1) / out_lens).mean()
    log_probs = logits.log_softmax(-1).transpose(0, 1)  # (T', B, V) as ctc_loss wants
    loss = F.ctc_loss(log_probs, batch["targets"].to(device, non_blocking=True), out_lens,
                      batch["target_lens"].to(device, non_blocking=True),
                      blank=0, reduction="sum", zero_infinity=False)
    return loss / len(batch["ids"])


def fit(model: torch.nn.Module, train: list[Example], store: FeatureStore, cfg: TrainConfig, out_dir: str | Path,
        evaluate: Callable[[torch.nn.Module], dict], select: tuple[str, str] = ("dev_wer", "min"),
        param_groups: list[dict] | None = None, on_epoch_start: Callable[[int], None] | None = None,
        specaug: FeatureConfig | None = None, meta: dict | None = None, run_key: str = "",
        resume: bool = True, loss: LossFn | None = None) -> list[dict]:
    """Train `model` on `train`, evaluating on dev after each epoch (from cfg.eval_from on); returns the per-epoch
    history (one record per epoch; the dev metrics only in evaluated ones).

    Args:
        evaluate: model -> dict of dev metrics (e.g. {"dev_loss", "dev_wer", "dev_cer"}); called in eval mode.
        select: (metric, "min"|"max") deciding which epoch's model becomes best.pt.
        param_groups: AdamW groups (each with "params", "lr", optional "name"); default one group at cfg.lr.
        on_epoch_start: called with the epoch number before it starts (freezing plans set requires_grad here).
        specaug: SpecAugment settings (None or specaugment=False: none).
        meta: plain data stored in every checkpoint beside the weights (model dims, tokenizer, ...).
        run_key: identifies the configuration; resuming a checkpoint written under another key is refused.
        resume: continue from out_dir/last.pt when a previous run was interrupted; False refuses to touch it.
        loss: (model, batch, device) -> mean loss per utterance; default `compute_loss` (CTC, or frame CE).
    Outputs in out_dir: last.pt (resumable), best.pt (weights + meta), train_log.jsonl, done.json.
    Raises:
        TrainingError: no data, an utterance longer than a batch, a run that keeps producing non-finite losses, or
            a model that is not finite at the end (never saved as a result).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = out_dir / "done.json"
    if done.is_file():
        finished = json.loads(done.read_text())
        if finished.get("run_key") == run_key:
            return finished["history"]
    if not train:
        raise TrainingError(f"{out_dir}: no training utterances; check the manifest and the hours budget")
    run = _Run(model, train, store, cfg, out_dir, param_groups, specaug, meta, run_key, loss or compute_loss)
    run.resume(resume)
    metric, mode = select
    while run.state["epoch"] < cfg.epochs:
        if on_epoch_start:
            on_epoch_start(run.state["epoch"])
        t0 = time.time()
        for b, batch in run.epoch_batches():
            run.step(b, batch)
            if cfg.checkpoint_every_steps and run.state["step"] % cfg.checkpoint_every_steps == 0:
                run.checkpoint()
        run.end_epoch(evaluate, metric, mode, t0)
    run.finish(metric)
    return run.state["history"]


class _Run:
    """The state of one fit() call and its named steps: resume, step, end_epoch (evaluate, keep the best, log,
    checkpoint), finish. Everything that must survive a kill is in `state` (saved in last.pt)."""

    def __init__(self, model, train, store, cfg, out_dir, param_groups, specaug, meta, run_key, loss):
        self.model, self.train, self.store, self.cfg, self.out_dir = model, train, store, cfg, out_dir
        self.specaug, self.meta, self.run_key, self.loss = specaug, meta or {}, run_key, loss
        self.device = distributed.init(pick_device(cfg.device))  # under torchrun: this rank's GPU, group joined
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0  # the one process that evaluates and writes
        # every rank here before any reads last.pt: rank 0 may still be writing it when another rank re-enters fit
        # after a failure in the same process (the ranks must resume from the same checkpoint)
        distributed.barrier(self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.threads or distributed.cpu_threads())
        self.cpu_bf16 = cfg.cpu_bf16 and self.device.type == "cpu"
        if self.cpu_bf16 and self.main and not cpu_has_bf16():
            print(f"[{out_dir.name}] warning: train.cpu_bf16 on a CPU without bf16 matrix units (AMX or AVX512-BF16): "
                  "bf16 is emulated there and trains slower than float32", file=sys.stderr, flush=True)
        model.to(self.device)
        groups = param_groups or [{"params": list(model.parameters()), "lr": cfg.lr, "name": "all"}]
        for g in groups:
            g.setdefault("base_lr", g["lr"])
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                     **adamw_impl(self.device))
        self.max_frames = int(cfg.max_batch_seconds * FRAMES_PER_SECOND)
        self.frames = [e.frames for e in train]
        _check_lengths(train, self.max_frames, cfg)
        steps_per_epoch = -(-len(bucket_batches(self.frames, self.max_frames, cfg.seed, 0)) // self.world)
        self.total_steps = steps_per_epoch * cfg.epochs
        self.net = model  # what the steps run: the model, or under torchrun its DistributedDataParallel wrapper
        self.state = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_epoch": 0, "history": [],
                      "nonfinite": 0, "bad_epochs": 0, "seconds": 0.0,
                      # [loss sum, utterances, skipped steps, audio frames] of this epoch: checkpointed, so a
                      # resumed epoch logs the same figures
                      "epoch_acc": [0.0, 0, 0, 0]}
        self.last = out_dir / "last.pt"

    def resume(self, allowed: bool) -> None:
        """Continue from last.pt when an earlier process was interrupted (same run key only)."""
        if self.last.is_file():
            if not allowed:
                raise TrainingError(f"{self.out_dir} holds an interrupted run (last.pt); pass --resume to continue "
                                    f"it, or delete the folder to start over")
            try:
                ck = load_checkpoint(self.last)
            except (CheckpointError, FileNotFoundError) as e:
                raise TrainingError(f"{e}; delete it to start this run afresh") from None
            if ck.get("run_key") != self.run_key:
                raise TrainingError(f"{self.last} was written by a different configuration or code version; use a "
                                    f"new output folder, or delete {self.out_dir} to retrain")
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optimizer"])
            self.state.update(ck["state"])
        if self.world > 1 and distributed.broadcast_object(self.state["step"], self.device) != self.state["step"]:
            raise TrainingError(f"rank {self.rank} read another {self.last} than rank 0 did; the ranks must share "
                                f"out_dir")

    def epoch_batches(self):
        """(index, batch) of this epoch's remaining steps; this rank's share under torchrun."""
        self.model.train()
        batches = bucket_batches(self.frames, self.max_frames, self.cfg.seed, self.state["epoch"])
        spare = batches[0]  # what a rank left without a batch in the epoch's last step computes, with weight 0
        self.sizes = None
        if self.world > 1:
            self.net = distributed.wrap(self.model, self.device, self.net)  # re-wrapped when what trains changed
            self.sizes = distributed.step_sizes(batches, self.world)
            batches = distributed.shard_batches(batches, self.rank, self.world)  # [] = a zero-weight step
        self.bar = progress(total=len(batches) - self.state["batch"], unit="batch",
                            desc=f"[{self.out_dir.name}] epoch {self.state['epoch'] + 1}/{self.cfg.epochs}",
                            enabled=self.cfg.progress and self.main)
        for b in range(self.state["batch"], len(batches)):
            self.n_utts = len(batches[b])  # 0: this rank has no batch in this step
            gen = torch.Generator().manual_seed(self.step_seed())  # crops: drawn from (seed, step), resume-safe
            yield b, collate(self.store, [self.train[i] for i in batches[b] or spare], pin=self.device.type == "cuda",
                             generator=gen)
        self.bar.close()

    def step_seed(self) -> int:
        """Everything random in a step derives from (seed, step) and the rank: resume-safe determinism."""
        return (self.cfg.seed * 1_000_003 + self.state["step"]) * self.world + self.rank

    def step(self, b: int, batch: dict) -> None:
        """One optimizer step: SpecAugment, forward, loss, backward, clipped AdamW at this step's LR. A non-finite
        loss or gradient skips the step (weights untouched) and counts it; many in a row stop the run."""
        state, acc, cfg = self.state, self.state["epoch_acc"], self.cfg
        seed = self.step_seed()
        torch.manual_seed(seed)
        if self.specaug is not None and self.specaug.specaugment:
            batch["feats"] = spec_augment(batch["feats"], batch["feat_lens"], self.specaug,
                                          torch.Generator().manual_seed(seed))
        factor = lr_factor(state["step"], self.total_steps, cfg)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
            loss = self.loss(self.net, batch, self.device)
        finite = bool(torch.isfinite(loss))
        step_sum, step_n = loss.item() * self.n_utts, self.n_utts
        if self.world > 1:
            # one all-reduce: is every rank's loss finite (all step, or none), and the step's loss sum and
            # utterances over all ranks (so every rank, and the checkpoint, holds the epoch's figures)
            bad, step_sum, step_n = distributed.all_sum([float(not finite), step_sum, step_n], self.device)
            finite = bad == 0
            # DDP averages the ranks' gradients: weighting each rank's mean by its share of the step's utterances
            # makes the update that of the mean over all of them (0 for a rank without a batch)
            loss = loss * (self.n_utts * self.world / self.sizes[b])
        self.opt.zero_grad(set_to_none=True)
        if finite:
            loss.backward()
            # a finite loss can still overflow in backward; an inf/NaN gradient would make every weight NaN
            finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)))
        if finite:
            state["nonfinite"] = 0
            self.opt.step()
            acc[0] += step_sum
            acc[1] += int(step_n)
        else:
            self.opt.zero_grad(set_to_none=True)
            state["nonfinite"] += 1
            acc[2] += 1
            if state["nonfinite"] >= cfg.max_nonfinite:
                kept = [p.name for p in (self.last, self.out_dir / "best.pt") if p.is_file()]
                raise TrainingError(
                    f"{self.out_dir}: {state['nonfinite']} consecutive non-finite losses or gradients (step "
                    f"{state['step']}, epoch {state['epoch'] + 1}); stopped. "
                    + (f"The last good checkpoints are kept ({', '.join(kept)}); " if kept else
                       "No checkpoint was written yet; ")
                    + "lower train.lr, or check the data (utterances too short for their transcripts, empty or "
                      "corrupt audio)")
        if self.n_utts:
            acc[3] += int(batch["feat_lens"].sum())
        state["step"] += 1
        state["batch"] = b + 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss.item():.3f}")

    def end_epoch(self, evaluate, metric: str, mode: str, t0: float) -> None:
        """Evaluate on dev (rank 0), keep the best model, apply early stopping, checkpoint, log."""
        state, acc = self.state, self.state["epoch_acc"]
        elapsed = time.time() - t0
        frames = distributed.all_sum([acc[3]], self.device)[0] if self.world > 1 else acc[3]
        evaluated = evaluates(state["epoch"], self.cfg)
        self.model.eval()
        record = None
        if self.main:
            with torch.no_grad():
                dev = evaluate(self.model) if evaluated else {}
            record = {"epoch": state["epoch"] + 1, "step": state["step"], "train_loss": acc[0] / max(acc[1], 1),
                      "nonfinite_steps": acc[2],  # steps skipped for a non-finite loss or gradient
                      "lr": self.opt.param_groups[-1]["lr"], "epoch_seconds": round(elapsed, 2),
                      "audio_sec_per_sec": round(frames / FRAMES_PER_SECOND / max(elapsed, 1e-9), 1), **dev}
        if self.world > 1:
            record = distributed.broadcast_object(record, self.device)  # the others wait while rank 0 evaluates
        state["history"].append(record)  # one record per epoch (evaluated or not): history[e - 1] is epoch e
        value = record.get(metric)  # None for an epoch without a dev pass: no candidate for best.pt, no bad epoch
        if evaluated and (state["best"] is None or (value < state["best"] if mode == "min" else value > state["best"])):
            _check_finite(self.model, self.out_dir)
            state["best"], state["best_epoch"], state["bad_epochs"] = value, state["epoch"] + 1, 0
            if self.main:
                save_checkpoint(self.out_dir / "best.pt", {"model": self.model.state_dict(), "meta": self.meta,
                                                           "epoch": state["epoch"] + 1, metric: value})
        elif evaluated:
            state["bad_epochs"] += 1
        state["epoch"], state["batch"], state["epoch_acc"] = state["epoch"] + 1, 0, [0.0, 0, 0, 0]
        state["seconds"] += time.time() - t0
        if self.cfg.patience and state["bad_epochs"] >= self.cfg.patience:
            state["epoch"] = self.cfg.epochs  # early stop: the remaining epochs are skipped, also on resume
        self.checkpoint()
        if self.main:
            self.log(record)

    def checkpoint(self) -> None:
        if self.main:
            save_checkpoint(self.last, {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                                        "state": self.state, "run_key": self.run_key, "meta": self.meta})

    def log(self, record: dict) -> None:
        # the log is rewritten from the checkpointed history, so a kill never leaves it duplicated or short
        write_text(self.out_dir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in self.state["history"]))
        if self.cfg.progress:
            print(f"[{self.out_dir.name}] " + " ".join(f"{k}={_shown(v)}" for k, v in record.items()),
                  file=sys.stderr, flush=True)

    def finish(self, metric: str) -> None:
        if self.main:
            write_json(self.out_dir / "done.json", {
                "run_key": self.run_key, "best": self.state["best"], "best_epoch": self.state["best_epoch"],
                "metric": metric, "seconds": round(self.state["seconds"], 2), "history": self.state["history"]})
        distributed.barrier(self.device)  # no rank returns before rank 0's files are complete


def evaluates(epoch: int, cfg: TrainConfig) -> bool:
    """Whether epoch `epoch` (0-based) ends with a dev pass: those after the first cfg.eval_from x epochs, and always
    the last one (so every run has a best.pt and a final dev verdict)."""
    return epoch + 1 > int(cfg.eval_from * cfg.epochs) or epoch + 1 == cfg.epochs


def _shown(v) -> str:
    """A logged value as people read it: 4 significant digits for floats (an LR of 2e-05 is not 0.0)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _check_lengths(train: list[Example], max_frames: int, cfg: TrainConfig) -> None:
    """A clear stop rather than a silent skip for utterances longer than a batch (dropping data would change
    what the run means)."""
    too_long = [e for e in train if e.frames > max_frames]
    if too_long:
        longest = max(too_long, key=lambda e: e.frames).frames / FRAMES_PER_SECOND
        shown = ", ".join(repr(e.id) for e in too_long[:3]) + (" ..." if len(too_long) > 3 else "")
        raise TrainingError(f"{len(too_long)} training utterance(s) are longer than one batch "
                            f"(train.max_batch_seconds={cfg.max_batch_seconds}): {shown}, the longest {longest:.1f} s; "
                            f"raise train.max_batch_seconds to at least {math.ceil(longest * 10) / 10:g}, or drop "
                            f"(or segment) the long utterances in the manifest")


def _check_finite(model: torch.nn.Module, out_dir: Path) -> None:
    """A model with non-finite weights is never saved as a result (a divergence that slipped past the step check,
    e.g. an infinite learning rate)."""
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingError(f"{out_dir}: the model's weights became non-finite ({', '.join(bad[:3])}"
                            f"{' ...' if len(bad) > 3 else ''}); nothing was saved as best.pt for this epoch. "
                            f"Lower train.lr (it must be a finite positive number)")
