"""The config schema documents every key, and bad configs stop before any job starts."""

import pytest
import yaml
from snakemake.utils import validate

from conftest import ROOT, copy_project, snakemake

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def schema_leaves(node, path=""):
    """(path, node) of every property in the schema, recursively."""
    for key, child in node.get("properties", {}).items():
        yield f"{path}.{key}".lstrip("."), child
        yield from schema_leaves(child, f"{path}.{key}")


def test_every_key_has_a_description_and_a_default():
    schema = yaml.safe_load(SCHEMA.read_text())
    missing = [p for p, node in schema_leaves(schema) if "description" not in node or "default" not in node]
    assert not missing, f"schema keys without description or default: {missing}"


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml"])
def test_shipped_configs_are_valid(name):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    if name != "config.yaml":
        overlay = yaml.safe_load((ROOT / "config" / name).read_text())
        config = {
            **config,
            **{k: ({**config.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in overlay.items()},
        }
    validate(config, str(SCHEMA))


def test_defaults_fill_an_empty_config():
    config = {}
    validate(config, str(SCHEMA))
    assert config["sequence"]["data"]["block_min"] == 25
    assert config["sequence"]["models"] == ["gbi_lstm", "lstm"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("config"))


BAD = {
    "unknown key": ("sequence: {trian: {lr: 0.1}}", "trian"),
    "wrong type": ("sequence: {train: {lr: fast}}", "lr"),
    "zero count": ("sequence: {model: {hidden: 0}}", "hidden"),
    "negative count": ("sequence: {data: {train_streams: -4}}", "train_streams"),
    "unknown model": ("sequence: {models: [gbi_lstm, transformer]}", "transformer"),
    "unknown corpus": ("language: {data: {corpora: [python_source, klingon]}}", "klingon"),
    "unpinned BabyLM": ("language: {data: {source: babylm}}", "language.data.babylm.sha256"),
    "unbalanced batch": ("language: {train: {batch: 30}}", "language.train.batch"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD)
def test_bad_config_stops_before_any_job_and_names_the_key(project, case):
    text, key = BAD[case]
    bad = project / "config" / "bad.yaml"
    bad.write_text(text + "\n")
    result = snakemake(project, config="config/bad.yaml", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert key in output, output[-2000:]
    assert not (project / "results").exists() and not (project / "mlflow.db").exists()
