"""Dependencies are pinned once and agree everywhere they are written."""

import re
import tomllib

import yaml

from conftest import ROOT


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)(==.+)", s).groups() for s in specs)


def test_every_dependency_is_pinned_exactly_and_torch_to_2_13():
    pins = pyproject_pins()
    assert pins["torch"] == "==2.13.*"
    assert all(v.startswith("==") for v in pins.values())


def test_environment_yml_has_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)(==.+)", s).groups() for s in pip)
    assert conda_pins == pyproject_pins()
    assert "python=3.11" in env["dependencies"]


def test_lock_file_agrees_with_the_direct_pins():
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, version = line.split("==")
        lock[name.lower().replace("_", "-")] = version
    for name, spec in pyproject_pins().items():
        version = lock[name.lower().replace("_", "-")]
        assert re.fullmatch(spec[2:].replace(".", r"\.").replace("*", ".*"), version), (name, spec, version)
