"""The real-corpus recipes (recipes/fleurs, recipes/babel) end to end on tiny fixtures in the corpora's exact layouts.

Each recipe's run.sh is asked for its commands (--dry-run) with tiny-scale overrides; those commands are then
executed: `xlingual ...` through xlingual.cli.main in this process (what the console script runs), the shell
steps (Babel's markup cleaning) through bash. So the test runs the recipe's own configs and commands, stage by
stage: prepare -> matrix -> LID -> rank-eval.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.fleurs import FLEURS_COLUMNS
from helpers import TEXTS
from xlingual.cli import main
from xlingual.corpus import read_manifest

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"train": 6, "dev": 2, "test": 2}
FLEURS_CONFIGS = {"bn": "bn_in", "tr": "tr_tr"}  # of the recipe's four, the two with fixture texts
TINY_MODEL = ["model.preset=tiny", "model.d_model=32", "model.n_heads=2", "model.ffn_dim=64", "model.n_layers=1",
              "model.subsample_channels=8", "features.n_mels=40"]
TINY_TRAIN = ["epochs=1", "max_batch_seconds=20", "threads=1", "device=cpu", "progress=false",
              "checkpoint_every_steps=0", "warmup_steps=1"]


def tone(seconds: float, freq: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    noise = 0.02 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write_fleurs(root: Path) -> Path:
    """google/fleurs as on the hub: data/<config>/<split>.tsv and audio/<split>.tar.gz (train also extracted)."""
    for li, (lang, config) in enumerate(FLEURS_CONFIGS.items()):
        cdir = root / "data" / config
        for split, n in SPLITS.items():
            lines, wav_dir = [], cdir / "audio" / split
            wav_dir.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                name, text = f"{lang}_{split}{i}.wav", TEXTS[lang][i % 6]
                sec = 0.8 + 0.1 * (i % 3)
                sf.write(wav_dir / name, tone(sec, 150 + 40 * li + 25 * i, seed=i), 16000)
                fields = [str(100 + i), name, text.capitalize() + ".", text, "", str(int(16000 * sec)), "FEMALE"]
                assert len(fields) == len(FLEURS_COLUMNS)
                lines.append("\t".join(fields))
            (cdir / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
            if split != "train":  # as downloaded: only the archive
                with tarfile.open(cdir / "audio" / f"{split}.tar.gz", "w:gz") as tf:
                    tf.add(wav_dir, arcname=split)
                for f in wav_dir.iterdir():
                    f.unlink()
                wav_dir.rmdir()
    return root


def write_babel(root: Path) -> Path:
    """Kaldi data dirs per language as a Babel s5d recipe leaves them: 8 kHz conversations behind `... |` pipe
    commands (standing in for sph2pipe), segments, utt2spk, and transcripts with Babel's markup."""
    kaldi_dirs = {"train": "train", "dev": "dev2h.pem", "test": "dev10h.pem"}
    for li, lang in enumerate(FLEURS_CONFIGS):
        recipe = root / lang
        for split, n in SPLITS.items():
            conv = f"audio/{lang}_{split}.wav"  # relative to the recipe folder, as in many Kaldi setups
            (recipe / "audio").mkdir(parents=True, exist_ok=True)
            sf.write(recipe / conv, tone(1.2 * (n + 1), 300 + 50 * li, sr=8000, seed=li), 8000)
            d = recipe / "data" / kaldi_dirs[split]
            d.mkdir(parents=True)
            rec = f"{lang}_{split}_A"
            (d / "wav.scp").write_text(f"{rec} cat {conv} |\n")
            segs, text, spk = [], [], []
            for i in range(n):
                utt = f"{rec}_{i:03d}"
                segs.append(f"{utt} {rec} {1.2 * i:.2f} {1.2 * i + 1.0:.2f}")
                text.append(f"{utt} <hes> {TEXTS[lang][i % 6]} <no-speech>")
                spk.append(f"{utt} {rec}")
            segs.append(f"{rec}_{n:03d} {rec} {1.2 * n:.2f} {1.2 * n + 1.0:.2f}")
            text.append(f"{rec}_{n:03d} <no-speech>")  # markup only: skipped at preparation
            spk.append(f"{rec}_{n:03d} {rec}")
            for name, lines in (("segments", segs), ("text", text), ("utt2spk", spk)):
                (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def recipe_env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run_recipe(script: str, tmp: Path, *args: str) -> list[str]:
    """run.sh --dry-run ... -> its commands, each executed; returns them."""
    env = recipe_env()
    proc = subprocess.run(["bash", str(REPO / "recipes" / script / "run.sh"), "--dry-run", *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    cwd = os.getcwd()
    os.chdir(tmp)  # the recipe's relative paths (data/, exp/) are relative to where it runs
    try:
        for cmd in commands:
            argv = shlex.split(cmd)
            if argv[0] == "xlingual":
                assert main(argv[1:]) == 0, cmd
            else:
                subprocess.run(cmd, shell=True, check=True, cwd=tmp, env=env)
    finally:
        os.chdir(cwd)
    return commands


def tiny_args(name: str) -> list[str]:
    sets = {
        "matrix": ["sources=[bn,tr]", "targets=[bn,tr]", "source_hours=null", "target_hours=0.001",
                   "size_pairs=[]", "variant_pairs=[]", "layer_sweep=[]", "variants.chain_thaw.mode=full",
                   f"out_dir=exp/matrix_{name}", *TINY_MODEL, *(f"train.{s}" for s in TINY_TRAIN),
                   *(f"adapt.train.{s}" for s in TINY_TRAIN), "small_train.epochs=1"],
        "lid": ["languages=[bn,tr]", "train_hours=null", "dev_hours=null", f"out_dir=exp/lid_{name}", *TINY_MODEL,
                *(f"train.{s}" for s in TINY_TRAIN)],
    }
    return ["--jobs", "1", "--matrix-args", " ".join(f"--set {s}" for s in sets["matrix"]),
            "--lid-args", " ".join(f"--set {s}" for s in sets["lid"]),
            "--rank-args", "--baselines char --k 2 --device cpu"]


def check_outputs(tmp: Path, name: str, data: Path) -> None:
    for lang in FLEURS_CONFIGS:
        for split, n in SPLITS.items():
            assert len(read_manifest(data / lang / f"{split}.jsonl")) == n
    wer = list(csv.reader((tmp / f"exp/matrix_{name}/report/wer_matrix.csv").open()))
    assert wer[0] == ["adapt to \\ pretrain on", "bn", "tr"] and [r[0] for r in wer[1:]] == ["bn", "tr"]
    runs = list(csv.DictReader((tmp / f"exp/matrix_{name}/report/runs.csv").open()))
    assert all(r["test_wer"] for r in runs) and len(runs) >= 4  # every cell ran (learned, or flagged if not)
    assert all(c or r["learned"] == "False" for r in runs for c in [r["test_wer"]])
    assert (tmp / f"exp/lid_{name}/best.pt").is_file()
    ranking = json.loads((tmp / f"exp/lid_{name}/rank_eval/ranking_eval.json").read_text())
    assert "lid_frame" in ranking["evaluations"].get("in_set", {}) or \
        any("nothing to evaluate" in n for n in ranking["notes"])  # the tiny runs may all be flagged


def test_fleurs_recipe_end_to_end(tmp_path):
    fleurs = write_fleurs(tmp_path / "fleurs")
    # the recipe's four configs; the fixture holds two of them
    dry = subprocess.run(["bash", str(REPO / "recipes/fleurs/run.sh"), "--dry-run", "--stop-stage", "0"],
                         cwd=tmp_path, capture_output=True, text=True, env=recipe_env())
    assert [shlex.split(c[2:])[3] for c in dry.stdout.splitlines()] == ["bn_in", "as_in", "lo_la", "tr_tr"]
    commands = run_recipe("fleurs", tmp_path, "--fleurs", str(fleurs), "--configs", "bn_in tr_tr",
                          "--data", "data/fleurs", *tiny_args("fleurs"))
    assert commands[0] == f"xlingual prepare fleurs {fleurs}/data/bn_in --out data/fleurs/bn --language bn"
    data = tmp_path / "data" / "fleurs"
    check_outputs(tmp_path, "fleurs", data)
    train = read_manifest(data / "bn" / "train.jsonl")
    assert train[0].text == TEXTS["bn"][0] and train[0].audio.endswith("bn_in/audio/train/bn_train0.wav")
    assert read_manifest(data / "tr" / "test.jsonl")[0].audio.endswith("fleurs_audio/test/tr_test0.wav")  # untarred


def test_babel_recipe_end_to_end(tmp_path):
    babel = write_babel(tmp_path / "babel")
    commands = run_recipe("babel", tmp_path, "--babel", str(babel), "--data", "data/babel", "--languages", "bn tr",
                          *tiny_args("babel"))
    data = tmp_path / "data" / "babel"
    check_outputs(tmp_path, "babel", data)
    for lang in FLEURS_CONFIGS:
        train = read_manifest(data / lang / "train.jsonl")
        assert [u.text for u in train[:2]] == TEXTS[lang][:2]  # markup gone, words kept
        report = json.loads((data / lang / "train.report.json").read_text())
        assert report["kept"] == 6 and report["skipped_total"] == 1  # the <no-speech>-only segment
        assert report["notes"] == {"resampled 8000->16000 Hz": 6}
    assert sum(c.startswith("xlingual prepare kaldi") for c in commands) == 6


def test_benchmark_script_commands_load_their_configs(tmp_path):
    """recipes/synthetic/benchmark.sh --dry-run: every stage's command, and every config it names loads with its
    overrides (the control pass: the corpus without shared word forms)."""
    from xlingual.config import LIDConfig, MatrixConfig, PhonotacticConfig, load_config

    dry = subprocess.run(["bash", str(REPO / "recipes/synthetic/benchmark.sh"), "--dry-run", "--stop-stage", "5"],
                         cwd=REPO, capture_output=True, text=True, env=recipe_env())
    assert dry.returncode == 0, dry.stderr
    commands = [shlex.split(line[2:]) for line in dry.stdout.splitlines() if line.startswith("+ ")]
    verbs = [c[1] if c[0] == "xlingual" else Path(c[1]).name for c in commands]
    # per pass: the matrix, the noise matrix (its baselines copied from the matrix), the models, the evaluation
    assert verbs == ["matrix", "collect.py", "matrix", "train_models.py", "rank-eval"] * 2 + ["collect.py"] * 8
    for c in commands:
        sets = [c[i + 1] for i, x in enumerate(c) if x == "--set"]
        phone_sets = [c[i + 1] for i, x in enumerate(c) if x == "--phone-set"]
        if c[1] == "matrix":
            cfg = load_config(MatrixConfig, REPO / c[2], sets)
            assert cfg.out_dir.startswith("exp/benchmark") and len(cfg.targets) == 13
            # the noise matrix: one source per multi-language family, at two more seeds
            assert (len(cfg.sources), cfg.seeds) == ((3, [1, 2]) if cfg.out_dir.endswith("_seeds") else (13, [0]))
        elif "train_models.py" in c[1] or c[1] == "rank-eval":
            lid = c[c.index("--lid") + 1] if "--lid" in c and c[1] != "rank-eval" else c[c.index("--loo-config") + 1]
            phones = c[c.index("--phones") + 1] if "--phones" in c else c[c.index("--phone-config") + 1]
            assert len(load_config(LIDConfig, REPO / lid, sets).languages) == 13
            load_config(PhonotacticConfig, REPO / phones, phone_sets)
    control = [c for c in commands if "exp/benchmark_control" in " ".join(c) and c[1] == "matrix"][0]
    cfg = load_config(MatrixConfig, REPO / control[2], [c for i, c in enumerate(control) if control[i - 1] == "--set"])
    assert cfg.corpus.dir == "data/benchmark_control" and len(cfg.corpus.exclude_shared) == 13


@pytest.mark.parametrize("args, passes", [
    (["--stage", "4", "--stop-stage", "4"], ["benchmark_control"] * 5),  # the control alone: its stages 1-3
    (["--stage", "3", "--stop-stage", "4"], ["benchmark"] + ["benchmark_control"] * 5),
    (["--stage", "2", "--stop-stage", "3"], ["benchmark"] * 2),
    (["--stage", "6", "--stop-stage", "6"], ["benchmark_control"] * 8),  # the control at 3 seeds, nothing else
    (["--stage", "7", "--stop-stage", "7"], ["benchmark"] * 4),  # the main corpus at 3 seeds, nothing else
    (["--stage", "6", "--stop-stage", "7"], ["benchmark_control"] * 8 + ["benchmark"] * 4),
])
def test_benchmark_script_stage_ranges(args, passes):
    """--stage/--stop-stage select stages; stage 4 (the control) runs the control corpus's stages 1-3 whole."""
    dry = subprocess.run(["bash", str(REPO / "recipes/synthetic/benchmark.sh"), "--dry-run", *args],
                         cwd=REPO, capture_output=True, text=True, env=recipe_env())
    assert dry.returncode == 0, dry.stderr
    lines = [line for line in dry.stdout.splitlines()
             if line.startswith("+ ") and "collect.py save exp/benchmark " not in line]  # the main pass's copy
    ran = ["benchmark_control" if "benchmark_control" in line else "benchmark" for line in lines]
    assert ran == passes


def test_compare_control_reads_two_matrices_and_reports_their_agreement(tmp_path):
    """recipes/synthetic/compare_control.py: cell correlation, family means, per-target best sources."""
    sys.path.insert(0, str(REPO / "recipes" / "synthetic"))
    import compare_control

    langs = ["bn", "hi", "tr", "az"]
    cer = {"main": {("bn", "hi"): 30, ("bn", "tr"): 40, ("bn", "az"): 41, ("hi", "bn"): 31, ("hi", "tr"): 42,
                    ("hi", "az"): 43, ("tr", "az"): 20, ("tr", "bn"): 35, ("tr", "hi"): 36, ("az", "tr"): 21,
                    ("az", "bn"): 37, ("az", "hi"): 38},
           "control": {}}
    cer["control"] = {k: v + 1 for k, v in cer["main"].items()}
    cer["control"][("bn", "az")], cer["control"][("bn", "tr")] = 39, 44  # bn's two far sources swap places
    for name, m in cer.items():
        (tmp_path / name / "report").mkdir(parents=True)
        rows = [["target", *langs, "pool"]] + [[t, *[m.get((t, s), 25 if s == t else "") for s in langs], "50"]
                                               for t in langs]
        with open(tmp_path / name / "report" / "cer_matrix.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    out = tmp_path / "cmp.md"
    assert compare_control.main([str(tmp_path / "main"), str(tmp_path / "control"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "12 cells" in text and "| main | 25.5 | 39.0 | 25.0 |" in text  # same family: bn-hi, tr-az pairs
    assert "| bn | hi (30.0) | hi (31.0) | yes / yes | 0.50 |" in text  # its far sources swapped: rho 0.5
    assert "| tr | az (20.0) | az (21.0) | yes / yes | 1.00 |" in text
    assert "their difference per cell: mean +1.00, sd 1.28 CER points" in text  # 10 cells +1, one -2, one +4
    # any two matrices (e.g. a re-run of the same one): named in every table and in the heading
    assert compare_control.main([str(tmp_path / "main"), str(tmp_path / "control"), "--out", str(out), "--names",
                                 "benchmark", "rerun", "--title", "A re-run vs the benchmark"]) == 0
    text = out.read_text()
    assert text.startswith("# A re-run vs the benchmark") and "34.5 (benchmark) vs 35.5 (rerun)" in text
    assert "| benchmark | 25.5 | 39.0 | 25.0 |" in text and "| target | best source, benchmark (CER) | best " \
        "source, rerun (CER) |" in text and "main" not in text.split("`")[2]


def test_compare_control_pools_the_seed_noise_of_off_diagonal_cells(tmp_path):
    sys.path.insert(0, str(REPO / "recipes" / "synthetic"))
    import compare_control

    def runs(folder, rows):
        (folder / "report").mkdir(parents=True)
        with open(folder / "report" / "runs.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "kind", "language", "seed", "label", "test_cer"])
            w.writerows(rows)

    runs(tmp_path / "m", [["adapt/bn-15min_to_hi-3min/main/seed0", "adapt", "hi", "0", "main", "30"],
                          ["adapt/bn-15min_to_bn-3min/main/seed0", "adapt", "bn", "0", "main", "20"],  # diagonal
                          ["scratch/hi-3min/seed0", "scratch", "hi", "0", "main", "50"]])
    assert compare_control.seed_sd(tmp_path / "m") is None  # no noise matrix beside it
    runs(tmp_path / "m_seeds", [["adapt/bn-15min_to_hi-3min/main/seed1", "adapt", "hi", "1", "main", "32"],
                                ["adapt/bn-15min_to_hi-3min/main/seed2", "adapt", "hi", "2", "main", "34"],
                                ["adapt/bn-15min_to_bn-3min/main/seed1", "adapt", "bn", "1", "main", "90"],
                                ["adapt/bn-15min_to_bn-3min/main/seed2", "adapt", "bn", "2", "main", "10"]])
    cells, sd = compare_control.seed_sd(tmp_path / "m")
    assert cells == 1 and sd == pytest.approx(2.0)  # 30, 32, 34; the diagonal cell left out


def test_compare_control_tables_the_rankings_of_both_corpora(tmp_path):
    """--rankings: each predictor evaluated on both corpora, one row, counts beside random's; a predictor on one
    corpus only is named, not tabled."""
    sys.path.insert(0, str(REPO / "recipes" / "synthetic"))
    import compare_control

    def evaluation(hits, regret, p):
        return {"summary": {"n_targets": 13, "top1_hits": hits, "n_unique_best": 6, "top1_hits_unique_best": 5.0,
                            "mean_regret": regret, "spearman": 0.5, "random_top1_hits": 2.08,
                            "random_regret": 4.98},
                "permutation": {"mean_regret": {"p": p}}, "targets": []}

    for name, ev in (("main", {"loo": {"lid_fused": evaluation(12.0, 0.22, 0.0001), "prlm": evaluation(10, 1, 0.01)}}),
                     ("control", {"loo": {"lid_fused": evaluation(8.75, 1.5, 0.02), "embedding": {}}})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ranking_eval.json").write_text(json.dumps({"evaluations": ev}))
    text = compare_control.compare_rankings(compare_control.read_rankings(tmp_path / "main"),
                                            compare_control.read_rankings(tmp_path / "control" / "ranking_eval.json"))
    assert ("| loo/lid_fused | 12 of 13; 5 of 6 (random 2.08) | 0.22 (random 4.98) | 0.500 | 0.0001 | "
            "8.8 of 13; 5 of 6 (random 2.08) | 1.50 (random 4.98) | 0.500 | 0.0200 |") in text
    assert "one corpus only: loo/prlm" in text and "embedding" not in text  # no summary: not evaluated
    with pytest.raises(SystemExit, match="not found"):
        compare_control.read_rankings(tmp_path / "nowhere")
    # the command: two pairs (e.g. two noise views), one section each, under the matrices' comparison
    rows = [["target", "bn", "as", "tr"], ["bn", "25", "28", "30"], ["as", "27", "24", "33"], ["tr", "31", "32", "20"]]
    for name in ("m1", "m2"):
        (tmp_path / name / "report").mkdir(parents=True)
        with open(tmp_path / name / "report" / "cer_matrix.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    out = tmp_path / "cmp.md"
    pair = [str(tmp_path / "main"), str(tmp_path / "control")]
    assert compare_control.main([str(tmp_path / "m1"), str(tmp_path / "m2"), "--rankings", *pair, "--rankings",
                                 *pair, "--out", str(out)]) == 0
    assert out.read_text().count("## The source rankings on both corpora") == 2


def test_benchmark_script_seeds_stage_runs_the_control_at_three_seeds():
    """Stage 6: the control's runs copied in, its matrix at seeds 0-2 without pools, the predictor scores re-scored
    against it (both noise views), collected."""
    from xlingual.config import MatrixConfig, load_config

    dry = subprocess.run(["bash", str(REPO / "recipes/synthetic/benchmark.sh"), "--dry-run", "--stage", "6",
                          "--stop-stage", "6", "--scores-from", "exp/x/ranking_loo6"],
                         cwd=REPO, capture_output=True, text=True, env=recipe_env())
    assert dry.returncode == 0, dry.stderr
    commands = [shlex.split(line[2:]) for line in dry.stdout.splitlines() if line.startswith("+ ")]
    assert [c[1] if c[0] == "xlingual" else Path(c[1]).name for c in commands] == \
        ["collect.py"] * 4 + ["matrix", "rank-eval", "rank-eval", "collect.py"]
    matrix = commands[4]
    cfg = load_config(MatrixConfig, REPO / matrix[2], [matrix[i + 1] for i, x in enumerate(matrix) if x == "--set"])
    assert cfg.seeds == [0, 1, 2] and cfg.pools == {} and cfg.corpus.dir == "data/benchmark_control"
    assert cfg.out_dir == "exp/benchmark_control_3seeds" and len(cfg.sources) == 13
    assert all(c[c.index("--scores-from") + 1] == "exp/x/ranking_loo6" for c in commands if c[1] == "rank-eval")


def test_benchmark_script_seeds_stage_runs_the_main_corpus_at_three_seeds():
    """Stage 7: the main corpus's matrix at seeds 0-2 without pools (nothing copied in: its stage-1 runs were made by
    older code), the main predictor scores re-scored against it (both noise views), collected."""
    from xlingual.config import MatrixConfig, load_config

    dry = subprocess.run(["bash", str(REPO / "recipes/synthetic/benchmark.sh"), "--dry-run", "--stage", "7",
                          "--stop-stage", "7", "--main-scores-from", "exp/y/ranking_loo6", "--scores-from", "exp/x"],
                         cwd=REPO, capture_output=True, text=True, env=recipe_env())
    assert dry.returncode == 0, dry.stderr
    commands = [shlex.split(line[2:]) for line in dry.stdout.splitlines() if line.startswith("+ ")]
    assert [c[1] if c[0] == "xlingual" else Path(c[1]).name for c in commands] == \
        ["matrix", "rank-eval", "rank-eval", "collect.py"]
    matrix = commands[0]
    cfg = load_config(MatrixConfig, REPO / matrix[2], [matrix[i + 1] for i, x in enumerate(matrix) if x == "--set"])
    assert cfg.seeds == [0, 1, 2] and cfg.pools == {} and cfg.pool_budgets == [] and cfg.corpus.dir == "data/benchmark"
    assert cfg.out_dir == "exp/benchmark_3seeds" and len(cfg.sources) == 13 and not cfg.corpus.exclude_shared
    evals = [c for c in commands if c[1] == "rank-eval"]
    assert [c[c.index("--seed-floor") + 1] for c in evals] == ["adapt", "none"]
    assert all(c[c.index("--scores-from") + 1] == "exp/y/ranking_loo6" for c in evals)  # the main corpus's scores
    assert commands[-1][-2:] == ["exp/benchmark_3seeds", "results/ranking_benchmark/benchmark_3seeds"]



def _seed_runs(folder, cer):
    """report/runs.csv of a matrix: cer {(target, source): [CER at seed 0, 1, 2]} (+ a diagonal and a pool run)."""
    (folder / "report").mkdir(parents=True)
    with open(folder / "report" / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "kind", "language", "seed", "label", "test_cer", "learned"])
        for (t, s), values in cer.items():
            for seed, v in enumerate(values):
                w.writerow([f"adapt/{s}-15min_to_{t}-3min/main/seed{seed}", "adapt", t, seed, "main", v, "True"])
        w.writerow(["adapt/bn-15min_to_bn-3min/main/seed0", "adapt", "bn", 0, "main", 1.0, "True"])  # not a candidate
        w.writerow(["adapt/as+hi-15min_to_bn-3min/main/seed0", "adapt", "bn", 0, "main", 1.0, "True"])  # a pool


@pytest.mark.parametrize("cer, top1, regret", [
    # hi is best at every seed: every held-out seed picks it
    ({("bn", "hi"): [30, 31, 30], ("bn", "tr"): [40, 41, 42], ("bn", "as"): [35, 35, 36]}, 1.0, 0.0),
    # seed 0 picks as (35 < 36) where seeds 1-2 say hi (30.5 < 35.5: regret 5); seeds 1 and 2 pick hi, rightly
    ({("bn", "hi"): [36, 30, 31], ("bn", "as"): [35, 35, 36], ("bn", "tr"): [40, 41, 42]}, 2 / 3, 5 / 3),
])
def test_seed_agreement_scores_one_seed_against_the_mean_of_the_others(tmp_path, cer, top1, regret):
    """recipes/synthetic/seed_agreement.py: leave-one-seed-out top-1 and regret of the matrix's own re-draws."""
    sys.path.insert(0, str(REPO / "recipes" / "synthetic"))
    import seed_agreement

    _seed_runs(tmp_path / "m", cer)
    cells = seed_agreement.read_cells(tmp_path / "m")
    assert set(cells) == set(cer)  # the diagonal and the pool are left out
    res = seed_agreement.agreement(cells, unique_best={"bn"})
    assert res["mean"]["top1"] == pytest.approx(top1) and res["mean"]["mean_regret"] == pytest.approx(regret)
    assert res["mean"]["top1_unique_best"] == pytest.approx(top1) and res["mean"]["random_top1"] == pytest.approx(1 / 3)
    # a predictor that always names tr: never right, regret = tr's reference CER minus the best's
    wrong = seed_agreement.agreement(cells, picks={"bn": "tr"})
    assert wrong["mean"]["top1"] == 0 and wrong["mean"]["mean_regret"] > 4


def test_seed_agreement_command_tables_the_matrix_beside_a_predictor(tmp_path):
    sys.path.insert(0, str(REPO / "recipes" / "synthetic"))
    import seed_agreement

    _seed_runs(tmp_path / "m", {("bn", "hi"): [30, 31, 30], ("bn", "as"): [35, 35, 36]})
    ev = {"oracle": {"unique_best": ["bn"]},
          "evaluations": {"loo": {"lid_fused": {"targets": [{"target": "bn", "predicted": [["as", 0.9], ["hi", 0.1]]}]}}}}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "ranking_eval.json").write_text(json.dumps(ev))
    out = tmp_path / "agree.md"
    assert seed_agreement.main([str(tmp_path / "m"), "--rank-eval", str(tmp_path / "r"), "--predictor", "loo/lid_fused",
                                "--out", str(out)]) == 0
    text = out.read_text()
    assert "| a re-drawn seed of the matrix | 1 (1..1) of 1 | 1 (1..1) of 1 | 0.00 (0.00..0.00) |" in text
    assert "| loo/lid_fused | 0 (0..0) of 1 | 0 (0..0) of 1 |" in text
    assert json.loads(out.with_suffix(".json").read_text())["loo/lid_fused"]["mean"]["top1"] == 0
    with pytest.raises(SystemExit, match="no evaluation of loo/prlm"):
        seed_agreement.main([str(tmp_path / "m"), "--rank-eval", str(tmp_path / "r"), "--predictor", "loo/prlm"])
    _seed_runs(tmp_path / "one", {("bn", "hi"): [30], ("bn", "as"): [35]})
    with pytest.raises(SystemExit, match="1 seed"):
        seed_agreement.agreement(seed_agreement.read_cells(tmp_path / "one"))
