"""Side by side with ESPnet2: the same Conformer-CTC trained by ESPnet2 and by xlingual, on the same data.

Optional, and never part of CI: it installs ESPnet2 into a venv of its own (--venv; built once, then reused; the
install and its time are logged there), then trains the two toolkits one after the other, each in a child process:

  data      one language of the embedded synthetic corpus (default bn: 1.0 h train, 0.05 h dev, 0.1 h test; found or
            generated as every benchmark's corpus, bench/common.py), written as xlingual manifests and, from the same
            utterance lists, as Kaldi data dirs for ESPnet
  model     the same dimensions in both: conformer 128d x 4 blocks, 4 heads, FFN 512, kernel 31, conv2d stem of 128
            channels, 80 mels, CTC over characters, ~2.07M parameters (bench/peer_espnet/train_conformer_ctc.yaml
            and bench/peer_espnet/xlingual.yaml); each toolkit keeps its own optimizer, batching and SpecAugment
  training  the same number of epochs (--epochs, default 15); best epoch chosen by dev CER in both
  scoring   both decoded greedily (best-path CTC), both scored here by one scorer (jiwer WER/CER) against the same
            reference texts (the manifests' transcripts)
  xlingual  three times: one process of --threads threads (as ESPnet); "xlingual-ddp", the same recipe trained
            by --threads data-parallel processes of one thread each (torchrun; each with 1/N of the batch audio, so
            an update sees the same audio): on a model this small intra-op threads share little work per operator,
            and data-parallel processes may use the cores better; this row measures whether they do; and
            "xlingual-bf16", one process with train.cpu_bf16 (the forward pass under CPU bf16 autocast: for CPUs
            with AMX / AVX512-BF16 units; ESPnet2 has no CPU mixed precision to set against it)

Reported per toolkit: training wall time (the training process: ESPnet's asr_train; xlingual's recipe stages 0-1,
which include its feature caching: ESPnet computes its features inside training), training audio-s/s (train audio
x epochs / that wall time), peak RSS of the training process (its ru_maxrss from wait4), its CPU share, the
parameter count, test CER/WER of the dev-selected and of the last checkpoint; the xlingual / ESPnet ratios; and dev
CER at equal training time (from each toolkit's per-epoch log).

    python -m bench.peer_espnet              # ~40 min on 2 idle cores, plus the first venv install (~5-10 min)
    python -m bench.peer_espnet --quick      # smoke run: 0.02 h train, 1 epoch; a few minutes after the install

Run it on an otherwise idle machine: an earlier ESPnet run under load (a second busy process) trained 2.5-3.5x
slower per epoch. Results go to results/bench/peer_espnet.{json,md} only at full size (the defaults); --quick and
any other size go to exp/bench/quick/ (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

NAME = "peer_espnet"
ASSETS = Path(__file__).resolve().with_suffix("")  # bench/peer_espnet/: the two configs and the venv-side scripts
TOOLKITS = ("espnet", "xlingual", "xlingual-ddp", "xlingual-bf16")  # xlingual-ddp: the same recipe as data-parallel
#   ranks (torchrun, one rank per thread, each 1 thread): intra-op threads gain little on a model this small, ranks
#   split the batches instead. xlingual-bf16: the same recipe with train.cpu_bf16 (CPU bf16 autocast; pays off on
#   CPUs with AMX / AVX512-BF16 only)
EXTRA_SETS = {"xlingual-bf16": ["train.cpu_bf16=true"]}  # a variant's recipe overrides
FULL = {"language": "bn", "hours": 1.0, "dev_hours": 0.05, "test_hours": 0.1, "epochs": 15}
QUICK = {"hours": 0.02, "dev_hours": 0.01, "test_hours": 0.01, "epochs": 1}
# What the ESPnet venv installs. torch: the CPU build (2.13.0+cpu; pip must find it, e.g. in a find-links folder);
# torchaudio: espnet2.tasks.asr imports it at module level; espnet 202511: the pip release of espnet2.
TORCH_SPEC, TORCHAUDIO_SPEC, ESPNET_SPEC = "torch==2.13.0+cpu", "torchaudio==2.11.1", "espnet==202511"
INSTALL_DIR = "bench_install"  # inside the venv: the install's logs and install.json (its presence = finished)


# ---------------------------------------------------------------------------------------------------------------
# Child processes


def run_measured(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run `cmd` with its output in `log`; its wall seconds, CPU seconds and peak RSS.

    Peak RSS is ru_maxrss of the rusage that wait4 returns for this child: the largest resident size of the child
    or of any descendant it waited for, and of nothing else this benchmark ran (RUSAGE_CHILDREN would mix them).
    Raises RuntimeError with the end of the log when the command fails.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        f.write(f"$ {subprocess.list2cmdline([str(c) for c in cmd])}\n")
        f.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: don't leave a training process behind
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it: tell Popen, so it never waits again
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-40:])
        raise RuntimeError(f"{cmd[0]} ... failed (exit {proc.returncode}); log {log}:\n{tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024.0}


def child_env(threads: int) -> tuple[dict, dict]:
    """The environment of every child (both toolkits alike) and what it sets.

    Same threads: torch takes its intra-op thread count from OMP_NUM_THREADS. Same OpenMP wait policy: the xlingual
    CLI picks OMP_WAIT_POLICY=PASSIVE by itself on a busy machine (xlingual/cores.py) while ESPnet keeps libgomp's
    spinning default, which collapses beside other work; deciding once here and giving both the same setting keeps
    that choice out of the comparison (a policy the user set is kept).
    """
    from xlingual.cores import openmp_wait

    env = dict(os.environ)
    n = str(threads)
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, PYTHONHASHSEED="0")
    policy = openmp_wait(env)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    return env, {k: env[k] for k in common.THREAD_ENV + ("OPENBLAS_NUM_THREADS",) if k in env}


def busy_processes(seconds: float = 1.0, top: int = 5, min_percent: float = 5.0) -> list[dict]:
    """The processes that used the most CPU over the next `seconds` (this one excluded): what else ran."""
    def sample() -> dict[int, tuple[float, str]]:
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except (OSError, IndexError):
                continue
            out[int(d.name)] = (int(fields[11]) + int(fields[12]), cmd)  # utime + stime, in clock ticks
        return out

    try:
        a = sample()
        time.sleep(seconds)
        b = sample()
    except OSError:  # no /proc (not Linux)
        return []
    ticks = os.sysconf("SC_CLK_TCK")
    rows = [{"pid": pid, "cpu_percent": round(100.0 * (t - a[pid][0]) / ticks / seconds, 1), "cmd": cmd[:120]}
            for pid, (t, cmd) in b.items() if pid in a]
    rows = [r for r in rows if r["cpu_percent"] >= min_percent]
    return sorted(rows, key=lambda r: -r["cpu_percent"])[:top]


def machine_state() -> dict:
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "busy_processes": busy_processes()}


# ---------------------------------------------------------------------------------------------------------------
# The ESPnet venv


def ensure_venv(venv: Path, python: str = sys.executable, torch_spec: str = TORCH_SPEC) -> dict:
    """The ESPnet venv at `venv`: reused when a finished install is there, else built; returns its install.json.

    The install is timed without pip's cache (PIP_NO_CACHE_DIR=1), so that its time includes every download and
    wheel build; each step's log, pip check, pip freeze and the work-arounds applied go to <venv>/bench_install/.
    """
    venv = Path(venv).absolute()
    logs = venv / INSTALL_DIR
    done = logs / "install.json"
    if done.is_file():
        info = json.loads(done.read_text())
        ok = subprocess.run([str(venv / "bin" / "python"), "-c", "import espnet2.tasks.asr"], capture_output=True)
        if ok.returncode == 0:
            print(f"ESPnet venv {venv}: reused (installed in {info['install_wall_s']:.0f} s)", flush=True)
            return {**info, "reused": True}
        raise RuntimeError(f"{venv}: the ESPnet venv no longer imports espnet2 ({ok.stderr.decode()[-500:]}); "
                           f"remove it, and the next run builds it again")
    if venv.exists():
        if not logs.is_dir():  # not made by this benchmark: never delete someone else's folder
            raise RuntimeError(f"{venv} exists and is not an ESPnet venv made by this benchmark; pass another --venv")
        shutil.rmtree(venv)  # an install of ours that was interrupted: start again
    logs.parent.mkdir(parents=True, exist_ok=True)
    print(f"ESPnet venv {venv}: installing (logs in {logs}) ...", flush=True)
    env = {**os.environ, "PIP_NO_CACHE_DIR": os.environ.get("PIP_NO_CACHE_DIR", "1")}
    env.pop("VIRTUAL_ENV", None)
    py, pip = str(venv / "bin" / "python"), [str(venv / "bin" / "python"), "-m", "pip"]
    steps, workarounds = {}, []
    t0 = time.perf_counter()
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    logs.mkdir()
    # torch first, so that espnet's unpinned torch requirement is met by the CPU build, not a multi-GB CUDA one
    steps["torch"] = run_measured([*pip, "install", torch_spec], logs / "install_torch.log", env)["wall_s"]
    # Work-around 1: espnet 202511 pins setuptools<74 while torch 2.13 needs setuptools>=77.0.3, and pip stops with
    # ResolutionImpossible. espnet2 on Python 3.11 never imports setuptools/pkg_resources, so espnet goes in with
    # --no-deps, then all its other (non-extra) requirements (bench/peer_espnet/espnet_requirements.py).
    steps["espnet"] = run_measured([*pip, "install", "--no-deps", ESPNET_SPEC], logs / "install_espnet.log",
                                   env)["wall_s"]
    reqs = subprocess.run([py, str(ASSETS / "espnet_requirements.py")], check=True, capture_output=True,
                          text=True).stdout
    (logs / "espnet_requirements_used.txt").write_text(reqs)
    steps["espnet_requirements"] = run_measured(
        [*pip, "install", "-r", str(logs / "espnet_requirements_used.txt"), TORCHAUDIO_SPEC, torch_spec],
        logs / "install_requirements.log", env)["wall_s"]
    workarounds.append(f"{ESPNET_SPEC} installed with --no-deps, then its requirements without the setuptools<74 "
                       f"pin (it conflicts with torch's setuptools>=77.0.3)")
    # Work-around 2: PyPI's torchaudio 2.11.1 wheel is a CUDA build: its extension _torchaudio.so needs
    # libc10_cuda.so, which the CPU torch lacks, so `import torchaudio` raises OSError. With the extension renamed,
    # torchaudio imports its pure-Python parts, and this CTC conformer calls no torchaudio op (espnet2's fbank is
    # librosa mel filters + torch.stft; its CTC loss is torch.nn.CTCLoss).
    probe = subprocess.run([py, "-c", "import torchaudio"], capture_output=True, text=True)
    if probe.returncode != 0:
        lib = subprocess.run([py, "-c", "import importlib.util as u, os; print(os.path.join(os.path.dirname("
                              "u.find_spec('torchaudio').origin), 'lib', '_torchaudio.so'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
        if not Path(lib).is_file():
            raise RuntimeError(f"`import torchaudio` fails in {venv} and {lib} is not there:\n{probe.stderr[-1000:]}")
        Path(lib).rename(lib + ".disabled")
        error = [line for line in probe.stderr.splitlines() if "Error" in line][-1:]
        workarounds.append(f"torchaudio's CUDA-linked extension disabled ({lib} -> _torchaudio.so.disabled) after "
                           f"`import torchaudio` failed: {' '.join(error)}")
    check = subprocess.run([py, "-c", "import espnet2.tasks.asr"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"`import espnet2.tasks.asr` fails in {venv}:\n{check.stderr[-2000:]}")
    wall = time.perf_counter() - t0
    pip_check = subprocess.run([*pip, "check"], capture_output=True, text=True, env=env)
    (logs / "pip_check.txt").write_text(pip_check.stdout + pip_check.stderr)
    (logs / "pip_freeze.txt").write_text(subprocess.run([*pip, "freeze"], capture_output=True, text=True,
                                                        env=env).stdout)
    (logs / "workarounds.txt").write_text("".join(w + "\n" for w in workarounds))
    versions = json.loads(subprocess.run(
        [py, "-c", "import json, sys, importlib.metadata as m; print(json.dumps({'python': sys.version.split()[0], "
                   "**{p: m.version(p) for p in ('espnet', 'torch', 'torchaudio', 'numpy', 'librosa')}}))"],
        capture_output=True, text=True, check=True).stdout)
    size = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True).stdout.split()
    info = {"venv": str(venv), "install_wall_s": wall, "steps_wall_s": steps, "versions": versions,
            "workarounds": workarounds, "pip_check": (pip_check.stdout + pip_check.stderr).strip().splitlines(),
            "venv_mb": int(size[0]) if size else None, "installed": time.strftime("%Y-%m-%dT%H:%M:%S")}
    done.write_text(json.dumps(info, indent=2) + "\n")
    print(f"ESPnet venv installed in {wall:.0f} s", flush=True)
    return {**info, "reused": False}


# ---------------------------------------------------------------------------------------------------------------
# Data: one set of utterances, as xlingual manifests and as Kaldi dirs


def select_data(language: str, hours: dict[str, float], corpus: str | None) -> dict[str, list]:
    """{split: utterances}: about hours[split] of each split of `language` (nested subsets, bench/common.py)."""
    return {split: common.train_utterances(h, (language,), corpus, split=split) for split, h in hours.items()}


def write_manifests(data: dict[str, list], root: Path, language: str) -> Path:
    """root/<language>/<split>.jsonl (absolute audio paths): the corpus xlingual's recipe reads."""
    from xlingual.corpus import write_manifest

    for split, utts in data.items():
        (root / language).mkdir(parents=True, exist_ok=True)
        write_manifest(root / language / f"{split}.jsonl", utts)
    return root


