"""Issue-2 table from the matrix's from-scratch runs: dev (best epoch, greedy) and test WER/CER per language and
budget, plus the training throughput each run logged. Run from the repository root after the matrix:
    python results/asr_synthetic/make_table.py exp/matrix_synthetic > results/asr_synthetic/README.md
"""

import json
import statistics
import sys
from pathlib import Path

root = Path(sys.argv[1])
rows = []
for res in sorted(root.glob("scratch/*/seed*/results.json")):
    r = json.loads(res.read_text())
    hist = json.loads((res.parent / "done.json").read_text())["history"]
    best = min(hist, key=lambda h: h["dev_wer"])
    speed = statistics.median(h["audio_sec_per_sec"] for h in hist)
    seed = int(res.parent.name.removeprefix("seed"))
    rows.append((r["language"], -r["hours"], r["hours"], best, r, speed, seed))
print("# From-scratch recipes on the embedded synthetic corpus\n")
print("Tiny conformer-CTC (0.5 M parameters, character units), trained from scratch on a nested subset of each\n"
      "language's synthetic training speech: 1 h (the \"source\" budget, 20 epochs) and 10 min (the \"target\" budget,\n"
      "40 epochs). Dev: the best epoch's greedy WER/CER (the epoch kept as best.pt); test: best.pt, greedy. Test sets\n"
      "are 3 min per language with voices unseen in training (speaker-disjoint splits). These runs are the\n"
      "from-scratch cells of the transfer matrix (`results/matrix_synthetic/`), at seeds 0, 1 and 2 (the recipe's\n"
      "`seeds` and `baseline_seeds`), made by\n\n"
      "    xlingual matrix recipes/synthetic/matrix.yaml --jobs 2\n\n"
      f"and this table by `python results/asr_synthetic/make_table.py {root}`.\n")


def budget(hours: float) -> str:
    return "1 h" if hours >= 1 else f"{hours * 60:.0f} min"


def spread(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


groups: dict[tuple, list] = {}
for row in rows:
    groups.setdefault((row[0], row[1]), []).append(row)
print("Test WER/CER over seeds (mean ± sample standard deviation; seeds change initialization, batch order and\n"
      "SpecAugment, not the data):\n")
print("| language | train budget | seeds | test WER | test WER min..max | test CER | dev WER (best epoch) |")
print("|---|---|---|---|---|---|---|")
for (lang, _), g in sorted(groups.items()):
    wer = [x[4]["test"]["wer"] for x in g]
    print(f"| {lang} | {budget(g[0][2])} | {len(g)} | {spread(wer)} | {min(wer):.1f}..{max(wer):.1f} "
          f"| {spread([x[4]['test']['cer'] for x in g])} | {spread([x[3]['dev_wer'] for x in g])} |")
print("\nEvery run:\n")
print("| language | train budget | seed | epochs | dev WER | dev CER | test WER | test CER | train audio-s/s (median epoch) | wall s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for lang, _, hours, best, r, speed, seed in sorted(rows, key=lambda x: (x[0], x[1], x[6])):
    print(f"| {lang} | {budget(hours)} | {seed} | {r['epochs']} | {best['dev_wer']:.1f} | {best['dev_cer']:.1f} "
          f"| {r['test']['wer']:.1f} | {r['test']['cer']:.1f} | {speed:.0f} | {r['wall_seconds']:.0f} |")
print("\nThroughput was logged while other jobs shared the 2 cores (two matrix runs in parallel, one torch thread\n"
      "each); `bench/train_throughput.py` measures it on an idle machine.")
