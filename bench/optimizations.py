"""Before / after of each speed change the toolkit ships, measured side by side in one run.

Each "before" is the code path a change replaced, rebuilt here from the same library pieces; "after" is what the
toolkit runs now. Every pair is interleaved round-robin and reported as the median of per-round ratios.

  omp_wait         OpenMP waiting (see xlingual/__init__.py): the tiny model's training step on 2 threads in child
                   processes under each --omp setting (default: libgomp's own, then PASSIVE), on the idle machine and
                   with --load busy processes competing for the cores (other jobs, oversubscribed parallel runs)
  feature_threads  log-mel extraction of whole utterances on all cores (before) vs one torch thread (after,
                   features.compute_features), idle and loaded
  channels_last    the training step with the convolutional frontend in contiguous (before) vs channels-last
                   memory format (after, model._Subsampling); the first-step loss shows the numerics are unchanged
  dev_eval         the per-epoch dev evaluation: a loss pass and then a greedy-decoding pass (before) vs one forward
                   per batch serving both (after, asr.make_evaluator)
  wav_write        writing a WAV: soundfile straight to the file (before) vs encoded in memory, one write (after,
                   audio.save_audio)
  serving_worker   a parallel matrix's runs: a fresh `python -m xlingual.worker <cell>` process per run (before) vs a
                   serving worker that runs one cell after another (after, worker.WorkerPool), on copies of one
                   small adaptation cell (1 min of Bengali, 5 epochs, one thread); the seconds per run, and what
                   the pool saves per run (torch, its compiler stack and the toolkit imported once per worker)
  fused_adamw      the training step of the benchmark's 64-d conformer on 16-second batches (the matrix runs' shape,
                   one thread) with AdamW's per-tensor loop (before) vs its fused kernel (after, train.adamw_impl);
                   the weights after the same steps show the numerics differ by rounding only
  fast_dropout     the same training step with torch's dropout, whose CPU masks come from bernoulli_ (before), vs
                   cheap numpy-drawn masks in every dropout and in the attention weights (after, dropout.py and
                   model.attention); the masks differ, so the weights do too: the loss after the same steps shows
                   the training is alike, not identical
  lean_step        the same training step with each of five later changes undone in turn, and all of them (before),
                   vs the shipped step (after): dropout masks from PCG64's raw words in one numpy pass (the same
                   masks), the conformer convolution module kept in (B, T, D) (model._conv_module), the attention's
                   scaling and key mask inside one baddbmm (model.attention), the half-step residuals as one add,
                   the frontend's projection reading its channels-last input as it lies (model._Subsampling); the
                   first-step loss and the weights after the same steps show the numerics

Pruned beam search (decode.py's beam_size_token) is measured by bench/decode_speed.py; the sharded feature cache
by bench/feature_memory.py.

    python -m bench.optimizations             # ~5 min
    python -m bench.optimizations --quick     # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench import common  # noqa: E402

NAME = "optimizations"
PARTS = ("omp_wait", "feature_threads", "channels_last", "dev_eval", "wav_write", "fused_adamw", "fast_dropout",
         "lean_step", "serving_worker")
SPIN = "while True:\n    pass\n"  # a process that keeps one core busy


class Load:
    """`n` busy processes for the duration of the block (n = 0: nothing)."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(self.n)]
        time.sleep(0.2 if self.n else 0)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()
        return False


def tiny_model(seed: int = 0):
    from xlingual.config import ModelConfig
    from xlingual.model import AcousticModel, dims_from_config

    from bench.flops import N_MELS, VOCAB

    torch.manual_seed(seed)
    return AcousticModel(dims_from_config(ModelConfig(preset="tiny"), N_MELS, VOCAB))


def step_seconds(model, batch, steps: int) -> float:
    """Mean seconds of a training step (forward, CTC loss, backward, clip, AdamW) after one warm-up step."""
    from bench.flops import train_step

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_step(model, opt, batch, False)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, batch, False)
    return (time.perf_counter() - t0) / steps


