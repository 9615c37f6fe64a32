"""Peak memory of the feature cache against corpus hours: sharded (now) vs one concatenated file (before).

For each corpus size (default 0.25 h and 4 h) and layout, two child processes, so that each peak RSS (ru_maxrss)
belongs to one step:

  write   compute_features from audio into an empty cache
  read    one pass over every utterance of the cache, in a training epoch's (shuffled, length-bucketed) order,
          each utterance copied out as training's collate does

Layouts: "sharded" is xlingual.features as it is (64 MB shards written one at a time; at most 2 shards
memory-mapped while reading). "single" re-enacts the layout before sharding: every utterance's features held in
memory and concatenated into one feats.npy, read back through one memory map of the whole file (whose touched
pages count in the reader's resident memory).

The corpus is cheap to make at any size: a small synthetic base (eSpeak NG, generated once) repeated under new
utterance ids until it holds the hours asked for. Feature extraction does the same work per utterance as on
distinct audio; only the audio decoding is served from the page cache.

    python -m bench.feature_memory                 # 0.25 h and 4 h
    python -m bench.feature_memory --quick         # 0.02 h and 0.08 h, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

NAME = "feature_memory"
BASE_HOURS = 0.05  # the synthetic audio that is repeated
LAYOUTS = ("sharded", "single")


def corpus(hours: float, base_dir: Path) -> list:
    """About `hours` of utterances: the base corpus repeated under new ids (same audio files)."""
    from xlingual.corpus import read_manifest

    manifest = base_dir / "tr" / "train.jsonl"
    if not manifest.is_file():
        from data_prep.synthetic import prepare_synthetic

        prepare_synthetic(base_dir, languages=("tr",), hours={"train": BASE_HOURS, "dev": 0.002, "test": 0.002},
                          progress=False)
    base = read_manifest(manifest)
    utts, total, k = [], 0.0, 0
    while total < hours * 3600:
        for u in base:
            utts.append(dataclasses.replace(u, id=f"{u.id}-r{k}"))
            total += u.duration
            if total >= hours * 3600:
                break
        k += 1
    return utts


def _single_file_write(utts, cache: Path, cfg) -> Path:
    """The layout before sharding, as it was written: all features in memory, concatenated, saved once."""
    import numpy as np
    import torch

    from xlingual.audio import load_audio
    from xlingual.features import LogMel, cache_key
    from xlingual.fileio import write_json

    folder = cache / cache_key(utts, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    extract, chunks, index, start = LogMel(cfg), [], {}, 0
    torch.set_num_threads(1)
    for u in utts:
        f = extract(load_audio(u.audio)).numpy()
        chunks.append(f)
        index[u.id] = (start, f.shape[0])
        start += f.shape[0]
    np.save(folder / "feats.npy", np.concatenate(chunks))
    write_json(folder / "index.json", {"n_mels": cfg.n_mels, "utts": index})
    return folder


class _SingleFileStore:
    """The reader before sharding: one memory map of the whole feats.npy, kept open."""

    def __init__(self, folder: Path):
        import numpy as np

        from xlingual.fileio import read_json

        index = read_json(folder / "index.json")
        self.offsets = {k: tuple(v) for k, v in index["utts"].items()}
        self.data = np.load(folder / "feats.npy", mmap_mode="r")

    def __getitem__(self, utt_id: str):
        import numpy as np
        import torch

        start, n = self.offsets[utt_id]
        return torch.from_numpy(np.array(self.data[start:start + n]))


def child(args) -> dict:
    from xlingual.config import FeatureConfig
    from xlingual.features import FeatureStore, cache_key, compute_features
    from xlingual.train import bucket_batches

    base_rss = common.peak_rss_mb()  # the interpreter, torch and xlingual, before any work
    cfg = FeatureConfig()
    utts = corpus(args.hours[0], Path(args.base))
    cache = Path(args.cache)
    folder = cache / cache_key(utts, cfg)
    listed_rss = common.peak_rss_mb()  # + the utterance list
    t0 = time.perf_counter()
    if args.child == "write":
        if args.layout == "sharded":
            compute_features(utts, cache, cfg, progress=False)
        else:
            _single_file_write(utts, cache, cfg)
        files = sorted(p for p in folder.iterdir() if p.suffix == ".npy")
        extra = {"files": len(files), "feature_mb": sum(p.stat().st_size for p in files) / 2 ** 20}
    else:
        store = FeatureStore(folder) if args.layout == "sharded" else _SingleFileStore(folder)
        ids = [u.id for u in utts]
        lengths = [int(u.duration * 100) + 1 for u in utts]
        frames = 0
        for batch in bucket_batches(lengths, 12000, seed=0, epoch=0):  # 120 s batches, the default
            for i in batch:
                frames += store[ids[i]].shape[0]
        extra = {"frames_read": frames}
    return {"seconds": time.perf_counter() - t0, "base_rss_mb": base_rss, "listed_rss_mb": listed_rss,
            "peak_rss_mb": common.peak_rss_mb(), "utterances": len(utts),
            "audio_hours": sum(u.duration for u in utts) / 3600, **extra}


def run_child(kind: str, layout: str, hours: float, cache: Path, base: Path) -> dict:
    cmd = [sys.executable, "-m", "bench.feature_memory", "--child", kind, "--layout", layout, "--hours", str(hours),
           "--cache", str(cache), "--base", str(base)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(res: dict) -> str:
    rows = []
    for r in res["runs"]:
        w, rd = r["write"], r["read"]
        rows.append([r["layout"], f"{r['hours']:g} h", w["utterances"], w["files"], w["feature_mb"],
                     w["base_rss_mb"], w["peak_rss_mb"], w["peak_rss_mb"] - w["listed_rss_mb"], w["seconds"],
                     rd["peak_rss_mb"], rd["peak_rss_mb"] - rd["listed_rss_mb"], rd["seconds"]])
    table = common.md_table(["layout", "corpus", "utterances", ".npy files", "features MB", "RSS before MB",
                             "write: peak RSS MB", "write: added MB", "write s", "read: peak RSS MB",
                             "read: added MB", "read s"], rows)
    lines = [table, "", "added = peak RSS minus the RSS once the interpreter, torch and the utterance list are "
             "loaded: what feature caching (write) or one reading pass (read) itself costs."]
    for layout, g in res["growth"].items():
        lines.append(f"- {layout}: from {res['hours'][0]:g} h to {res['hours'][-1]:g} h, write added "
                     f"{g['write_added_mb'][0]:.0f} -> {g['write_added_mb'][1]:.0f} MB, read added "
                     f"{g['read_added_mb'][0]:.0f} -> {g['read_added_mb'][1]:.0f} MB")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.feature_memory", description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, nargs="+", default=[0.25, 4.0])
    p.add_argument("--quick", action="store_true", help="0.02 h and 0.08 h: a smoke run")
    p.add_argument("--work", default=str(common.WORK_DIR / NAME), help="base corpus and caches (deleted after)")
    p.add_argument("--out", default=None, help="results folder (default results/bench)")
    p.add_argument("--child", choices=["write", "read"], help=argparse.SUPPRESS)
    p.add_argument("--layout", choices=LAYOUTS, default="sharded", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    hours = [0.02, 0.08] if args.quick else args.hours
    head = common.header(f"bench.{NAME}", argv)
    work = Path(args.work)
    base = work / "base"
    corpus(0, base)  # generate the base audio once, outside the measured children
    runs = []
    for h in hours:
        for layout in LAYOUTS:
            cache = work / f"cache-{layout}-{h:g}h"
            shutil.rmtree(cache, ignore_errors=True)
            w = run_child("write", layout, h, cache, base)
            r = run_child("read", layout, h, cache, base)
            shutil.rmtree(cache, ignore_errors=True)
            runs.append({"layout": layout, "hours": h, "write": w, "read": r})
            print(f"{layout:8s} {h:g} h: write peak {w['peak_rss_mb']:.0f} MB ({w['seconds']:.1f} s), "
                  f"read peak {r['peak_rss_mb']:.0f} MB ({r['seconds']:.1f} s)", flush=True)
    growth = {}
    for layout in LAYOUTS:
        lo, hi = (next(r for r in runs if r["layout"] == layout and r["hours"] == h) for h in (hours[0], hours[-1]))
        growth[layout] = {k: [x[s]["peak_rss_mb"] - x[s]["listed_rss_mb"] for x in (lo, hi)]
                          for k, s in (("write_added_mb", "write"), ("read_added_mb", "read"))}
    res = {"hours": hours, "runs": runs, "growth": growth}
    common.write_results(NAME, head, res, markdown(res), args.out, "Feature cache memory vs corpus hours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
