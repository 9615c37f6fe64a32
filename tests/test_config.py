import json
from pathlib import Path

import pytest
import yaml

from xlingual.config import (AdaptConfig, AdaptRecipeConfig, ConfigError, FeatureConfig, LIDConfig, MatrixConfig,
                             PhonotacticConfig, RecipeConfig, from_dict, load_config, parse_override, to_dict)

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_yaml_delta(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("language: tr\ntrain:\n  epochs: 3\n  lr: 1\nmodel: {preset: small}\n")
    cfg = load_config(RecipeConfig, p, ["train.seed=7", "corpus.noise_snr=10"])
    assert (cfg.language, cfg.train.epochs, cfg.train.lr, cfg.train.seed) == ("tr", 3, 1.0, 7)
    assert isinstance(cfg.train.lr, float)  # int -> float is lossless and allowed
    assert cfg.model.preset == "small" and cfg.corpus.noise_snr == 10.0
    assert cfg.features.n_mels == 80  # untouched defaults stay


@pytest.mark.parametrize("yaml_text, message", [
    ("langauge: bn\n", "unknown key(s) ['langauge']"),
    ("train: {epochs: many}\n", "train.epochs: expected int"),
    ("train: {epochs: true}\n", "train.epochs: expected int"),
    ("train: {betas: [0.9]}\n", "expected 2 items"),
    ("model: 3\n", "expected a mapping"),
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("train: {epochs: [1\n", "invalid YAML"),
])
def test_bad_config_names_file_and_key(tmp_path, yaml_text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(RecipeConfig, p)
    assert message in str(e.value)


@pytest.mark.parametrize("text, expected", [
    ("train.epochs=5", {"train": {"epochs": 5}}),
    ("corpus.noise_snr=null", {"corpus": {"noise_snr": None}}),
    ("language=as", {"language": "as"}),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("overrides, pools", [
    ([], {"pool": ["bn", "tr"]}),
    (["pools={}"], {}),  # clears: merging an empty mapping would silently keep the recipe's pools
    (["pools.extra=[th]"], {"pool": ["bn", "tr"], "extra": ["th"]}),  # a non-empty mapping still merges
    (["pools={}", "pools.extra=[th]"], {"extra": ["th"]}),
])
def test_mapping_overrides_merge_and_an_empty_one_clears(tmp_path, overrides, pools):
    p = tmp_path / "m.yaml"
    p.write_text("pools: {pool: [bn, tr]}\n")
    assert load_config(MatrixConfig, p, overrides).pools == pools


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("train.epochs")


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(RecipeConfig, "/nonexistent.yaml")


# ------------------------------------------------------------------- allowed ranges, checked when a config loads

# (config class, override, the key named, words of the allowed range)
OUT_OF_RANGE = [
    (RecipeConfig, "train.epochs=0", "train.epochs", ">= 1"),
    (RecipeConfig, "train.epochs=-3", "train.epochs", ">= 1"),
    (RecipeConfig, "train_hours=-1", "train_hours", "> 0"),
    (RecipeConfig, "train_hours=0", "train_hours", "> 0"),
    (RecipeConfig, "features.n_mels=0", "features.n_mels", ">= 1"),
    (RecipeConfig, "train.threads=-5", "train.threads", ">= 0"),
    (RecipeConfig, "train.device=tpu", "train.device", "'auto', 'cpu', 'cuda'"),
    (RecipeConfig, "train.lr=.inf", "train.lr", "finite number > 0"),
    (RecipeConfig, "train.lr=.nan", "train.lr", "finite number > 0"),
    (RecipeConfig, "train.lr=0", "train.lr", "> 0"),
    (RecipeConfig, "train.lr=-0.001", "train.lr", "> 0"),
    (RecipeConfig, "train.max_batch_seconds=0", "train.max_batch_seconds", "> 0"),
    (RecipeConfig, "train.warmup_steps=-1", "train.warmup_steps", ">= 0"),
    (RecipeConfig, "train.grad_clip=0", "train.grad_clip", "> 0"),
    (RecipeConfig, "train.patience=-1", "train.patience", ">= 0"),
    (RecipeConfig, "train.schedule=linear", "train.schedule", "'warmup_cosine'"),
    (RecipeConfig, "decode.method=viterbi", "decode.method", "'greedy', 'beam'"),
    (RecipeConfig, "decode.beam_size=0", "decode.beam_size", ">= 1"),
    (RecipeConfig, "decode.max_batch_seconds=-1", "decode.max_batch_seconds", "> 0"),
    (RecipeConfig, "units.kind=bpe", "units.kind", "'char', 'spm', 'ipa'"),
    (RecipeConfig, "model.preset=huge", "model.preset", "'tiny', 'small', 'base'"),
    (RecipeConfig, "train.eval_from=1", "train.eval_from", "[0, 1)"),
    (RecipeConfig, "model.dropout=1", "model.dropout", "[0, 1)"),
    (RecipeConfig, "model.dropout=-0.1", "model.dropout", "[0, 1)"),
    (RecipeConfig, "corpus.train_hours=0", "corpus.train_hours", "> 0"),
    (RecipeConfig, "corpus.dev_hours=-1", "corpus.dev_hours", "> 0"),
    (RecipeConfig, "corpus.test_hours=0", "corpus.test_hours", "> 0"),
    (RecipeConfig, "corpus.kind=folder", "corpus.kind", "'synthetic', 'manifests'"),
    (LIDConfig, "train_hours=0", "train_hours", "> 0"),
    (LIDConfig, "dev_hours=-0.5", "dev_hours", "> 0"),
    (LIDConfig, "crop_seconds=-1", "crop_seconds", ">= 0"),
    (LIDConfig, "embed_dim=-1", "embed_dim", ">= 0"),
    (LIDConfig, "frame_weight=-0.5", "frame_weight", ">= 0"),
    (LIDConfig, "select=dev_wer", "select", "'dev_acc'"),
    (MatrixConfig, "source_hours=0", "source_hours", "> 0"),
    (MatrixConfig, "target_hours=-0.1", "target_hours", "> 0"),
    (MatrixConfig, "small_source_hours=0", "small_source_hours", "> 0"),
    (MatrixConfig, "adapt.mode=everything", "adapt.mode", "'chain_thaw'"),
    (MatrixConfig, "adapt.train.epochs=0", "adapt.train.epochs", ">= 1"),
    (PhonotacticConfig, "hours=0", "hours", "> 0"),
    (PhonotacticConfig, "dev_hours=-1", "dev_hours", "> 0"),
    (PhonotacticConfig, "order=0", "order", ">= 1"),
    (AdaptRecipeConfig, "train_hours=0", "train_hours", "> 0"),
]


@pytest.mark.parametrize("cls, override, key, allowed", OUT_OF_RANGE, ids=[c[1] for c in OUT_OF_RANGE])
def test_out_of_range_override_names_the_set_key_value_and_range(cls, override, key, allowed):
    with pytest.raises(ConfigError) as e:
        load_config(cls, None, [override])
    msg = str(e.value)
    assert msg.startswith(f"--set {override}: {key}=") and allowed in msg and "\n" not in msg, msg


@pytest.mark.parametrize("cls, override, key, allowed", OUT_OF_RANGE[:12], ids=[c[1] for c in OUT_OF_RANGE[:12]])
def test_out_of_range_in_a_file_names_the_file_and_key(tmp_path, cls, override, key, allowed):
    path, value = override.split("=", 1)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(parse_override(f"{path}={value}")))
    with pytest.raises(ConfigError) as e:
        load_config(cls, p)
    assert str(e.value).startswith(f"{p}.{key}=") and allowed in str(e.value), str(e.value)


def test_a_bad_file_value_that_a_set_replaces_loads(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train: {epochs: 0}\n")
    assert load_config(RecipeConfig, p, ["train.epochs=2"]).train.epochs == 2
    with pytest.raises(ConfigError, match=r"^--set train\.lr=0: train\.lr=0"):  # the --set is named, not the file
        load_config(RecipeConfig, p, ["train.epochs=2", "train.lr=0"])


def test_every_loader_checks_ranges(tmp_path):
    """from_dict is the one place: run.json / cell.json specs and checkpoint features are checked too."""
    from xlingual.runspec import RunSpec, load_spec

    spec = to_dict(RunSpec(kind="scratch", languages=["bn"]))
    spec["train"]["grad_clip"] = -1.0
    (tmp_path / "run.json").write_text(json.dumps({"spec": spec}))
    with pytest.raises(ConfigError, match=r"run\.json: spec\.train\.grad_clip=-1\.0 .*> 0"):
        load_spec(tmp_path / "run.json")
    with pytest.raises(ConfigError, match=r"checkpoint: features\.n_mels=0 .*>= 1"):
        from_dict(FeatureConfig, {"n_mels": 0}, "checkpoint: features")


@pytest.mark.parametrize("cls", [RecipeConfig, LIDConfig, MatrixConfig, PhonotacticConfig, AdaptRecipeConfig,
                                 AdaptConfig])
def test_defaults_are_in_range(cls):
    assert from_dict(cls, {}) == cls()


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").rglob("*.yaml")))
def test_every_shipped_recipe_loads(path):
    name = Path(path).stem
    cls = (LIDConfig if "lid" in name else PhonotacticConfig if "phones" in name else RecipeConfig if "asr" in name
           else MatrixConfig)
    load_config(cls, ROOT / path)


# ------------------------------------------------------------------------------ numbers as people write them

# YAML 1.1 (PyYAML) reads an exponent without a dot ("1e-3") as a string; a float field takes it as the number.
@pytest.mark.parametrize("text, expected", [
    ("1e-3", 1e-3), ("3E-4", 3e-4), ("1.5e+2", 150.0), (".5", 0.5), ("2", 2.0), ("1e3", 1000.0), ("5.", 5.0),
    ("2.5e-03", 2.5e-3), ("+1e-2", 1e-2),
    ('"1e-3"', 1e-3),  # quoted: the field says it is a number, so a quoted number is one too
])
def test_float_fields_take_numbers_as_written(tmp_path, text, expected):
    assert load_config(RecipeConfig, None, [f"train.lr={text}"]).train.lr == pytest.approx(expected)
    p = tmp_path / "r.yaml"
    negative = "-" + text.strip('"+')
    p.write_text(f"train:\n  lr: {text}\n  betas: [{text}, 0.98]\ncorpus:\n  noise_snr: {negative}\n")
    cfg = load_config(RecipeConfig, p)
    assert cfg.train.lr == pytest.approx(expected) and isinstance(cfg.train.lr, float)
    assert cfg.train.betas[0] == pytest.approx(expected) and cfg.corpus.noise_snr == pytest.approx(-expected)


@pytest.mark.parametrize("text", ["fast", "1e", "e3", "1,5", "0x10", "1_000", "nan", "inf", "1e-3s", "", "1 e3"])
def test_float_fields_still_refuse_what_is_not_a_number(text):
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(RecipeConfig, None, [f"train.lr='{text}'"])


@pytest.mark.parametrize("override", ["train.epochs=1e3", "train.epochs='5'", "language=1e3"])
def test_only_float_fields_take_number_strings(override):
    """An int field stays strict (1e3 is not written as an integer), and a str field keeps its string."""
    if override.startswith("language"):
        assert load_config(RecipeConfig, None, [override]).language == "1e3"
        return
    with pytest.raises(ConfigError, match="train.epochs.*expected int"):
        load_config(RecipeConfig, None, [override])


def test_an_unknown_key_from_a_set_names_the_set():
    with pytest.raises(ConfigError, match=r"^--set trian\.epochs=1: trian: unknown key; valid keys"):
        load_config(RecipeConfig, None, ["trian.epochs=1"])


def test_cli_refuses_an_out_of_range_value_in_one_line_before_anything_runs(tmp_path, capsys):
    from xlingual.cli import main

    out = tmp_path / "exp"
    assert main(["recipe", "--set", f"out_dir={out}", "--set", "corpus.kind=manifests", "--set",
                 f"corpus.dir={tmp_path / 'none'}", "--set", "train.epochs=0"]) == 2
    err = capsys.readouterr().err
    assert err == ("xlingual recipe: error: --set train.epochs=0: train.epochs=0 is not allowed; it must be an "
                   "integer >= 1\n")
    assert not out.exists()