# ---------------------------------------------------------------------------------------------------------------
# omp_wait: child processes (the wait policy is read once, when torch loads libgomp)


def omp_child(args) -> dict:
    from bench.flops import make_batch

    torch.set_num_threads(2)
    batch = make_batch(args.batch_seconds)
    model = tiny_model()
    model.train()
    with common.Clock(threads=2) as c:
        secs = step_seconds(model, batch, args.steps)
    return {"audio_per_s": args.batch_seconds / secs, "cpu_share": c.cpu_share,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def _parse_policy(spec: str) -> dict[str, str]:
    """'default' -> {} (libgomp's own defaults); 'PASSIVE' -> OMP_WAIT_POLICY=PASSIVE; 'K=V,K2=V2' -> as given."""
    if spec == "default":
        return {}
    if "=" not in spec:
        return {"OMP_WAIT_POLICY": spec}
    return dict(kv.split("=", 1) for kv in spec.split(","))


def omp_wait(args) -> list[dict]:
    """Training-step speed under each OpenMP setting of --omp (the first is the baseline), idle and loaded."""
    def run(policy: dict) -> float:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env.update(policy)
        cmd = [sys.executable, "-m", "bench.optimizations", "--child", "omp", "--steps", str(args.steps),
               "--batch-seconds", str(args.batch_seconds)]
        out = subprocess.run(cmd, env=env, cwd=common.REPO, capture_output=True, text=True, timeout=1800)
        if out.returncode:
            raise RuntimeError(f"omp child failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return args.batch_seconds / res["audio_per_s"]  # step seconds: interleaved() reports it

    policies = {spec: _parse_policy(spec) for spec in args.omp}
    base = args.omp[0]
    rows = []
    for load in dict.fromkeys((0, args.load)):
        with Load(load):
            t = common.interleaved({spec: (lambda p=p: run(p)) for spec, p in policies.items()},
                                   repeats=args.repeats, warmup=0)
        for spec in args.omp:
            rows.append({"load": load, "setting": spec, "baseline": base,
                         "audio_per_s": common.stats([args.batch_seconds / x for x in t[spec]]),
                         "speedup": common.stats(common.ratios(t[base], t[spec]))})
            print(f"omp_wait load={load} {spec}: x{rows[-1]['speedup']['median']:.2f} vs {base}")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# In-process pairs


def feature_threads(args, wavs) -> list[dict]:
    from xlingual.config import FeatureConfig
    from xlingual.features import LogMel

    extract = LogMel(FeatureConfig())
    audio_s = sum(len(w) for w in wavs) / 16000

    def run(threads: int):
        def fn():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            for w in wavs:
                extract(w)
            return time.perf_counter() - t0
        return fn

    rows = []
    try:
        for load in dict.fromkeys((0, args.load)):
            with Load(load):
                t = common.interleaved({"all": run(os.cpu_count() or 1), "one": run(1)}, repeats=args.repeats)
            rows.append({"load": load, "utterances": len(wavs),
                         "all_threads_audio_per_s": common.stats([audio_s / s for s in t["all"]]),
                         "one_thread_audio_per_s": common.stats([audio_s / s for s in t["one"]]),
                         "speedup": common.stats(common.ratios(t["all"], t["one"]))})
            print(f"feature_threads load={load}: one thread x{rows[-1]['speedup']['median']:.2f}")
    finally:
        common.set_threads(args.threads)
    return rows


def channels_last(args) -> dict:
    import copy

    from bench.flops import loss_of, make_batch

    batch = make_batch(args.batch_seconds)
    after = tiny_model()
    after.train()
    before = copy.deepcopy(after)
    before.frontend.to(memory_format=torch.contiguous_format)
    assert after.frontend.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        la, lb = (float(loss_of(copy.deepcopy(m).eval(), batch)) for m in (after, before))
    t = common.interleaved({"before": lambda: step_seconds(before, batch, args.steps),
                            "after": lambda: step_seconds(after, batch, args.steps)}, repeats=args.repeats)
    res = {"before_audio_per_s": common.stats([args.batch_seconds / s for s in t["before"]]),
           "after_audio_per_s": common.stats([args.batch_seconds / s for s in t["after"]]),
           "speedup": common.stats(common.ratios(t["before"], t["after"])), "loss_abs_diff": abs(la - lb),
           "threads": torch.get_num_threads()}
    print(f"channels_last: x{res['speedup']['median']:.2f}")
    return res


def dev_eval(args, dev, work: Path) -> dict:
    from xlingual.asr import make_evaluator, make_examples
    from xlingual.config import FeatureConfig, ModelConfig, UnitConfig
    from xlingual.decode import greedy_ids
    from xlingual.features import compute_features
    from xlingual.model import AcousticModel, dims_from_config
    from xlingual.tokenizer import Tokenizer
    from xlingual.train import FRAMES_PER_SECOND, bucket_batches, collate, loss_from_logits

    store = compute_features(dev, work / "dev_features", FeatureConfig(), progress=False)
    units = UnitConfig()
    tok = Tokenizer.build(units.kind, [(u.text, u.language) for u in dev], units.spm_vocab)
    torch.manual_seed(0)
    model = AcousticModel(dims_from_config(ModelConfig(preset="tiny"), FeatureConfig().n_mels, tok.vocab_size)).eval()
    after = make_evaluator(store, dev, tok)
    examples, _ = make_examples(dev, store, tok, strict=False)
    frames = [e.frames for e in examples]
    max_frames = max([int(30 * FRAMES_PER_SECOND)] + frames)

    def before():
        """Two passes over the same batches: the dev loss, then greedy decoding (what make_evaluator replaced)."""
        with torch.no_grad():
            batches = bucket_batches(frames, max_frames, seed=0, epoch=0)
            total = 0.0
            for idx in batches:
                b = collate(store, [examples[i] for i in idx])
                logits, lens = model(b["feats"], b["feat_lens"])
                total += float(loss_from_logits(logits, lens, b)) * len(idx)
            hyps = []
            for idx in batches:
                b = collate(store, [examples[i] for i in idx])
                logits, lens = model(b["feats"], b["feat_lens"])
                hyps += [tok.decode(s) for s in greedy_ids(logits, lens)]
        return None

    def one_pass():
        with torch.no_grad():
            after(model)

    audio_s = sum(u.duration for u in dev)
    t = common.interleaved({"before": before, "after": one_pass}, repeats=args.repeats)
    res = {"dev_audio_s": audio_s, "before_audio_per_s": common.stats([audio_s / s for s in t["before"]]),
           "after_audio_per_s": common.stats([audio_s / s for s in t["after"]]),
           "speedup": common.stats(common.ratios(t["before"], t["after"]))}
    print(f"dev_eval: x{res['speedup']['median']:.2f}")
    return res


def wav_write(args, wav, work: Path) -> dict:
    import soundfile as sf

    from xlingual.audio import save_audio

    folder = work / "wav_write"
    folder.mkdir(parents=True, exist_ok=True)
    n = args.files

    def before():
        for i in range(n):
            path = folder / f"b{i}.wav"
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            sf.write(tmp, wav, 16000, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)

    def after():
        for i in range(n):
            save_audio(folder / f"a{i}.wav", wav)

    t = common.interleaved({"before": before, "after": after}, repeats=args.repeats)
    res = {"files": n, "seconds_per_file": len(wav) / 16000, "folder": str(folder),
           "before_ms_per_file": common.stats([1000 * s / n for s in t["before"]]),
           "after_ms_per_file": common.stats([1000 * s / n for s in t["after"]]),
           "speedup": common.stats(common.ratios(t["before"], t["after"]))}
    print(f"wav_write: x{res['speedup']['median']:.2f}")
    return res


# ---------------------------------------------------------------------------------------------------------------


def small_model_pair():
    """Two identical copies ("before", "after") of the benchmark's 64-d conformer in training mode (the demo's and
    the benchmark matrix's small-budget runs), from seed 0."""
    import copy

    from xlingual.config import ModelConfig
    from xlingual.model import AcousticModel, dims_from_config

    from bench.flops import N_MELS, VOCAB

    torch.manual_seed(0)
    base = AcousticModel(dims_from_config(ModelConfig(preset="tiny", d_model=64, ffn_dim=256, subsample_channels=16),
                                          N_MELS, VOCAB))
    base.train()
    return {k: copy.deepcopy(base) for k in ("before", "after")}


def fused_adamw(args) -> dict:
    from bench.flops import make_batch, train_step

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the matrix's parallel runs
    batch = make_batch(args.small_batch_seconds)
    models = small_model_pair()
    opts = {"before": torch.optim.AdamW(models["before"].parameters(), lr=1e-3, foreach=False),
            "after": torch.optim.AdamW(models["after"].parameters(), lr=1e-3, fused=True)}

    def timed(k):
        torch.manual_seed(1)  # the same dropout masks for both
        t0 = time.perf_counter()
        for _ in range(args.steps):
            train_step(models[k], opts[k], batch, False)
        return (time.perf_counter() - t0) / args.steps

    t = common.interleaved({k: (lambda k=k: timed(k)) for k in models}, repeats=args.repeats)
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(models["before"].parameters(),
                                                          models["after"].parameters()))
    torch.set_num_threads(threads)
    res = {"before_audio_per_s": common.stats([args.small_batch_seconds / s for s in t["before"]]),
           "after_audio_per_s": common.stats([args.small_batch_seconds / s for s in t["after"]]),
           "speedup": common.stats(common.ratios(t["before"], t["after"])), "max_weight_diff": diff,
           "steps": args.steps * args.repeats, "batch_seconds": args.small_batch_seconds}
    print(f"fused_adamw: x{res['speedup']['median']:.2f}")
    return res


def torch_dropout(model):
    """`model` with torch's own dropout everywhere (the code before dropout.py): each FastDropout back to an
    nn.Dropout, which also sends the attention through nn.MultiheadAttention (model._self_attention)."""
    from xlingual.dropout import FastDropout

    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, FastDropout):
                setattr(parent, name, torch.nn.Dropout(child.p))
    return model