def kaldi_id(utt) -> str:
    """The Kaldi id of an utterance: prefixed with its speaker (Kaldi sorts utt2spk; ESPnet keeps the convention)."""
    spk, uid = utt.speaker.replace(" ", "_"), utt.id.replace(" ", "_")
    return uid if uid.startswith(spk) else f"{spk}-{uid}"


def write_kaldi(utts: list, out: Path) -> dict:
    """A Kaldi data dir (wav.scp, text, utt2spk, spk2utt) of `utts`, plus id_map (kaldi id -> manifest id).

    ESPnet reads whole 16 kHz mono files: an utterance with an offset, or another rate or channel count, is an error
    (never silently changed). The text is the manifest's transcript, whitespace collapsed.
    Returns {"utts", "seconds", "id_map"}.
    """
    import soundfile as sf

    rows = []
    for u in utts:
        if u.offset:
            raise ValueError(f"{u.id}: an offset segment (ESPnet's wav.scp here takes whole files only)")
        info = sf.info(u.audio)
        if info.samplerate != 16000 or info.channels != 1:
            raise ValueError(f"{u.id}: {u.audio} is {info.samplerate} Hz, {info.channels} channels (need 16 kHz mono)")
        rows.append((kaldi_id(u), u, str(Path(u.audio).resolve()), " ".join(u.text.split()), info.frames / 16000))
    rows.sort(key=lambda r: r[0])
    if len({r[0] for r in rows}) != len(rows):
        raise ValueError(f"{out}: two utterances map to one Kaldi id")
    out.mkdir(parents=True, exist_ok=True)
    files = {name: open(out / name, "w", encoding="utf-8") for name in ("wav.scp", "text", "utt2spk", "id_map")}
    spk2utt: dict[str, list[str]] = {}
    with files["wav.scp"], files["text"], files["utt2spk"], files["id_map"]:
        for kid, u, path, text, _ in rows:
            spk = u.speaker.replace(" ", "_")
            files["wav.scp"].write(f"{kid} {path}\n")
            files["text"].write(f"{kid} {text}\n")
            files["utt2spk"].write(f"{kid} {spk}\n")
            files["id_map"].write(f"{kid} {u.id}\n")
            spk2utt.setdefault(spk, []).append(kid)
    (out / "spk2utt").write_text("".join(f"{s} {' '.join(k)}\n" for s, k in sorted(spk2utt.items())),
                                 encoding="utf-8")
    return {"utts": len(rows), "seconds": sum(r[4] for r in rows), "id_map": {r[0]: r[1].id for r in rows}}


