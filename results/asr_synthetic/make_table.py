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
    rows.append((r["language"], -r["hours"], r["hours"], best, r, speed))
print("# From-scratch recipes on the embedded synthetic corpus\n")
print("Tiny conformer-CTC (0.5 M parameters, character units), trained from scratch on a nested subset of each\n"
      "language's synthetic training speech: 1 h (the \"source\" budget, 20 epochs) and 10 min (the \"target\" budget,\n"
      "40 epochs). Dev: the best epoch's greedy WER/CER (the epoch kept as best.pt); test: best.pt, greedy. Test sets\n"
      "are 3 min per language with voices unseen in training (speaker-disjoint splits). These runs are the\n"
      "from-scratch cells of the transfer matrix (`results/matrix_synthetic/`), made by\n\n"
      "    xlingual matrix recipes/synthetic/matrix.yaml --jobs 2\n\n"
      f"and this table by `python results/asr_synthetic/make_table.py {root}`.\n")
print("| language | train budget | epochs | dev WER | dev CER | test WER | test CER | train audio-s/s (median epoch) | wall s |")
print("|---|---|---|---|---|---|---|---|---|")
for lang, _, hours, best, r, speed in sorted(rows, key=lambda x: (x[0], x[1])):
    budget = "1 h" if hours >= 1 else f"{hours * 60:.0f} min"
    print(f"| {lang} | {budget} | {r['epochs']} | {best['dev_wer']:.1f} | {best['dev_cer']:.1f} | {r['test']['wer']:.1f} "
          f"| {r['test']['cer']:.1f} | {speed:.0f} | {r['wall_seconds']:.0f} |")
print("\nThroughput was logged while other jobs shared the 2 cores (two matrix runs in parallel, one torch thread\n"
      "each); `bench/train_throughput.py` measures it on an idle machine.")