def fast_dropout(args) -> dict:
    from bench.flops import make_batch, train_step

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the matrix's parallel runs
    batch = make_batch(args.small_batch_seconds)
    models = small_model_pair()
    torch_dropout(models["before"])
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True) for k, m in models.items()}
    losses: dict[str, list[float]] = {k: [] for k in models}

    def timed(k):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            losses[k].append(train_step(models[k], opts[k], batch, False))
        return (time.perf_counter() - t0) / args.steps

    t = common.interleaved({k: (lambda k=k: timed(k)) for k in models}, repeats=args.repeats)
    torch.set_num_threads(threads)
    res = {"before_audio_per_s": common.stats([args.small_batch_seconds / s for s in t["before"]]),
           "after_audio_per_s": common.stats([args.small_batch_seconds / s for s in t["after"]]),
           "speedup": common.stats(common.ratios(t["before"], t["after"])),
           "first_loss": {k: v[0] for k, v in losses.items()}, "last_loss": {k: v[-1] for k, v in losses.items()},
           "steps": args.steps * args.repeats, "batch_seconds": args.small_batch_seconds}
    print(f"fast_dropout: x{res['speedup']['median']:.2f}")
    return res


# The code paths the lean-step changes replaced (xlingual at b177a91), rebuilt here so that each can be timed
# against what ships, one at a time and all together.

