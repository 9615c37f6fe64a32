"""Decoding throughput, greedy and beam, batched: audio seconds decoded per wall second.

For each decoding batch size (DecodeConfig.max_batch_seconds) and method, interleaved round-robin:

  end to end   xlingual.decode.transcribe (cached features -> bucketed batches -> model -> search -> text)
  forward      the model alone on the same batches (what greedy costs besides the argmax)
  search       greedy_ids / BeamSearch alone on the logits computed beforehand

A model with random weights gives nearly uniform posteriors, which is the beam search's worst case and not what a
trained model gives: pass --checkpoint (a best.pt) for representative beam figures; the results say which was used.

    python -m bench.decode_speed --checkpoint exp/synthetic/bn-large/best.pt
    python -m bench.decode_speed --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import common
from xlingual.asr import build_tokenizer, new_model
from xlingual.checkpoint import load_model
from xlingual.config import DecodeConfig, FeatureConfig, ModelConfig, UnitConfig
from xlingual.decode import BeamSearch, greedy_ids, transcribe
from xlingual.features import compute_features
from xlingual.train import FRAMES_PER_SECOND, Example, bucket_batches, collate

NAME = "decode_speed"


def batches_for(store, ids: list[str], max_batch_seconds: float) -> list[dict]:
    """The batches transcribe() builds (same bucketing and limit)."""
    examples = [Example(i, store.num_frames(i), []) for i in ids]
    max_frames = max(int(max_batch_seconds * FRAMES_PER_SECOND), max(e.frames for e in examples))
    return [collate(store, [examples[i] for i in idx])
            for idx in bucket_batches([e.frames for e in examples], max_frames, seed=0, epoch=0)]


def forward_all(model, batches: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    model.eval()
    with torch.no_grad():
        return [model(b["feats"], b["feat_lens"]) for b in batches]


def pruned_search(tok, beam_size: int, beam_size_token: int) -> BeamSearch:
    """A BeamSearch that expands the `beam_size_token` best units per frame (flashlight's beam_size_token), where
    decode.BeamSearch expands 8; 0 = every unit, the search before that pruning shipped. Checked for equal output."""
    from torchaudio.models.decoder import ctc_decoder

    from xlingual.tokenizer import BLANK, WORD_SEP

    search = BeamSearch(tok, beam_size)
    search.decoder = ctc_decoder(lexicon=None, tokens=list(tok.units), lm=None, beam_size=beam_size,
                                 beam_size_token=beam_size_token or len(tok.units), blank_token=BLANK,
                                 sil_token=WORD_SEP, nbest=1, log_add=True)
    return search


def agreement(model, batches_logits, a: BeamSearch, b: BeamSearch) -> float:
    """Share of utterances for which two searches give the same unit sequence."""
    same = total = 0
    for x, n in batches_logits:
        for ha, hb in zip(a(x, n), b(x, n)):
            same += ha == hb
            total += 1
    return same / max(total, 1)


def measure(model, tok, store, ids: list[str], audio: float, batch_sizes: list[float], beam_sizes: list[int],
            repeats: int, token_beam: int | None = 0) -> list[dict]:
    fns, meta = {}, {}
    searches = {b: BeamSearch(tok, b) for b in beam_sizes}
    pruned = {b: pruned_search(tok, b, token_beam) for b in beam_sizes} if token_beam is not None else {}
    for mbs in batch_sizes:
        batches = batches_for(store, ids, mbs)
        logits = forward_all(model, batches)
        key = f"{mbs:g}s"
        real = sum(int(b["feat_lens"].sum()) for b in batches)
        meta[key] = {"max_batch_seconds": mbs, "batches": len(batches),
                     "mean_batch_size": sum(b["feats"].shape[0] for b in batches) / len(batches),
                     "padding_fraction": 1 - real / sum(b["feats"].shape[0] * b["feats"].shape[1] for b in batches)}
        fns[f"{key}|greedy|end to end"] = (lambda m=mbs: transcribe(model, store, ids, tok,
                                                                    DecodeConfig("greedy", max_batch_seconds=m)))
        fns[f"{key}|-|forward"] = lambda bs=batches: forward_all(model, bs)
        fns[f"{key}|greedy|search"] = lambda lg=logits: [greedy_ids(x, n) for x, n in lg]
        for b in beam_sizes:
            fns[f"{key}|beam{b}|end to end"] = (lambda m=mbs, b=b: transcribe(
                model, store, ids, tok, DecodeConfig("beam", beam_size=b, max_batch_seconds=m)))
            fns[f"{key}|beam{b}|search"] = lambda lg=logits, s=searches[b]: [s(x, n) for x, n in lg]
            if b in pruned:
                name = f"{key}|beam{b} token_beam={token_beam or 'all'}|search"
                fns[name] = lambda lg=logits, s=pruned[b]: [s(x, n) for x, n in lg]
                meta[f"agree:{name}"] = agreement(model, logits, searches[b], pruned[b])
    shares: dict[str, list[float]] = {}
    times = common.interleaved(fns, repeats=repeats, warmup=1, cpu_share=shares)
    rows = []
    for name, secs in times.items():
        key, method, part = name.split("|")
        rows.append({**meta[key], "method": method, "part": part, "seconds": common.stats(secs),
                     "same_output_as_default_beam": meta.get(f"agree:{name}"),
                     "audio_sec_per_sec": common.stats([audio / s for s in secs]),
                     "cpu_share": common.stats(shares[name])})
    return rows


def markdown(res: dict) -> str:
    s = res["setup"]
    text = (f"{s['audio_seconds']:.0f} s of {s['split']} audio ({s['utterances']} utterances, "
            f"{', '.join(s['languages'])}); model: {s['model']}; {s['threads']} threads; median of {s['repeats']} "
            f"interleaved repeats. Audio seconds per wall second.\n\n")
    rows = []
    for r in res["rows"]:
        a = r["audio_sec_per_sec"]
        rows.append([r["max_batch_seconds"], r["mean_batch_size"], r["padding_fraction"], r["method"], r["part"],
                     a["median"], f"{common.fmt(a['min'])}..{common.fmt(a['max'])}", r["cpu_share"]["median"],
                     r["same_output_as_default_beam"]])
    text += common.md_table(["max batch s", "mean batch size", "padding", "method", "part", "audio-s/s (median)",
                             "min..max", "CPU share", "same output as default beam"], rows)
    text += ("\nbeamN: xlingual's beam search, which expands the 8 best units per frame (flashlight's "
             "beam_size_token); token_beam=all: every unit expanded, the search before that pruning shipped "
             "(token_beam=N: N units); 'same output' is the share of utterances whose hypothesis equals beamN's.\n")
    return text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 0.01 h, batch sizes 10 and 300 s, beam 16")
    p.add_argument("--checkpoint", default=None, help="a trained best.pt (default: a randomly initialized model)")
    p.add_argument("--preset", default="tiny", help="model preset when no checkpoint is given")
    p.add_argument("--hours", type=float, default=None, help="audio to decode (default 0.1; --quick 0.01)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-seconds", type=float, nargs="+", default=None,
                   help="DecodeConfig.max_batch_seconds values (default 5 30 300: nearly unbatched .. the default)")
    p.add_argument("--beams", type=int, nargs="+", default=None, help="beam sizes (default 4 16)")
    p.add_argument("--token-beam", type=int, default=0,
                   help="also time beam search expanding N units per frame (default 0: every unit, the search "
                   "before pruning shipped; -1: skip); reports agreement with xlingual's search")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5; --quick 2)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--languages", nargs="+", default=list(common.BENCH_LANGUAGES))
    p.add_argument("--corpus", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.hours = args.hours or (0.01 if args.quick else 0.1)
    args.batch_seconds = args.batch_seconds or ([10.0, 300.0] if args.quick else [5.0, 30.0, 300.0])
    args.beams = args.beams or ([16] if args.quick else [4, 16])
    args.repeats = args.repeats or (2 if args.quick else 5)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    head = common.header("bench.decode_speed", argv)
    threads = common.set_threads(args.threads)
    utts = common.train_utterances(args.hours, tuple(args.languages), args.corpus, split=args.split)
    feats = FeatureConfig()
    if args.checkpoint:
        model, tok, meta = load_model(args.checkpoint)
        feats = FeatureConfig(**{k: v for k, v in meta.get("features", {}).items()}) if meta.get("features") else feats
        model_name = f"checkpoint {args.checkpoint}"
    store = compute_features(utts, common.WORK_DIR / "decode_speed" / "features", feats, progress=False)
    if not args.checkpoint:
        tok = build_tokenizer(utts, UnitConfig())
        model = new_model(ModelConfig(preset=args.preset), feats, tok.vocab_size, store, [u.id for u in utts], seed=0)
        model_name = f"{args.preset} preset, random weights (beam figures are a worst case)"
    ids = [u.id for u in utts]
    audio = sum(store.num_frames(i) for i in ids) / FRAMES_PER_SECOND
    t0 = time.perf_counter()
    rows = measure(model, tok, store, ids, audio, args.batch_seconds, args.beams, args.repeats,
                   None if args.token_beam < 0 else args.token_beam)
    res = {"setup": {"model": model_name, "utterances": len(ids), "audio_seconds": audio, "split": args.split,
                     "languages": args.languages, "threads": threads, "repeats": args.repeats,
                     "wall_seconds": time.perf_counter() - t0}, "rows": rows}
    for r in rows:
        if r["part"] == "end to end":
            print(f"batch {r['max_batch_seconds']:g}s {r['method']}: {r['audio_sec_per_sec']['median']:.0f} audio-s/s")
    common.write_results(NAME, head, res, markdown(res), common.results_dir(args.out, args.quick), title="Decoding speed")
    return res


if __name__ == "__main__":
    main()
