"""`xlingual <verb>`: thin argument parsing over the Python API."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .cores import configure_openmp
from .rank_exit import leave
from .cli_rank import add_lid_parsers


def _recipe(args) -> None:
    from .config import RecipeConfig, load_config
    from .distributed import launched, rank
    from .recipe import run_recipe

    cfg = load_config(RecipeConfig, args.config, args.set)
    stop = args.stop_stage
    if launched() and rank() != 0:  # under torchrun every rank trains; rank 0 alone decodes and scores
        stop = min(stop, 1)
    results = run_recipe(cfg, args.stage, stop, resume=args.resume)
    if results:
        print(json.dumps(results, indent=2, ensure_ascii=False))


def _prepare_synthetic(args) -> None:
    from data_prep.synthetic import prepare_synthetic

    paths = prepare_synthetic(args.out, languages=tuple(args.languages), seed=args.seed,
                              hours={"train": args.train_hours, "dev": args.dev_hours, "test": args.test_hours},
                              noise_snr=args.noise_snr, telephone=args.telephone, jobs=args.jobs,
                              exclude_shared=tuple(args.exclude_shared))
    print(json.dumps({k: {s: str(p) for s, p in v.items()} for k, v in paths.items()}, indent=2))


def _prepare_corpus(args) -> None:
    """Kaldi data dirs, FLEURS, Common Voice and plain audio folders -> <out>/<split>.jsonl."""
    if args.corpus == "kaldi":
        from data_prep.kaldi import prepare_kaldi as prepare
    elif args.corpus == "fleurs":
        from data_prep.fleurs import prepare_fleurs as prepare
    elif args.corpus == "commonvoice":
        from data_prep.commonvoice import prepare_commonvoice as prepare
    else:
        from data_prep.audiodir import prepare_audiodir

        paths = prepare_audiodir(args.source, args.out, args.language, strict=args.strict)
        print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
        return
    kwargs = {"strict": args.strict}
    if getattr(args, "root", None):
        kwargs["root"] = args.root
    if getattr(args, "no_pipes", False):
        kwargs["allow_pipes"] = False
    if args.splits:
        kwargs["splits"] = tuple(args.splits)
    paths = prepare(args.source, args.out, args.language, **kwargs)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


def _decode(args) -> None:
    from .asr import decode_and_score
    from .checkpoint import load_checkpoint, load_model
    from .config import DecodeConfig, FeatureConfig, from_dict
    from .corpus import read_manifest
    from .features import cache_for_manifest, compute_features

    # the checkpoint first: a refused file (foreign, unsafe, diverged) is the error to report, whatever the manifest
    ssl_model = (load_checkpoint(args.checkpoint).get("meta") or {}).get("model") == "ssl"  # an adapted SSL encoder
    if ssl_model:
        from .ssl import load_ssl_model, model_store

        model, tok, meta = load_ssl_model(args.checkpoint)
    else:
        model, tok, meta = load_model(args.checkpoint, task="asr")
    utts = read_manifest(args.manifest)
    if ssl_model:
        store = model_store(model, meta, utts, cache_for_manifest(args.manifest).parent)
    else:
        feats = from_dict(FeatureConfig, meta["features"])
        store = compute_features(utts, cache_for_manifest(args.manifest), feats)  # the corpus's cache, as the recipe's
    summary = decode_and_score(model, tok, store, utts, args.out,
                               DecodeConfig(method=args.method, beam_size=args.beam_size), progress=True)
    print(json.dumps(summary, indent=2))


def _adapt(args) -> None:
    from .config import AdaptRecipeConfig, load_config
    from .recipe import run_adapt

    sets = list(args.set) + [f"language={args.language}"] + ([f"out_dir={args.out}"] if args.out else [])
    cfg = load_config(AdaptRecipeConfig, args.config, sets)
    print(json.dumps(run_adapt(cfg, args.source_checkpoint), indent=2, ensure_ascii=False))


def _ssl_save(args) -> None:
    from .ssl_encoder import read_encoder, save_pretrained

    norm = {"auto": None, "yes": True, "no": False}[args.normalize_waveform]
    try:
        enc = read_encoder(save_pretrained(args.source, args.out, norm))
    except ImportError as e:  # transformers, optional, is missing: a message, not a traceback
        raise RuntimeError(str(e)) from None
    print(json.dumps({"out": str(enc.path), "name": enc.name, "builder": enc.builder, "layers": enc.n_layers,
                      "width": enc.d_model, "normalize_waveform": enc.normalize_waveform}, indent=2))


def _matrix(args) -> None:
    from .config import MatrixConfig, load_config
    from .matrix import matrix_status, run_matrix

    cfg = load_config(MatrixConfig, args.config, args.set)
    if args.dry_run:
        for name, status, why in matrix_status(cfg, args.reuse_stale_code):
            print(f"{status:8s} {name}" + (f"  ({why})" if why else ""))
        return
    slurm = None
    if args.executor == "slurm":
        from .cluster import SlurmOptions

        bad = [kv for kv in args.slurm_param if "=" not in kv]
        if bad:
            raise ValueError(f"--slurm-param {bad[0]!r}: expected KEY=VALUE, e.g. account=myproj")
        extra = dict(kv.split("=", 1) for kv in args.slurm_param)
        slurm = SlurmOptions(partition=args.slurm_partition, gpus_per_node=args.slurm_gpus_per_node,
                             cpus_per_task=args.slurm_cpus_per_task, mem_gb=args.slurm_mem_gb,
                             timeout_min=args.slurm_time_min, additional=extra)
    summary = run_matrix(cfg, jobs=args.jobs, executor=args.executor, slurm=slurm, reuse_code=args.reuse_stale_code)
    print(f"{len(summary['ran'])} runs ran, {len(summary['skipped'])} up to date, "
          f"{summary['wall_seconds']:.0f} s; report: {summary['report']}")


def _report(args) -> None:
    from .report import write_report

    print(write_report(args.matrix_dir))


def _add_transfer_parsers(sub) -> None:
    """`xlingual adapt`, `xlingual matrix`, `xlingual report`."""
    a = sub.add_parser("adapt", help="adapt a source checkpoint to a target language, decode and score")
    a.add_argument("source_checkpoint", help="best.pt of a pre-trained model (recipe or matrix source), or a "
                   "self-supervised encoder file (`xlingual ssl-save`)")
    a.add_argument("--language", required=True, help="the target language code")
    a.add_argument("--config", help="YAML delta over xlingual.config.AdaptRecipeConfig")
    a.add_argument("--out", help="output folder (default: the config's out_dir)")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. adapt.mode=chain_thaw or adapt.train.epochs=5")
    a.set_defaults(func=_adapt)

    s = sub.add_parser("ssl-save", help="write a self-supervised encoder (torchaudio bundle or Hugging Face "
                       "checkpoint) to a local file that `xlingual adapt` takes as a source")
    s.add_argument("source", help="a torchaudio.pipelines bundle name (WAV2VEC2_XLSR_300M, WAV2VEC2_XLSR53, "
                   "HUBERT_BASE, WAVLM_BASE, ...; downloaded by torchaudio), or a Hugging Face model name or folder "
                   "(needs `pip install transformers`)")
    s.add_argument("out", help="the encoder file to write, e.g. xlsr300m.pt")
    s.add_argument("--normalize-waveform", choices=["auto", "yes", "no"], default="auto",
                   help="normalize each utterance's waveform before the encoder; auto = as the checkpoint was "
                   "pre-trained (the bundle's setting, or the Hugging Face feature extractor's do_normalize)")
    s.set_defaults(func=_ssl_save)

    m = sub.add_parser("matrix", help="pre-train x adapt WER matrix: cached, resumable, parallel runs + report")
    m.add_argument("config", help="YAML delta over xlingual.config.MatrixConfig")
    m.add_argument("--jobs", type=int, default=1, help="runs at a time, each a process with its own log.txt")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. seeds=[0,1]")
    m.add_argument("--dry-run", action="store_true", help="list every run and its status (done/stale/partial/new) "
                   "and why it is stale")
    m.add_argument("--reuse-stale-code", action="store_true", help="keep results that an earlier code version made "
                   "(same configuration); the report lists them. Default: a code change re-runs what it reaches")
    m.add_argument("--executor", choices=["local", "slurm"], default="local",
                   help="local: processes on this machine; slurm: one SLURM job per run (submitit), --jobs at once")
    m.add_argument("--slurm-partition", help="SLURM partition (default: the cluster's)")
    m.add_argument("--slurm-gpus-per-node", type=int, default=1, help="GPUs per job (a run uses one)")
    m.add_argument("--slurm-cpus-per-task", type=int, default=8, help="CPU cores per job (its torch threads)")
    m.add_argument("--slurm-mem-gb", type=int, help="memory per job in GB (default: the partition's)")
    m.add_argument("--slurm-time-min", type=int, default=24 * 60, help="time limit per job; at the limit the job "
                   "is requeued and the run resumes from its last checkpoint")
    m.add_argument("--slurm-param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=myproj, qos=high, constraint=h100")
    m.set_defaults(func=_matrix)

    r = sub.add_parser("report", help="regenerate a matrix's tables and figures from its results")
    r.add_argument("matrix_dir", help="the matrix's out_dir")
    r.set_defaults(func=_report)


def _demo(args) -> None:
    from .demo import run_demo

    summary = run_demo(args.out, scale=args.scale, jobs=args.jobs, loo=args.loo)
    report = open(summary["report"], encoding="utf-8").read()
    # the tables as text; figures stay in the report folder
    print("\n".join(line for line in report.splitlines() if not line.startswith("![")))
    print(f"\nreport: {summary['report']}  (wall {summary['wall_seconds'] / 60:.1f} min, "
          f"peak memory {summary['peak_memory_gb']:.2f} GB)")


def _selection(args) -> None:
    from .config import MatrixConfig, load_config
    from .selection import run_selection_experiment

    cfg = load_config(MatrixConfig, args.config, args.set)
    result = run_selection_experiment(args.lid, args.target, args.pool, args.hours, cfg, args.out)
    print(json.dumps(result["rows"], indent=2, ensure_ascii=False))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlingual", description="Cross-lingual transfer for low-resource ASR.")
    p.add_argument("--version", action="version", version=f"xlingual {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    dm = sub.add_parser("demo", help="the reference experiment end to end at laptop scale (5 minutes on a "
                        "2-core AMD EPYC VM, 12 on an older 2-core Xeon one; results/demo)")
    dm.add_argument("--out", default="xlingual_demo", help="output folder (re-running reuses finished work)")
    dm.add_argument("--scale", type=float, default=1.0, help="multiply every amount of audio (bigger runs)")
    dm.add_argument("--jobs", type=int, default=2, help="runs in parallel (one process each)")
    dm.add_argument("--loo", action="store_true", help="also train one leave-one-out LID per language and evaluate "
                    "the ranking with them (about 3 more minutes; at the demo's 3 minutes of speech per language "
                    "some of them do not learn: the 13-language benchmark measures that setting)")
    dm.add_argument("--no-loo", dest="loo", action="store_false", help=argparse.SUPPRESS)  # the old default's flag
    dm.set_defaults(func=_demo)

    se = sub.add_parser("select-eval", help="LID data selection: pre-train on LID-selected pool speech vs a random "
                        "pool sample vs the best single source, adapt to the target, compare WER")
    se.add_argument("config", help="matrix YAML: corpus, model, train (pre-training), adapt, target_hours")
    se.add_argument("--lid", required=True, help="LID checkpoint (xlingual lid train)")
    se.add_argument("--target", required=True, help="target language")
    se.add_argument("--pool", nargs="+", required=True, help="pool languages (the target is left out)")
    se.add_argument("--hours", type=float, required=True, help="pre-training audio of every condition")
    se.add_argument("--out", required=True)
    se.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    se.set_defaults(func=_selection)

    r = sub.add_parser("recipe", help="one language end to end: prepare, train from scratch, decode, score")
    r.add_argument("config", nargs="?", help="YAML delta over xlingual.config.RecipeConfig")
    r.add_argument("--stage", type=int, default=0, help="first stage (0 prepare, 1 train, 2 score)")
    r.add_argument("--stop-stage", type=int, default=2, help="last stage")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=5")
    r.add_argument("--resume", action="store_true", help="continue a training run that was interrupted (killed)")
    r.set_defaults(func=_recipe)

    prep = sub.add_parser("prepare", help="prepare a corpus into manifests")
    psub = prep.add_subparsers(dest="corpus", required=True)
    s = psub.add_parser("synthetic", help="generate the embedded multilingual corpus with eSpeak NG")
    s.add_argument("--out", default="data/synthetic")
    s.add_argument("--languages", nargs="+", default=["bn", "as", "th", "tr"])
    s.add_argument("--train-hours", type=float, default=0.5)
    s.add_argument("--dev-hours", type=float, default=0.05)
    s.add_argument("--test-hours", type=float, default=0.05)
    s.add_argument("--noise-snr", type=float, default=None)
    s.add_argument("--telephone", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--exclude-shared", nargs="+", default=[], metavar="LANG",
                   help="remove every word form that two or more of these languages share from every vocabulary "
                        "(the control corpus; corpus.exclude_shared in a config)")
    s.set_defaults(func=_prepare_synthetic)

    for name, what in (("kaldi", "a Kaldi/Babel data folder holding one sub-folder per split (wav.scp, text, ...)"),
                       ("fleurs", "FLEURS: a raw data/<config> folder, or a config name such as bn_in (downloads)"),
                       ("commonvoice", "a Common Voice language folder (<split>.tsv + clips/)"),
                       ("audiodir", "a folder of audio files (transcripts optional), e.g. for `xlingual rank`")):
        c = psub.add_parser(name, help=what)
        c.add_argument("source", help=what)
        c.add_argument("--out", required=True, help="output folder for <split>.jsonl manifests")
        c.add_argument("--language", required=True, help="language code, e.g. bn")
        if name != "audiodir":
            c.add_argument("--splits", nargs="+", help="splits to prepare (default: all found)")
        if name == "kaldi":
            c.add_argument("--root", help="the Kaldi recipe folder that relative wav.scp paths and commands are "
                           "relative to (default: the current folder)")
            c.add_argument("--no-pipes", action="store_true", help="do not run wav.scp commands ('... |'): they "
                           "run through the shell, so an untrusted data folder is code; such utterances are "
                           "skipped and counted (an error with --strict)")
        c.add_argument("--strict", action="store_true", help="stop at the first bad utterance instead of "
                       "skipping and counting it")
        c.set_defaults(func=_prepare_corpus)

    d = sub.add_parser("decode", help="decode and score a manifest with a checkpoint")
    d.add_argument("checkpoint")
    d.add_argument("manifest")
    d.add_argument("--out", required=True)
    d.add_argument("--method", choices=["greedy", "beam"], default="greedy")
    d.add_argument("--beam-size", type=int, default=16)
    d.set_defaults(func=_decode)
    add_lid_parsers(sub)
    _add_transfer_parsers(sub)
    return p


def _check_output_paths(args) -> None:
    """Refuse an --out or --cache-dir that a file stands in the way of, naming it, before any work is done (mkdir
    deep inside would say only "File exists" or "Not a directory")."""
    from pathlib import Path

    from .fileio import not_a_folder

    for attr, flag in (("out", "--out"), ("cache_dir", "--cache-dir")):
        path = getattr(args, attr, None)
        if not path:
            continue
        # `lid select --out` names the output manifest (a file): its folder is what must be a folder
        folder = Path(path).parent if getattr(args, "lid_verb", None) == "select" and attr == "out" else Path(path)
        why = not_a_folder(folder)
        if why:
            raise NotADirectoryError(f"{flag} {path}: {why}")


def main(argv: list[str] | None = None) -> int:
    configure_openmp()  # before anything loads torch: wait passively when other processes keep the cores busy
    args = build_parser().parse_args(argv)
    try:
        _check_output_paths(args)
        args.func(args)
        code = 0
    except (ValueError, OSError, RuntimeError, KeyError) as e:
        # our errors carry file/line/utterance and the fix: show them without a traceback. OSError: a write
        # that failed (fileio.WriteError names the file: disk full, no permission) or an unreadable input file
        print(f"xlingual {args.verb}: error: {e}", file=sys.stderr)
        code = 2
    leave(code)  # a rank under torchrun ends here, past a gloo exit race (rank_exit.py)
    return code


if __name__ == "__main__":
    sys.exit(main())