def _keep_mask_before(shape, p, dtype):
    """dropout.keep_mask before: Generator.integers draws, then torch's bool -> float conversion and scaling."""
    import numpy as np

    threshold = round(p * 65536)
    seed = int(torch.randint(0, 2**62, ()))
    bits = np.random.Generator(np.random.PCG64(seed)).integers(0, 65536, size=shape, dtype=np.uint16)
    return torch.from_numpy(bits >= threshold).to(dtype).mul_(65536 / (65536 - threshold))


def _conv_module_before(m, x, pad):
    """model._conv_module before: m.sequential on (B, D, T), copied between layouts around it."""
    seq = m.sequential
    y = seq[1](seq[0](m.layer_norm(x).transpose(1, 2)))
    y = y.masked_fill(pad[:, None, :], 0.0)
    return seq[6](seq[5](seq[4](seq[3](seq[2](y))))).transpose(1, 2)


def _attention_before(mha, x, pad, p):
    """model.attention before: scaled queries, a product, then the key mask and softmax, each a pass of its own."""
    import torch.nn.functional as F

    from xlingual.dropout import dropout

    t, b, d = x.shape
    h = mha.num_heads
    q, k, v = (z.reshape(t, b * h, d // h).transpose(0, 1)
               for z in F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1))
    scores = torch.bmm(q * (d // h) ** -0.5, k.transpose(1, 2)).view(b, h, t, t)
    weights = scores.masked_fill(pad[:, None, None, :], float("-inf")).softmax(-1)
    weights = dropout(weights, p, True).view(b * h, t, t)
    return mha.out_proj(torch.bmm(weights, v).transpose(0, 1).reshape(t, b, d))


def _conformer_layer_before(layer, x, pad):
    """model._conformer_layer before: the half-step residuals as a multiply and an add."""
    from xlingual import model as M

    x = x + 0.5 * layer.ffn1(x)
    if layer.convolution_first:
        x = x + M._conv_module(layer.conv_module, x.transpose(0, 1), pad).transpose(0, 1)
    x = x + layer.self_attn_dropout(M._self_attention(layer, layer.self_attn_layer_norm(x), pad))
    if not layer.convolution_first:
        x = x + M._conv_module(layer.conv_module, x.transpose(0, 1), pad).transpose(0, 1)
    x = x + 0.5 * layer.ffn2(x)
    return layer.final_layer_norm(x)


def _subsampling_forward_before(self, x, lengths):
    """model._Subsampling.forward before: proj's input copied into (C, F'') order."""
    from xlingual.model import padding_mask

    x = torch.relu(self.conv1(x.unsqueeze(1)))
    half = (lengths + 1) // 2
    x = x * (~padding_mask(half, x.shape[2]))[:, None, :, None]
    x = torch.relu(self.conv2(x))
    b, c, t, f = x.shape
    return self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))