# ---------------------------------------------------------------------------------------------------------------
# One scorer for both toolkits


def read_text(path: Path, id_map: dict[str, str] | None = None) -> dict[str, str]:
    """A `id text` file -> {id: text} (whitespace collapsed); id_map renames ids (ESPnet's Kaldi ids -> ours)."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            k, _, v = line.partition(" ")
            out[id_map.get(k, k) if id_map else k] = " ".join(v.split())
    return out


def score(refs: dict[str, str], hyps: dict[str, str]) -> dict:
    """Corpus-level WER and CER (%) of `hyps` against `refs` with jiwer, for every toolkit alike.

    Only whitespace is normalised (both sides were normalised once, upstream, for both toolkits). A reference
    without a hypothesis counts as an empty hypothesis (and in missing_hyps); extra hypotheses are ignored; empty
    references are skipped (jiwer cannot score them). CER counts spaces as characters (jiwer.cer).
    """
    import jiwer

    ids = sorted(k for k in refs if refs[k])
    r = [" ".join(refs[k].split()) for k in ids]
    h = [" ".join(hyps.get(k, "").split()) for k in ids]
    if not ids:
        raise ValueError("no non-empty reference to score")
    w, c = jiwer.process_words(r, h), jiwer.process_characters(r, h)
    return {"wer": 100.0 * w.wer, "cer": 100.0 * c.cer, "utts": len(ids), "skipped_empty_refs": len(refs) - len(ids),
            "missing_hyps": sum(k not in hyps for k in ids), "ref_words": sum(len(x.split()) for x in r),
            "ref_chars": sum(len(x) for x in r), "sentence_correct": sum(a == b for a, b in zip(r, h))}


# ---------------------------------------------------------------------------------------------------------------
# ESPnet


def to_seconds(text: str) -> float:
    """ESPnet's logged durations ('1 minute and 11.28 seconds', '2.57 seconds', '1 hour, 2 minutes and 3 seconds')."""
    units = {"hour": 3600.0, "minute": 60.0, "second": 1.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+) (hour|minute|second)", text))


