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

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .config import FeatureConfig, TrainConfig
from .features import FeatureStore, spec_augment
from .fileio import atomic_path, write_json, write_text
from .schedules import lr_factor

FRAMES_PER_SECOND = 100  # 10 ms hop


class TrainingError(RuntimeError):
    """A run that cannot continue; the message says why and what was kept."""


@dataclass
class Example:
    id: str  # utterance id (key into the FeatureStore)
    frames: int  # number of feature frames
    target: list[int] | int  # CTC unit ids (ASR) or a language index (LID)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but no CUDA device is visible; use device=auto or cpu")
    return torch.device(name)


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


def collate(store: FeatureStore, examples: list[Example], pin: bool = False) -> dict:
    """Pad a batch: feats (B, T, F), feat_lens (B,), and targets (sum L,) + target_lens (B,) or labels (B,).

    pin: page-locked tensors (for a CUDA device), so that the copies to it can be asynchronous (non_blocking).
    """
    feats = [store[e.id] for e in examples]
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


def compute_loss(model, batch: dict, device: torch.device) -> torch.Tensor:
    """Mean loss per utterance: CTC for ASR batches, frame-level cross-entropy for LID batches.

    On CUDA: the forward pass under bf16 autocast, the loss in float32. CTC runs on the GPU through PyTorch's
    native CUDA kernel (int64 targets and lengths on the device; cuDNN's CTC would need every input length equal
    to the padded length and int32 targets on the CPU, which padded batches do not meet).
    """
    feats, lens = batch["feats"].to(device, non_blocking=True), batch["feat_lens"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
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


def _freeze_norm_stats(model: torch.nn.Module) -> None:
    """Keep BatchNorm running statistics of frozen modules fixed, so a frozen layer is truly unchanged."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                m.eval()


def _save(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_resume(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(f"cannot read checkpoint {path}: {e}; delete it to start this run afresh") from None


def fit(model: torch.nn.Module, train: list[Example], store: FeatureStore, cfg: TrainConfig, out_dir: str | Path,
        evaluate: Callable[[torch.nn.Module], dict], select: tuple[str, str] = ("dev_wer", "min"),
        param_groups: list[dict] | None = None, on_epoch_start: Callable[[int], None] | None = None,
        specaug: FeatureConfig | None = None, meta: dict | None = None, run_key: str = "",
        resume: bool = True) -> list[dict]:
    """Train `model` on `train`, evaluating after each epoch; returns the per-epoch history.

    Args:
        evaluate: model -> dict of dev metrics (e.g. {"dev_loss", "dev_wer", "dev_cer"}); called in eval mode.
        select: (metric, "min"|"max") deciding which epoch's model becomes best.pt.
        param_groups: AdamW groups (each with "params", "lr", optional "name"); default one group at cfg.lr.
        on_epoch_start: called with the epoch number before it starts (freezing plans set requires_grad here).
        specaug: SpecAugment settings (None or specaugment=False: none).
        meta: plain data stored in every checkpoint beside the weights (model dims, tokenizer, ...).
        run_key: identifies the configuration; resuming a checkpoint written under another key is refused.
        resume: continue from out_dir/last.pt when a previous run was interrupted; False refuses to touch it.
    Outputs in out_dir: last.pt (resumable), best.pt (weights + meta), train_log.jsonl, done.json.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "done.json").is_file():
        done = json.loads((out_dir / "done.json").read_text())
        if done.get("run_key") == run_key:
            return done["history"]
    if not train:
        raise TrainingError(f"{out_dir}: no training utterances; check the manifest and the hours budget")
    device = distributed.init(pick_device(cfg.device))  # under torchrun: this rank's GPU, the group joined
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0  # the one process that evaluates and writes
    # every rank here before any reads last.pt: rank 0 may still be writing it when another rank re-enters fit
    # after a failure in the same process (the ranks must resume from the same checkpoint)
    distributed.barrier(device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or distributed.cpu_threads())
    model.to(device)
    groups = param_groups or [{"params": list(model.parameters()), "lr": cfg.lr, "name": "all"}]
    for g in groups:
        g.setdefault("base_lr", g["lr"])
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    max_frames = int(cfg.max_batch_seconds * FRAMES_PER_SECOND)
    frames = [e.frames for e in train]
    too_long = [e for e in train if e.frames > max_frames]
    if too_long:  # a clear stop rather than a silent skip: dropping data would change what the run means
        longest = max(too_long, key=lambda e: e.frames).frames / FRAMES_PER_SECOND
        shown = ", ".join(repr(e.id) for e in too_long[:3]) + (" ..." if len(too_long) > 3 else "")
        raise TrainingError(f"{len(too_long)} training utterance(s) are longer than one batch "
                            f"(train.max_batch_seconds={cfg.max_batch_seconds}): {shown}, the longest {longest:.1f} s; "
                            f"raise train.max_batch_seconds to at least {math.ceil(longest * 10) / 10:g}, or drop "
                            f"(or segment) the long utterances in the manifest")
    steps_per_epoch = -(-len(bucket_batches(frames, max_frames, cfg.seed, 0)) // world)  # ceil: see shard_batches
    total_steps = steps_per_epoch * cfg.epochs

    state = {"epoch": 0, "batch": 0, "step": 0, "best": None, "history": [], "nonfinite": 0, "bad_epochs": 0,
             "epoch_acc": [0.0, 0, 0]}
    last = out_dir / "last.pt"
    if last.is_file():
        if not resume:
            raise TrainingError(f"{out_dir} holds an interrupted run (last.pt); pass --resume to continue it, or "
                                f"delete the folder to start over")
        ck = _load_resume(last)
        if ck.get("run_key") != run_key:
            raise TrainingError(f"{last} was written by a different configuration; use a new output folder, or "
                                f"delete {out_dir} to retrain")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        state.setdefault("epoch_acc", [0.0, 0, 0])
    if world > 1 and distributed.broadcast_object(state["step"], device) != state["step"]:
        raise TrainingError(f"rank {rank} read another {last} than rank 0 did; the ranks must share out_dir")

    def checkpoint() -> None:
        if main:
            _save(last, {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                         "run_key": run_key, "meta": meta or {}})

    metric, mode = select
    net = model  # what the steps run: the model, or under torchrun its DistributedDataParallel wrapper
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        if on_epoch_start:
            on_epoch_start(epoch)
        model.train()
        _freeze_norm_stats(model)
        batches = bucket_batches(frames, max_frames, cfg.seed, epoch)
        spare = batches[0]  # what a rank left without a batch in the epoch's last step computes, with weight 0
        if world > 1:
            net = distributed.wrap(model, device, net)  # re-wrapped only when on_epoch_start changed what trains
            sizes = distributed.step_sizes(batches, world)
            batches = distributed.shard_batches(batches, rank, world)  # this rank's share; [] = a zero-weight step
        t0, audio_frames = time.time(), 0
        # [loss sum, utterances, skipped steps] of this epoch: checkpointed, so a resumed epoch logs the same
        acc = state["epoch_acc"]
        bar = tqdm(total=len(batches), initial=state["batch"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress or not main, leave=False)
        for b in range(state["batch"], len(batches)):
            step = state["step"]
            # everything random in this step derives from (seed, step) (and the rank): resume-safe determinism
            seed = (cfg.seed * 1_000_003 + step) * world + rank
            torch.manual_seed(seed)
            batch = collate(store, [train[i] for i in batches[b] or spare], pin=device.type == "cuda")
            if specaug is not None and specaug.specaugment:
                gen = torch.Generator().manual_seed(seed)
                batch["feats"] = spec_augment(batch["feats"], batch["feat_lens"], specaug, gen)
            factor = lr_factor(step, total_steps, cfg)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm statistics, restored if skipped
            loss = compute_loss(net, batch, device)
            finite = bool(torch.isfinite(loss))
            if world > 1:
                # one all-reduce: is every rank's loss finite (all step, or none), and the step's loss sum and
                # utterances over all ranks (so every rank, and the checkpoint, holds the epoch's figures)
                bad, step_sum, step_n = distributed.all_sum(
                    [float(not finite), loss.item() * len(batches[b]), len(batches[b])], device)
                finite = bad == 0
                # DDP averages the ranks' gradients: weighting each rank's mean by its share of the step's
                # utterances makes the update that of the mean over all of them (0 for a rank without a batch)
                loss = loss * (len(batches[b]) * world / sizes[b])
            opt.zero_grad(set_to_none=True)
            if finite:
                loss.backward()
                # a finite loss can still overflow in backward; an inf/NaN gradient would make every weight NaN
                finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)))
            if finite:
                state["nonfinite"] = 0
                opt.step()
                if world == 1:
                    acc[0] += loss.item() * len(batch["ids"])
                    acc[1] += len(batch["ids"])
                else:
                    acc[0] += step_sum
                    acc[1] += int(step_n)
            else:  # skip the step (weights and statistics untouched) and count it; many in a row stop the run
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for buf, saved in zip(model.buffers(), buffers):
                        buf.copy_(saved)
                state["nonfinite"] += 1
                acc[2] += 1
                if state["nonfinite"] >= cfg.max_nonfinite:
                    kept = [p.name for p in (last, out_dir / "best.pt") if p.is_file()]
                    raise TrainingError(
                        f"{out_dir}: {state['nonfinite']} consecutive non-finite losses or gradients (step {step}, "
                        f"epoch {epoch + 1}); stopped. "
                        + (f"The last good checkpoints are kept ({', '.join(kept)}); " if kept else
                           "No checkpoint was written yet; ")
                        + "lower train.lr, or check the data (utterances too short for their transcripts, "
                          "empty or corrupt audio)")
            if batches[b]:
                audio_frames += int(batch["feat_lens"].sum())
            state["step"] += 1
            state["batch"] = b + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if cfg.checkpoint_every_steps and state["step"] % cfg.checkpoint_every_steps == 0:
                checkpoint()
        bar.close()
        elapsed = time.time() - t0
        if world > 1:  # the audio of all ranks
            audio_frames = distributed.all_sum([audio_frames], device)[0]
        model.eval()
        record = None
        if main:
            with torch.no_grad():
                dev = evaluate(model)
            record = {"epoch": epoch + 1, "step": state["step"], "train_loss": acc[0] / max(acc[1], 1),
                      "nonfinite_steps": acc[2],  # steps skipped for a non-finite loss or gradient
                      "lr": opt.param_groups[-1]["lr"],
                      "epoch_seconds": round(elapsed, 2),
                      "audio_sec_per_sec": round(audio_frames / FRAMES_PER_SECOND / max(elapsed, 1e-9), 1), **dev}
        if world > 1:
            record = distributed.broadcast_object(record, device)  # the others wait here while rank 0 evaluates
        state["history"].append(record)
        value = record[metric]
        better = state["best"] is None or (value < state["best"] if mode == "min" else value > state["best"])
        if better:
            state["best"], state["bad_epochs"] = value, 0
            if main:
                _save(out_dir / "best.pt", {"model": model.state_dict(), "meta": meta or {},
                                            "epoch": epoch + 1, metric: value})
        else:
            state["bad_epochs"] += 1
        state["epoch"], state["batch"], state["epoch_acc"] = epoch + 1, 0, [0.0, 0, 0]
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            state["epoch"] = cfg.epochs  # early stop: the remaining epochs are skipped, also on resume
        checkpoint()
        if not main:
            continue
        # the log is rewritten from the checkpointed history, so a kill never leaves it duplicated or short
        write_text(out_dir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in state["history"]))
        if cfg.progress:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
            tqdm.write(f"[{out_dir.name}] " + " ".join(f"{k}={v}" for k, v in shown.items()))
    if main:
        write_json(out_dir / "done.json", {"run_key": run_key, "best": state["best"], "metric": metric,
                                           "history": state["history"]})
    distributed.barrier(device)  # no rank returns before rank 0's files are complete
    return state["history"]


def load_checkpoint(path: str | Path) -> dict:
    """Load best.pt/last.pt safely (weights_only): {"model": state_dict, "meta": {...}, ...}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(f"cannot load checkpoint {path} safely: {e}. Only checkpoints written by xlingual "
                            f"(plain tensors and data) are accepted") from None