LEAN_CHANGES = {  # change -> (module, attribute (Class.name for a method), the code before)
    "dropout masks: Generator.integers + torch bool->float -> raw PCG64 words + one numpy pass":
        ("xlingual.dropout", "keep_mask", _keep_mask_before),
    "conv module: (B, D, T) with layout copies -> (B, T, D), channels-last depthwise conv":
        ("xlingual.model", "_conv_module", _conv_module_before),
    "attention scores: scale, product, mask, 3 passes -> one baddbmm":
        ("xlingual.model", "attention", _attention_before),
    "half-step residuals: multiply + add -> one add": ("xlingual.model", "_conformer_layer", _conformer_layer_before),
    "frontend projection: input copied to (C, F) order -> a view in (F, C) order, weight columns reordered":
        ("xlingual.model", "_Subsampling.forward", _subsampling_forward_before),
}


def lean_step(args) -> dict:
    """The benchmark model's training step with each lean-step change undone in turn (before) vs none (after),
    and with all undone; the loss of the first step and the weights after the same steps show the numerics."""
    import contextlib
    import copy
    import importlib

    from bench.flops import make_batch, train_step

    @contextlib.contextmanager
    def undone(names):
        saved = []
        for n in names:
            mod, attr, before = LEAN_CHANGES[n]
            owner = importlib.import_module(mod)
            *path, attr = attr.split(".")
            for name in path:  # a class of the module, for a method
                owner = getattr(owner, name)
            saved.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, before)
        try:
            yield
        finally:
            for mod, attr, orig in saved:
                setattr(mod, attr, orig)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the matrix's parallel runs
    batch = make_batch(args.small_batch_seconds)
    variants = {"after": [], **{n: [n] for n in LEAN_CHANGES}, "all": list(LEAN_CHANGES)}
    base = small_model_pair()["after"]
    models = {k: copy.deepcopy(base) for k in variants}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True) for k, m in models.items()}
    first: dict[str, float] = {}

    def timed(k):
        with undone(variants[k]):
            torch.manual_seed(1)  # the same dropout masks for every variant
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = train_step(models[k], opts[k], batch, False)
                first.setdefault(k, loss)
            return (time.perf_counter() - t0) / args.steps

    t = common.interleaved({k: (lambda k=k: timed(k)) for k in variants}, repeats=args.lean_repeats)
    torch.set_num_threads(threads)
    after = models["after"].parameters
    rows = []
    for k in variants:
        if k == "after":
            continue
        diff = max(float((a - b).detach().abs().max()) for a, b in zip(models[k].parameters(), after()))
        rows.append({"change": k, "before_audio_per_s": common.stats([args.small_batch_seconds / s for s in t[k]]),
                     "after_audio_per_s": common.stats([args.small_batch_seconds / s for s in t["after"]]),
                     "speedup": common.stats(common.ratios(t[k], t["after"])),
                     "first_loss_diff": abs(first[k] - first["after"]), "max_weight_diff": diff})
        print(f"lean_step {k[:40]}: x{rows[-1]['speedup']['median']:.2f}")
    return {"rows": rows, "steps": args.steps * args.lean_repeats, "batch_seconds": args.small_batch_seconds}


