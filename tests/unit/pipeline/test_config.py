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
    "10,000 seeds": ("seeds: [" + ", ".join(map(str, range(10_000))) + "]", "seeds"),
    "a width of 10^9": ("geometry: {widths: [1000000000]}", "geometry.widths"),
    "a hidden size above its maximum": ("sequence: {model: {hidden: 1000000}}", "sequence.model.hidden"),
    "unknown key in a custom corpus": (
        "language: {data: {custom_corpora: {x: {globs: [/usr/a], package: p, glbos: [/b]}}}}",
        "glbos",
    ),
    "tracking store outside the project": (
        "tracking: {uri: 'sqlite:///../elsewhere/mlflow.db'}",
        "tracking.uri",
    ),
    "absolute tracking store": ("tracking: {uri: 'sqlite:////tmp/elsewhere.db'}", "tracking.uri"),
    "markup in a name": ("sequence: {models: ['</script><script>alert(1)</script>']}", "sequence.models"),
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


# ---------------------------------------------------------------------------------------------
# taskabs.pipeline.config_checks directly (fast)

from taskabs.pipeline import config_checks  # noqa: E402
from taskabs.pipeline.config_checks import ConfigError  # noqa: E402


def defaults() -> dict:
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate(config, str(SCHEMA))
    return config


def test_the_shipped_configs_pass_every_check():
    for name in ("config.yaml", "smoke.yaml", "paper.yaml"):
        config = yaml.safe_load((ROOT / "config" / name).read_text())
        validate(config, str(SCHEMA))
        config_checks.check_maxima(config)
        config_checks.check_dag_size(config)
        config_checks.check_paths(config)
        config_checks.check_text(config)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c["geometry"].update(widths=[100_000]), "geometry.widths[]"),
        (
            lambda c: c["geometry"].update(d=list(range(2, 60)), widths=list(range(1, 60)), depths=[1, 2, 3]),
            "jobs",
        ),
        (lambda c: c["tracking"].update(uri="sqlite:///a/../../b.db"), "tracking.uri"),
        (lambda c: c["tracking"].update(uri="sqlite:////var/tmp/x.db"), "tracking.uri"),
        (lambda c: c["tracking"].update(experiment="<img src=x onerror=alert(1)>"), "tracking.experiment"),
    ],
)
def test_checks_name_the_key(edit, key):
    config = defaults()
    edit(config)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_checks.check(config)


def test_an_outside_path_is_accepted_on_explicit_opt_in(monkeypatch):
    config = defaults()
    config["tracking"]["uri"] = "sqlite:////var/tmp/x.db"
    monkeypatch.setenv(config_checks.ALLOW_OUTSIDE_ENV, "1")
    config_checks.check_paths(config)
    config["tracking"]["uri"] = "sqlite:///../x.db"  # '..' never
    with pytest.raises(ConfigError, match="'..'"):
        config_checks.check_paths(config)


def test_cuda_without_a_gpu_is_refused_before_any_job():
    import torch

    if torch.cuda.is_available():
        config_checks.check_device("cuda")
        return
    with pytest.raises(ConfigError, match="config key device"):
        config_checks.check_device("cuda")


def test_malformed_yaml_is_reported_with_file_and_line(tmp_path):
    from taskabs.pipeline import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0, 1]\nsequence:\n  train: {lr: 0.1\n  model: x\n")
    problems = config_checks.check_yaml_files([bad])
    assert len(problems) == 1 and problems[0].startswith(f"{bad}:"), problems
    assert " not valid YAML" in problems[0] and problems[0].split(":")[1].isdigit(), problems
    assert cli.main(["check-config", str(bad)]) == 1
    assert config_checks.check_yaml_files([ROOT / "config/smoke.yaml"]) == []
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    assert "mapping" in config_checks.check_yaml_files([listing])[0]


def test_a_schema_error_is_one_short_line_naming_the_key():
    config = {"sequence": {"train": {"lr": "fast"}}}
    with pytest.raises(ConfigError) as error:
        config_checks.validate(config, SCHEMA)
    assert str(error.value).startswith("config key sequence.train.lr:") and "\n" not in str(error.value)
