"""Before any job: the system packages the configured data needs are named, with the command that
installs them, and ALLOW_MISSING switches off exactly the parts that need them."""

import yaml

from conftest import ROOT
from taskabs.pipeline import preflight

QUICK = preflight.load_config([str(ROOT / "config/config.yaml")])
CORPUS_PACKAGES = {
    "fortunes",
    "fortunes-min",
    "manpages",
    "manpages-dev",
    "libc6-dev",
    "libpython3.11-stdlib",
}


def test_the_quick_default_needs_fashion_mnist_and_the_corpus_packages():
    packages = {need.package for need in preflight.needs(QUICK)}
    assert "dataset-fashion-mnist" in packages and CORPUS_PACKAGES <= packages


def test_disabled_experiments_need_nothing():
    config = {"images": {"enabled": False}, "language": {"enabled": False}}
    assert preflight.needs(config) == []


def test_missing_packages_stop_the_run_naming_each_one(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(preflight, "installed", lambda package: package != "dataset-fashion-mnist")
    monkeypatch.chdir(ROOT)
    assert preflight.main(["--configfile", "config/config.yaml"]) == 1
    err = capsys.readouterr().err
    assert "dataset-fashion-mnist" in err and "images: dataset fashion_mnist" in err
    assert "make data-deps" in err and "ALLOW_MISSING=1" in err


def test_allow_missing_drops_only_what_needs_the_missing_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(
        preflight, "installed", lambda package: package not in ("dataset-fashion-mnist", "fortunes")
    )
    monkeypatch.chdir(ROOT)
    overlay = tmp_path / "missing.yaml"
    assert preflight.main(["--configfile", "config/config.yaml", "--allow-missing", str(overlay)]) == 0
    switched = yaml.safe_load(overlay.read_text())
    assert switched["language"] == {"enabled": False}
    assert switched["images"]["data"]["ood"] == [
        o for o in QUICK["images"]["data"]["ood"] if o != "fashion_mnist"
    ]
    assert "enabled" not in switched["images"]


def test_with_everything_installed_the_overlay_is_empty(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "installed", lambda package: True)
    monkeypatch.chdir(ROOT)
    overlay = tmp_path / "missing.yaml"
    assert preflight.main(["--allow-missing", str(overlay)]) == 0
    assert yaml.safe_load(overlay.read_text()) == {}