def serving_worker(args, work: Path) -> dict:
    from xlingual.config import MatrixConfig, from_dict
    from xlingual.matrix import _prepare_cell, plan_cells, run_matrix
    from xlingual.worker import WorkerPool, run_in_subprocess

    from data_prep.synthetic import prepare_synthetic

    corpus = common.WORK_DIR / "worker_corpus"
    prepare_synthetic(corpus, languages=("bn",), hours={"train": 0.05, "dev": 0.005, "test": 0.005}, progress=False)
    train = {"epochs": 5, "max_batch_seconds": 16, "warmup_steps": 10, "checkpoint_every_steps": 0,
             "threads": 1, "progress": False}
    cfg = from_dict(MatrixConfig, {
        "sources": ["bn"], "targets": ["bn"], "source_hours": 0.05, "target_hours": 0.0167, "size_pairs": [],
        "variants": {}, "layer_sweep": [], "seeds": [0], "out_dir": str(work / "matrix"),
        "corpus": {"kind": "manifests", "dir": str(corpus)}, "features": {"n_mels": 40},
        "model": {"preset": "tiny", "d_model": 64, "ffn_dim": 256, "subsample_channels": 16},
        "train": train, "small_train": {}, "adapt": {"mode": "full", "train": {**train, "schedule": "stlr"}}})
    run_matrix(cfg, jobs=1, progress=False)  # the source model (and a first run of the cell)
    cell = next(c for c in plan_cells(cfg).values() if c.kind == "adapt")
    template = _prepare_cell(Path(cfg.out_dir), cell, 1, False)
    counter = iter(range(10**6))
    n = args.worker_runs

    def copies() -> list[Path]:
        out = []
        for _ in range(n):
            folder = work / "cells" / f"c{next(counter)}"
            folder.mkdir(parents=True)
            out.append(Path(shutil.copy(template, folder / "cell.json")))
        return out

    def before() -> float:
        cells = copies()
        t0 = time.perf_counter()
        assert all(run_in_subprocess(c, 1) == 0 for c in cells)
        return (time.perf_counter() - t0) / n

    def after() -> float:
        cells = copies()
        t0 = time.perf_counter()
        with WorkerPool() as pool:
            assert all(pool.run(c, 1) == 0 for c in cells)
        return (time.perf_counter() - t0) / n

    t = common.interleaved({"before": before, "after": after}, repeats=max(2, args.repeats // 2), warmup=0)
    res = {"before_s_per_run": common.stats(t["before"]), "after_s_per_run": common.stats(t["after"]),
           "speedup": common.stats(common.ratios(t["before"], t["after"])), "runs_per_worker": n,
           "saved_s_per_run": common.stats([b - a for b, a in zip(t["before"], t["after"])])}
    print(f"serving_worker: x{res['speedup']['median']:.2f}, {res['saved_s_per_run']['median']:.1f} s saved per run")
    return res


def markdown(res: dict, args) -> str:
    def m(s):  # median (min..max)
        return f"{common.fmt(s['median'])} ({common.fmt(s['min'])}..{common.fmt(s['max'])})"

    rows = []

    def row(change: str, on: str, before: float, after: float, unit: str, speedup: dict) -> None:
        rows.append([change, on, f"{common.fmt(before)} {unit}", f"{common.fmt(after)} {unit}", m(speedup)])

    audio = {(r["load"], r["setting"]): r["audio_per_s"]["median"] for r in res.get("omp_wait", [])}
    for r in res.get("omp_wait", []):
        if r["setting"] != r["baseline"]:
            row(f"OpenMP: {r['baseline']} -> {r['setting']}", f"training step, 2 threads, {r['load']} busy processes",
                audio[(r["load"], r["baseline"])], r["audio_per_s"]["median"], "audio-s/s", r["speedup"])
    for r in res.get("feature_threads", []):
        row("feature extraction: all threads -> 1 thread", f"log-mel of {r['utterances']} utterances, {r['load']} "
            "busy processes", r["all_threads_audio_per_s"]["median"], r["one_thread_audio_per_s"]["median"],
            "audio-s/s", r["speedup"])
    pairs = {"channels_last": ("convolutions: contiguous -> channels-last", "audio_per_s", "audio-s/s",
                               lambda c: f"training step, {c['threads']} threads (loss differs by "
                                         f"{c['loss_abs_diff']:.1e})"),
             "dev_eval": ("dev evaluation: two passes -> one", "audio_per_s", "audio-s/s",
                          lambda d: f"{d['dev_audio_s'] / 60:.1f} min of dev audio, random tiny model"),
             "wav_write": ("WAV writes: to the file -> in memory, one write", "ms_per_file", "ms/file",
                           lambda w: f"{w['files']} files of {w['seconds_per_file']:.1f} s under exp/bench"),
             "serving_worker": ("matrix runs: a process per run -> a serving worker per job", "s_per_run", "s/run",
                                lambda w: f"{w['runs_per_worker']} runs of a small adaptation cell (1 min, 5 epochs, "
                                          f"1 thread), one worker; saves {w['saved_s_per_run']['median']:.1f} s per "
                                          "run"),
             "fused_adamw": ("AdamW: per-tensor loop -> fused kernel", "audio_per_s", "audio-s/s",
                             lambda f: f"training step, 64-d conformer, {f['batch_seconds']:.0f} s batches, 1 "
                                       f"thread (weights differ by {f['max_weight_diff']:.1e} after {f['steps']} "
                                       "steps)"),
             "fast_dropout": ("dropout masks: torch bernoulli_ -> numpy 16-bit draws", "audio_per_s", "audio-s/s",
                              lambda f: f"training step, 64-d conformer, {f['batch_seconds']:.0f} s batches, 1 "
                                        f"thread (loss after {f['steps']} steps {f['last_loss']['before']:.1f} "
                                        f"before, {f['last_loss']['after']:.1f} after)")}
    for r in res.get("lean_step", {}).get("rows", []):
        row(r["change"] if r["change"] != "all" else f"the {len(LEAN_CHANGES)} lean-step changes together",
            f"training step, 64-d conformer, {res['lean_step']['batch_seconds']:.0f} s batches, 1 thread (first loss "
            f"differs by {r['first_loss_diff']:.1e}, weights by {r['max_weight_diff']:.1e} after "
            f"{res['lean_step']['steps']} steps)", r["before_audio_per_s"]["median"], r["after_audio_per_s"]["median"],
            "audio-s/s", r["speedup"])
    for part, (change, key, unit, on) in pairs.items():
        if part in res:
            r = res[part]
            row(change, on(r), r[f"before_{key}"]["median"], r[f"after_{key}"]["median"], unit, r["speedup"])
    return (f"Median of {args.repeats} interleaved rounds; speed-up = before time / after time of the same round, "
            "median (min..max). Busy processes: Python loops, one core each, started for the loaded rows.\n\n"
            + common.md_table(["change", "measured on", "before", "after", "speed-up"], rows))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 step, 2 rounds, few files")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5; --quick 2)")
    p.add_argument("--steps", type=int, default=None, help="training steps per timing (default 4; --quick 1)")
    p.add_argument("--batch-seconds", type=float, default=60.0, help="audio per training batch (as the recipes)")
    p.add_argument("--worker-runs", type=int, default=None, help="runs per round of serving_worker (default 4; "
                   "--quick 2)")
    p.add_argument("--lean-repeats", type=int, default=None, help="interleaved rounds of lean_step (default 15; "
                   "--quick 2)")
    p.add_argument("--small-batch-seconds", type=float, default=16.0, help="audio per batch of fused_adamw (as the "
                   "small-budget runs of the demo and the benchmark)")
    p.add_argument("--load", type=int, default=2, help="busy processes in the loaded rows (default: one per core)")
    p.add_argument("--utterances", type=int, default=None, help="feature extraction (default 100; --quick 10)")
    p.add_argument("--files", type=int, default=None, help="WAV writes per timing (default 200; --quick 10)")
    p.add_argument("--threads", type=int, default=0, help="threads of the in-process pairs (0: all cores)")
    p.add_argument("--dev-hours", type=float, default=None, help="dev set of dev_eval (default 0.2; --quick 0.01)")
    p.add_argument("--languages", nargs="+", default=list(common.BENCH_LANGUAGES))
    p.add_argument("--corpus", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--omp", nargs="+", default=["default", "PASSIVE"],
                   help="OpenMP settings of the omp_wait rows, the first the baseline: 'default' (libgomp's own), "
                   "a wait policy ('PASSIVE'), or variables 'GOMP_SPINCOUNT=10000,OMP_WAIT_POLICY=ACTIVE'")
    p.add_argument("--skip", nargs="+", default=[], choices=PARTS, help="parts not to run")
    p.add_argument("--child", choices=["omp"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats or (2 if q else 5)
    args.steps = args.steps or (1 if q else 4)
    args.utterances = args.utterances or (10 if q else 100)
    args.files = args.files or (10 if q else 200)
    args.dev_hours = args.dev_hours or (0.01 if q else 0.2)
    args.worker_runs = args.worker_runs or (2 if q else 4)
    args.lean_repeats = args.lean_repeats or (2 if q else 15)
    if q:
        args.batch_seconds = min(args.batch_seconds, 8.0)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child == "omp":
        print(json.dumps(omp_child(args)))
        return {}
    from xlingual.audio import load_audio

    head = common.header("bench.optimizations", argv)
    common.set_threads(args.threads)
    languages = tuple(args.languages)
    dev = common.train_utterances(args.dev_hours, languages, args.corpus, split="dev")
    # utterances for feature extraction: an equal share of each language (about 5 s each), the first N
    train = common.train_utterances(args.utterances * 5 / 3600 * 1.2, languages, args.corpus)[:args.utterances]
    wavs = [load_audio(u.audio) for u in train]
    common.WORK_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="optimizations-", dir=common.WORK_DIR))
    parts = {"omp_wait": lambda: omp_wait(args), "feature_threads": lambda: feature_threads(args, wavs),
             "channels_last": lambda: channels_last(args), "dev_eval": lambda: dev_eval(args, dev, work),
             "wav_write": lambda: wav_write(args, wavs[0], work), "fused_adamw": lambda: fused_adamw(args),
             "fast_dropout": lambda: fast_dropout(args), "lean_step": lambda: lean_step(args),
             "serving_worker": lambda: serving_worker(args, work)}
    try:
        res = {name: fn() for name, fn in parts.items() if name not in args.skip}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.write_results(NAME, head, res, markdown(res, args), common.results_dir(args.out, args.quick),
                         title="Before / after of each speed change")
    return res


if __name__ == "__main__":
    main()
