import pytest

from xlingual.config import ConfigError, RecipeConfig, load_config, parse_override


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


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("train.epochs")


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(RecipeConfig, "/nonexistent.yaml")
