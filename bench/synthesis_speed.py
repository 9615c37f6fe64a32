"""Synthetic-corpus generation speed: audio seconds written per wall second, with jobs=1 and jobs=2.

Each round generates the same corpus (data_prep.synthetic.prepare_synthetic, same seed and languages) into a
fresh folder once per jobs setting, interleaved. Two figures per run:

  whole call   everything prepare_synthetic does: vocabulary (CLDR words phonemized by eSpeak NG), worker-pool
               start (spawn), synthesis, resampling, post-processing, WAV writes, manifests, markers
  generation   prepare_synthetic's own timer (the synthesis loop of each split, without the vocabulary and the
               pool start), read from the line it prints

A cProfile of one jobs=1 run shows where the time of a single worker goes.

    python -m bench.synthesis_speed                  # bn and tr, 0.2 h each, 3 rounds
    python -m bench.synthesis_speed --quick
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import shutil
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

NAME = "synthesis_speed"
_SPEED_LINE = re.compile(r"synthetic: ([0-9.]+) h of audio in ([0-9.]+) s")


def generate(languages: list[str], hours: float, jobs: int, work: Path, telephone: bool = False,
             noise_snr: float | None = None) -> dict:
    """One fresh generation; returns {"wall", "generation", "audio_seconds"}."""
    from data_prep.synthetic import prepare_synthetic
    from xlingual.corpus import read_manifest

    out = Path(tempfile.mkdtemp(prefix=f"syn-j{jobs}-", dir=work))
    try:
        buf = io.StringIO()
        with common.Clock() as c, redirect_stdout(buf), redirect_stderr(io.StringIO()):  # progress bars
            manifests = prepare_synthetic(out, languages=tuple(languages), hours={"train": hours}, jobs=jobs,
                                          telephone=telephone, noise_snr=noise_snr, progress=True)
        audio = sum(u.duration for lang in manifests.values() for m in lang.values() for u in read_manifest(m))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    m = _SPEED_LINE.search(buf.getvalue())
    return {"wall": c.wall, "generation": float(m.group(2)) if m else None, "audio_seconds": audio,
            "cpu_seconds_main_process": c.cpu}


def profile_run(languages, hours, work, top: int = 12) -> list[dict]:
    prof = cProfile.Profile()
    prof.enable()
    generate(languages, hours, 1, work)
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = [{"function": fn if file == "~" else f"{Path(file).name}:{line}({fn})", "calls": nc, "tottime": tt,
             "cumtime": ct} for (file, line, fn), (cc, nc, tt, ct, _) in st.stats.items()]
    return sorted(rows, key=lambda r: -r["tottime"])[:top]


def markdown(res: dict) -> str:
    s = res["setup"]
    text = (f"{s['hours']} h of train audio per language ({', '.join(s['languages'])}; telephone={s['telephone']}, "
            f"noise_snr={s['noise_snr']}), median of {s['repeats']} interleaved rounds. Audio seconds written per "
            f"wall second.\n\n")
    rows = []
    for j, r in res["jobs"].items():
        rows.append([j, r["audio_seconds"], r["whole_call_audio_sec_per_sec"]["median"],
                     f"{common.fmt(r['whole_call_audio_sec_per_sec']['min'])}.."
                     f"{common.fmt(r['whole_call_audio_sec_per_sec']['max'])}",
                     r["generation_audio_sec_per_sec"]["median"], r["wall_seconds"]["median"]])
    text += common.md_table(["jobs", "audio s", "whole call audio-s/s", "min..max", "generation audio-s/s",
                             "wall s"], rows)
    if res.get("jobs2_over_jobs1"):
        text += (f"\njobs=2 / jobs=1 (whole call, same round): {common.fmt(res['jobs2_over_jobs1']['median'])}; "
                 f"generation only: {common.fmt(res['jobs2_over_jobs1_generation']['median'])}\n")
    if res.get("cprofile_top"):
        text += "\ncProfile of one jobs=1 run, top functions by own time:\n\n"
        text += common.md_table(["function", "calls", "own s", "cumulative s"],
                                [[c["function"], c["calls"], c["tottime"], c["cumtime"]] for c in res["cprofile_top"]])
    return text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tr only, 0.01 h, 2 rounds")
    p.add_argument("--languages", nargs="+", default=None, help="default bn tr (--quick: tr)")
    p.add_argument("--hours", type=float, default=None, help="train hours per language (default 0.2; --quick 0.01)")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3; --quick 2)")
    p.add_argument("--telephone", action="store_true")
    p.add_argument("--noise-snr", type=float, default=None)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.languages = args.languages or (["tr"] if args.quick else ["bn", "tr"])
    args.hours = args.hours or (0.01 if args.quick else 0.2)
    args.repeats = args.repeats or (2 if args.quick else 3)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    head = common.header("bench.synthesis_speed", argv)
    work = common.WORK_DIR / "synthesis_speed"
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[int, list[dict]] = {j: [] for j in args.jobs}

    def one(j):
        def run():
            r = generate(args.languages, args.hours, j, work, args.telephone, args.noise_snr)
            runs[j].append(r)
            return r["wall"]
        return run

    common.interleaved({f"jobs={j}": one(j) for j in args.jobs}, repeats=args.repeats, warmup=0)
    res = {"setup": {"languages": args.languages, "hours": args.hours, "repeats": args.repeats,
                     "telephone": args.telephone, "noise_snr": args.noise_snr, "cores": common.machine()["cores"]},
           "jobs": {}}
    for j, rs in runs.items():
        res["jobs"][j] = {
            "audio_seconds": rs[0]["audio_seconds"], "wall_seconds": common.stats([r["wall"] for r in rs]),
            "whole_call_audio_sec_per_sec": common.stats([r["audio_seconds"] / r["wall"] for r in rs]),
            "generation_audio_sec_per_sec": common.stats([r["audio_seconds"] / r["generation"] for r in rs
                                                          if r["generation"]]),
        }
    if 1 in runs and 2 in runs:
        res["jobs2_over_jobs1"] = common.stats(common.ratios([r["wall"] for r in runs[1]],
                                                             [r["wall"] for r in runs[2]]))
        res["jobs2_over_jobs1_generation"] = common.stats(common.ratios(
            [r["generation"] or 0 for r in runs[1]], [r["generation"] or 0 for r in runs[2]]))
    if not args.no_profile:
        res["cprofile_top"] = profile_run(args.languages, args.hours, work)
    for j, r in res["jobs"].items():
        print(f"jobs={j}: {r['whole_call_audio_sec_per_sec']['median']:.0f} audio-s/s whole call, "
              f"{r['generation_audio_sec_per_sec']['median'] or 0:.0f} generation only", flush=True)
    common.write_results(NAME, head, res, markdown(res), common.results_dir(args.out, args.quick), title="Synthetic corpus generation speed")
    return res


if __name__ == "__main__":
    main()