# "<n>epoch results: [train] k=v, ..., time=<duration>, total_count=<n>[, more], [valid] k=v, ..., time=..., ..."
_EPOCH = re.compile(r"(\d+)epoch results: \[train\] (.*?), time=([^,]*?), total_count=\d+[^\[]*"
                    r"\[valid\] (.*?), time=([^,]*?), total_count=\d+")


def parse_espnet_log(text: str) -> list[dict]:
    """Per epoch of an ESPnet train.log: train and valid phase seconds, losses, valid cer_ctc (%, spaces removed)."""
    epochs = []
    for m in _EPOCH.finditer(text):
        tr = dict(kv.split("=", 1) for kv in m.group(2).split(", ") if "=" in kv)
        va = dict(kv.split("=", 1) for kv in m.group(4).split(", ") if "=" in kv)
        epochs.append({"epoch": int(m.group(1)), "train_seconds": to_seconds(m.group(3)),
                       "valid_seconds": to_seconds(m.group(5)), "train_loss": float(tr["loss"]),
                       "dev_loss": float(va["loss"]),
                       "dev_cer": 100.0 * float(va["cer_ctc"]) if "cer_ctc" in va else None})
    return epochs


def run_espnet(venv: Path, kaldi: Path, work: Path, refs: dict[str, str], id_map: dict[str, str], epochs: int,
               env: dict) -> dict:
    """Token list, feature stats, training (measured), greedy decoding of test, scoring: ESPnet2's result dict."""
    py = str(Path(venv).absolute() / "bin" / "python")
    conf, tokens, stats, exp = ASSETS / "train_conformer_ctc.yaml", work / "tokens.txt", work / "stats", work / "exp"
    logs = work / "logs"
    steps = {}
    print("espnet: token list, feature stats ...", flush=True)
    # characters of the training text, as ESPnet's asr.sh makes them: <blank>=0, <unk>=1, <sos/eos> last
    steps["tokens"] = run_measured(
        [py, "-m", "espnet2.bin.tokenize_text", "--token_type", "char", "--input", kaldi / "train" / "text",
         "--output", tokens, "--field", "2-", "--cleaner", "none", "--g2p", "none", "--write_vocabulary", "true",
         "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1", "--add_symbol", "<sos/eos>:-1"],
        logs / "tokens.log", env)
    common_args = ["--use_preprocessor", "true", "--bpemodel", "none", "--token_type", "char", "--token_list", tokens,
                   "--non_linguistic_symbols", "none", "--cleaner", "none", "--g2p", "none", "--ngpu", "0",
                   "--config", conf,
                   "--train_data_path_and_name_and_type", f"{kaldi}/train/wav.scp,speech,sound",
                   "--train_data_path_and_name_and_type", f"{kaldi}/train/text,text,text",
                   "--valid_data_path_and_name_and_type", f"{kaldi}/dev/wav.scp,speech,sound",
                   "--valid_data_path_and_name_and_type", f"{kaldi}/dev/text,text,text"]
    # the mean/variance of the features for global_mvn, and the shape files that sorted batching needs
    steps["collect_stats"] = run_measured(
        [py, "-m", "espnet2.bin.asr_train", "--collect_stats", "true", *common_args,
         "--train_shape_file", kaldi / "train" / "wav.scp", "--valid_shape_file", kaldi / "dev" / "wav.scp",
         "--output_dir", stats / "stats.1"], logs / "collect_stats.log", env)
    run_measured([py, "-m", "espnet2.bin.aggregate_stats_dirs", "--input_dir", stats / "stats.1", "--output_dir",
                  stats], logs / "aggregate_stats.log", env)
    n_tokens = len(tokens.read_text(encoding="utf-8").splitlines())
    for s in ("train", "valid"):  # asr.sh's text_shape.<token_type>: each line gets the vocabulary size appended
        lines = (stats / s / "text_shape").read_text(encoding="utf-8").splitlines()
        (stats / s / "text_shape.char").write_text("".join(f"{line},{n_tokens}\n" for line in lines), encoding="utf-8")

    print(f"espnet: training {epochs} epochs (log {logs / 'train.log'}) ...", flush=True)
    before = machine_state()
    train = run_measured(
        [py, "-m", "espnet2.bin.asr_train", *common_args,
         "--normalize", "global_mvn", "--normalize_conf", f"stats_file={stats}/train/feats_stats.npz",
         *[a for s in ("train", "valid") for a in (f"--{s}_shape_file", stats / s / "speech_shape",
                                                   f"--{s}_shape_file", stats / s / "text_shape.char")],
         "--max_epoch", str(epochs), "--resume", "false", "--output_dir", exp], logs / "train.log", env)
    train.update(loadavg_before=before["loadavg"], loadavg_after=[round(x, 2) for x in os.getloadavg()],
                 busy_before=before["busy_processes"])
    per_epoch = parse_espnet_log((logs / "train.log").read_text(encoding="utf-8", errors="replace"))

    # the dev-selected checkpoint (valid cer_ctc, as xlingual selects by dev CER), the last epoch, and ESPnet's
    # recipe default: the average of the best 5 epochs' weights
    # recipe default: the average of the best (up to) 5 epochs' weights. They are symlinks, often to one file
    # (best = last, or a single epoch): each distinct file is decoded once
    links = {"best": "valid.cer_ctc.best.pth", "last": "latest.pth", "average": "valid.cer_ctc.ave.pth"}
    files = {k: (exp / v).resolve() for k, v in links.items() if (exp / v).exists()}
    print(f"espnet: greedy decoding of test with {', '.join(sorted({f.name for f in files.values()}))} ...",
          flush=True)
    steps["decode"] = run_measured([py, ASSETS / "espnet_greedy.py", "--config", exp / "config.yaml", "--wav-scp",
                                    kaldi / "test" / "wav.scp", "--out", work / "decode",
                                    *sorted(set(files.values()))], logs / "decode.log", env)
    info = json.loads((work / "decode" / "info.json").read_text())
    test = {k: {**score(refs, read_text(work / "decode" / f"{f.name}.txt", id_map)), "checkpoint": f.name}
            for k, f in files.items()}
    return {"train": train, "prep": steps, "per_epoch": per_epoch, "params": info["params"],
            "params_by_part": info["params_by_part"], "vocab_size": info["vocab_size"], "test": test,
            "epochs": len(per_epoch)}


# ---------------------------------------------------------------------------------------------------------------
# xlingual


def run_xlingual(manifests: Path, language: str, work: Path, refs: dict[str, str], epochs: int, threads: int,
                 env: dict, ranks: int = 1, extra_sets: list[str] = ()) -> dict:
    """xlingual's recipe on the same manifests: stages 0-1 (check, features, training; measured), then stage 2
    (decode dev and test with best.pt and last.pt); scored here like ESPnet.

    ranks > 1: stage 0 (features) in one process, then stage 1 under torchrun as `ranks` data-parallel processes of
    threads // ranks threads each (xlingual/distributed.py), each with batches of 1/ranks the single process's
    max_batch_seconds, so that one step's update is over the same amount of audio; measured as the two stages'
    summed wall and CPU time, and the larger peak RSS of any one process (the ranks together hold about `ranks`
    times that)."""
    from xlingual.checkpoint import load_model

    run = work / "run"
    args = ["recipe", ASSETS / "xlingual.yaml", "--set", f"language={language}", "--set", f"corpus.dir={manifests}",
            "--set", f"out_dir={run}", "--set", f"train.epochs={epochs}", "--set", "decode_last=true",
            *[a for x in extra_sets for a in ("--set", x)]]
    cmd = [sys.executable, "-m", "xlingual.cli", *args, "--set", f"train.threads={threads}"]
    print(f"xlingual ({ranks} process{'es' if ranks > 1 else ''}): features and training {epochs} epochs (log "
          f"{work / 'logs' / 'train.log'}) ...", flush=True)
    before = machine_state()
    if ranks == 1:
        train = run_measured([*cmd, "--stage", "0", "--stop-stage", "1"],
                             work / "logs" / "train.log", env, common.REPO)
    else:
        per_rank = max(threads // ranks, 1)
        rank_env = {**env, **child_env(per_rank)[1]}
        batch = yaml.safe_load((ASSETS / "xlingual.yaml").read_text())["train"]["max_batch_seconds"] / ranks
        prep = run_measured([*cmd, "--stage", "0", "--stop-stage", "0"], work / "logs" / "features.log", env,
                            common.REPO)
        # the run's config as trained (decoding below must name the same run, or it is another run)
        cmd = [sys.executable, "-m", "xlingual.cli", *args, "--set", f"train.threads={per_rank}", "--set",
               f"train.max_batch_seconds={batch:g}"]
        ddp = run_measured([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                            str(ranks), *cmd[1:], "--stage", "1", "--stop-stage", "1"],
                           work / "logs" / "train.log", rank_env, common.REPO)
        train = {"wall_s": prep["wall_s"] + ddp["wall_s"], "cpu_s": prep["cpu_s"] + ddp["cpu_s"],
                 "peak_rss_mb": max(prep["peak_rss_mb"], ddp["peak_rss_mb"]), "ranks": ranks,
                 "threads_per_rank": per_rank, "max_batch_seconds_per_rank": batch, "features_wall_s": prep["wall_s"]}
    train.update(loadavg_before=before["loadavg"], loadavg_after=[round(x, 2) for x in os.getloadavg()],
                 busy_before=before["busy_processes"])
    print("xlingual: greedy decoding of dev and test with best.pt and last.pt ...", flush=True)
    decode = run_measured([*cmd, "--stage", "2"], work / "logs" / "decode.log", env, common.REPO)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    done = json.loads((run / "done.json").read_text())
    per_epoch = [{"epoch": r["epoch"], "train_seconds": r["epoch_seconds"], "train_loss": r["train_loss"],
                  "dev_loss": r.get("dev_loss"), "dev_cer": r.get("dev_cer"), "dev_wer": r.get("dev_wer")} for r in log]
    test = {"best": {**score(refs, read_text(run / "decode_test" / "hyp.txt")), "checkpoint": "best.pt",
                     "epoch": done.get("best_epoch")},
            "last": {**score(refs, read_text(run / "decode_last_test" / "hyp.txt")), "checkpoint": "last.pt"}}
    model, _, _ = load_model(run / "best.pt", task="asr")
    # xlingual scores against its normalised references; they should be the manifests' texts themselves
    own_refs = read_text(run / "decode_test" / "ref.txt")
    return {"train": train, "prep": {"decode": decode}, "per_epoch": per_epoch, "epochs": len(per_epoch),
            "params": sum(p.numel() for p in model.parameters()), "train_loop_seconds": done.get("seconds"),
            "test": test, "own_refs_match": all(own_refs.get(k) == v for k, v in refs.items())}


# ---------------------------------------------------------------------------------------------------------------
# The comparison


def throughput(r: dict, train_audio_s: float) -> float:
    """Training audio seconds per wall second: train audio x epochs run / training process wall time."""
    return train_audio_s * r["epochs"] / r["train"]["wall_s"]


def compare(toolkits: dict[str, dict], train_audio_s: float, threads: int) -> dict:
    """Derived figures per toolkit, and the xlingual / ESPnet ratios when both ran."""
    per = {}
    for name, r in toolkits.items():
        t = r["train"]
        per[name] = {"train_wall_s": t["wall_s"], "audio_sec_per_sec": throughput(r, train_audio_s),
                     "peak_rss_mb": t["peak_rss_mb"], "cpu_share": t["cpu_s"] / max(t["wall_s"] * threads, 1e-9),
                     "params": r["params"], "test_cer": r["test"]["best"]["cer"], "test_wer": r["test"]["best"]["wer"]}
    out = {"per_toolkit": per}
    for name in [n for n in per if n.startswith("xlingual")] if "espnet" in per else []:
        x, e = per[name], per["espnet"]
        out[ratio_key(name)] = {
            "throughput": x["audio_sec_per_sec"] / e["audio_sec_per_sec"],
            "train_wall": x["train_wall_s"] / e["train_wall_s"], "peak_rss": x["peak_rss_mb"] / e["peak_rss_mb"],
            "params": x["params"] / e["params"], "test_cer": x["test_cer"] / e["test_cer"] if e["test_cer"] else None}
    if len(per) >= 2:
        out["equal_time"] = equal_time({k: toolkits[k]["per_epoch"] for k in per})
    return out


def ratio_key(toolkit: str) -> str:
    """The comparison's key of a toolkit's ratios to ESPnet ("xlingual_over_espnet", "xlingual_ddp_over_espnet")."""
    return f"{toolkit.replace('-', '_')}_over_espnet"


def equal_time(per_epoch: dict[str, list[dict]]) -> dict | None:
    """Dev CER at equal training time: T = the shorter of the toolkits' total training-phase times; for each
    toolkit, the epoch whose cumulative training-phase seconds are closest to T, and its dev CER.

    Training phases only (ESPnet's [train] time, xlingual's epoch_seconds): both exclude the per-epoch dev pass.
    Dev CER is each toolkit's own per-epoch measure (ESPnet's cer_ctc leaves spaces out, xlingual's counts them),
    so the comparison is indicative; the test figures are scored alike.
    """
    curves = {}
    for name, epochs in per_epoch.items():
        total, points = 0.0, []
        for e in epochs:
            total += e["train_seconds"]
            points.append((total, e["epoch"], e.get("dev_cer")))
        if not points:
            return None
        curves[name] = points
    budget = min(points[-1][0] for points in curves.values())
    out = {"seconds": budget}
    for name, points in curves.items():
        cum, epoch, cer = min(points, key=lambda p: (abs(p[0] - budget), p[0]))
        out[name] = {"epoch": epoch, "cumulative_train_seconds": cum, "dev_cer": cer,
                     "final_dev_cer": points[-1][2], "epochs": len(points)}
    return out


def markdown(res: dict) -> str:
    s, cmp = res["setup"], res["comparison"]
    env = ", ".join(f"{k}={v}" for k, v in s["child_env"].items())
    text = (f"Language {s['language']}: {s['train_hours_actual']:.3f} h train ({s['utterances']['train']} utts), "
            f"{s['dev_hours_actual']:.3f} h dev, {s['test_hours_actual']:.3f} h test ({s['utterances']['test']} "
            f"utts) of the embedded synthetic corpus (audio in {s['audio_dir']}); epochs: {s['epochs']}; "
            f"{s['threads']} threads for both ({env}); one toolkit after the other "
            f"({' then '.join(res['toolkits'])}). Both models: conformer 128d x 4 blocks, 4 heads, FFN 512, kernel 31, "
            f"conv2d stem 128 channels, 80 mels, CTC over characters; greedy decoding; one scorer (jiwer) on the "
            f"same reference texts.\n\n")
    names = [n for n in TOOLKITS if n in res["toolkits"]]
    rows = []
    for n in names:
        r, p = res["toolkits"][n], cmp["per_toolkit"][n]
        best, last = r["test"]["best"], r["test"]["last"]
        rows.append([n, f"{p['params'] / 1e6:.3f}M", r["epochs"], p["train_wall_s"], p["audio_sec_per_sec"],
                     p["peak_rss_mb"], p["cpu_share"], best["cer"], best["wer"], last["cer"], last["wer"],
                     f"{r['train']['loadavg_before'][0]} / {r['train']['loadavg_after'][0]}"])
    text += common.md_table(["toolkit", "params", "epochs", "training wall s", "train audio-s/s", "peak RSS MiB",
                             "CPU share", "test CER % (dev-selected)", "test WER %", "test CER % (last epoch)",
                             "test WER % (last)", "load avg before / after training"], rows)
    for n in names[1:] if names and names[0] == "espnet" else []:
        ratio = cmp[ratio_key(n)]
        text += (f"\n**{n} / ESPnet: throughput x{ratio['throughput']:.2f}** (training wall time "
                 f"x{ratio['train_wall']:.2f}), peak RSS x{ratio['peak_rss']:.2f}, parameters x{ratio['params']:.3f}, "
                 f"test CER x{common.fmt(ratio['test_cer'])}.\n")
    d = res["toolkits"].get("xlingual-ddp")
    if d:
        t = d["train"]
        text += (f"\nxlingual-ddp: the same recipe, its features made in one process ({t['features_wall_s']:.0f} s, "
                 f"counted in its training wall time), then trained by {t['ranks']} data-parallel processes "
                 f"(torchrun, gloo) of {t['threads_per_rank']} thread(s) each, with batches of <= "
                 f"{t['max_batch_seconds_per_rank']:g} s per process (one update over the same audio as the single "
                 f"process's); its peak RSS is the largest one process's (the ranks together hold about "
                 f"{t['ranks']}x that).\n")
    notes = []
    e, x = res["toolkits"].get("espnet"), res["toolkits"].get("xlingual")
    if e:
        prep, avg = e["prep"], e["test"].get("average")
        notes.append(f"ESPnet also ran, outside its training wall time: the token list "
                     f"{prep['tokens']['wall_s']:.0f} s and the feature-statistics pass "
                     f"{prep['collect_stats']['wall_s']:.0f} s (both before training), greedy decoding "
                     f"{prep['decode']['wall_s']:.0f} s. ESPnet's recipe model (the average of its best (up to) 5 "
                     f"epochs' weights): "
                     + (f"test CER {avg['cer']:.2f}%, WER {avg['wer']:.2f}%." if avg else "not written."))
    if x:
        notes.append(f"xlingual's training wall time includes its feature caching (ESPnet computes features inside "
                     f"every epoch); its training loop with the dev passes took {common.fmt(x['train_loop_seconds'])} "
                     f"s of it. xlingual's own references equal the shared ones: {x['own_refs_match']}.")
    text += "\n" + " ".join(notes) + "\n"
    eq = cmp.get("equal_time")
    if eq:
        text += (f"\n### Dev CER at equal training time\n\nAt {eq['seconds']:.0f} s of training phases (the shorter "
                 f"toolkit's total; per-epoch dev passes excluded), each toolkit's epoch closest to it:\n\n")
        text += common.md_table(["toolkit", "epoch", "cumulative training s", "dev CER % there",
                                 "final dev CER % (epochs)"],
                                [[n, eq[n]["epoch"], eq[n]["cumulative_train_seconds"], eq[n]["dev_cer"],
                                  f"{common.fmt(eq[n]['final_dev_cer'])} ({eq[n]['epochs']})"] for n in names])
        text += ("\nDev CER here is each toolkit's own per-epoch figure: ESPnet's cer_ctc leaves spaces out, "
                 "xlingual's counts them, so this table is indicative; the test figures above are scored alike.\n")
    inst = res.get("install")
    if inst:
        text += (f"\nESPnet venv: {inst['venv']}, {'reused' if inst['reused'] else 'installed by this run'}; its "
                 f"install took {inst['install_wall_s']:.0f} s without pip's cache ({inst.get('venv_mb')} MB; "
                 f"{', '.join(f'{k} {v}' for k, v in inst['versions'].items())}). Work-arounds: "
                 f"{'; '.join(inst['workarounds']) or 'none'}.\n")
    busy = [(n, p) for n in names for p in res["toolkits"][n]["train"].get("busy_before", [])]
    text += "\nWhat else ran (CPU share over 1 s, sampled just before each training): "
    text += ("; ".join(f"before {n}: pid {p['pid']} {p['cpu_percent']}% `{p['cmd'][:60]}`" for n, p in busy)
             if busy else "nothing above 5% of a core") + ".\n"
    return text


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK['hours']} h train, {QUICK['epochs']} "
                                                        f"epoch (results to exp/bench/quick)")
    p.add_argument("--language", default=FULL["language"])
    p.add_argument("--hours", type=float, default=None, help=f"training audio (default {FULL['hours']})")
    p.add_argument("--dev-hours", type=float, default=None, help=f"dev audio (default {FULL['dev_hours']})")
    p.add_argument("--test-hours", type=float, default=None, help=f"test audio (default {FULL['test_hours']})")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs of both (default {FULL['epochs']})")
    p.add_argument("--threads", type=int, default=0, help="threads of both toolkits (0: all cores)")
    p.add_argument("--toolkits", nargs="+", default=list(TOOLKITS), choices=TOOLKITS,
                   help="which to run, in this order (default: espnet, xlingual, xlingual-ddp, then xlingual-bf16)")
    p.add_argument("--venv", default=None, help="the ESPnet venv: built there once, then reused "
                                                "(default exp/bench/espnet_venv)")
    p.add_argument("--torch-spec", default=TORCH_SPEC, help="the torch requirement the ESPnet venv installs (a CPU "
                                                            "build that pip can find)")
    p.add_argument("--corpus", default=None, help="folder of <lang>/<split>.jsonl (default: data/synthetic if big "
                                                  "enough, else generated under exp/bench)")
    p.add_argument("--out", default=None, help="results folder (default results/bench at full size, else "
                                               "exp/bench/quick)")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for k in ("hours", "dev_hours", "test_hours", "epochs"):
        if getattr(args, k) is None:
            setattr(args, k, sizes[k])
    # only a run at the default size may replace the committed results
    args.full_size = not args.quick and all(getattr(args, k) == FULL[k] for k in FULL)
    args.threads = args.threads or os.cpu_count() or 1
    args.venv = Path(args.venv) if args.venv else common.WORK_DIR / "espnet_venv"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    head = common.header("bench.peer_espnet", argv)
    head["busy_processes_at_start"] = busy_processes()
    work = common.WORK_DIR / ("peer_espnet" if args.full_size else "peer_espnet_small")
    env, env_set = child_env(args.threads)
    results: dict = {"toolkits": {}}
    if "espnet" in args.toolkits:
        results["install"] = ensure_venv(args.venv, torch_spec=args.torch_spec)

    data = select_data(args.language, {"train": args.hours, "dev": args.dev_hours, "test": args.test_hours},
                       args.corpus)
    if work.exists():  # every run measures from scratch: no feature cache, checkpoint or stats of an earlier one
        shutil.rmtree(work)
    manifests = write_manifests(data, work / "manifests", args.language)
    kaldi = {split: write_kaldi(utts, work / "kaldi" / split) for split, utts in data.items()}
    refs = {u.id: " ".join(u.text.split()) for u in data["test"]}
    train_audio = sum(u.duration for u in data["train"])
    results["setup"] = {
        "language": args.language, "hours": args.hours, "dev_hours": args.dev_hours, "test_hours": args.test_hours,
        "train_hours_actual": train_audio / 3600, "dev_hours_actual": sum(u.duration for u in data["dev"]) / 3600,
        "test_hours_actual": sum(u.duration for u in data["test"]) / 3600,
        "utterances": {s: len(u) for s, u in data.items()}, "epochs": args.epochs, "threads": args.threads,
        "child_env": env_set, "audio_dir": str(Path(data["train"][0].audio).parent), "work_dir": str(work),
        "full_size": args.full_size}
    print(f"data: {train_audio / 3600:.3f} h train, {len(data['dev'])} dev and {len(data['test'])} test utterances "
          f"of {args.language}; work dir {work}", flush=True)

    for name in args.toolkits:
        if name == "espnet":
            r = run_espnet(args.venv, work / "kaldi", work / "espnet", refs,
                           {k: v for d in kaldi.values() for k, v in d["id_map"].items()}, args.epochs, env)
        else:
            r = run_xlingual(manifests, args.language, work / name, refs, args.epochs, args.threads, env,
                             ranks=args.threads if name == "xlingual-ddp" else 1, extra_sets=EXTRA_SETS.get(name, []))
        results["toolkits"][name] = r
        print(f"{name}: {r['train']['wall_s']:.0f} s training, {throughput(r, train_audio):.1f} audio-s/s, peak RSS "
              f"{r['train']['peak_rss_mb']:.0f} MiB, {r['params']:,} params, test CER {r['test']['best']['cer']:.2f}% "
              f"WER {r['test']['best']['wer']:.2f}%", flush=True)
    results["comparison"] = compare(results["toolkits"], train_audio, args.threads)
    for name in args.toolkits:
        ratio = results["comparison"].get(ratio_key(name))
        if ratio:
            print(f"{name} / ESPnet throughput: x{ratio['throughput']:.2f}", flush=True)
    head["busy_processes_at_end"] = busy_processes()
    common.write_results(NAME, head, results, markdown(results), common.results_dir(args.out, not args.full_size),
                         title="Side by side with ESPnet2: the same Conformer-CTC, the same data")
    return results


if __name__ == "__main__":
    main()
