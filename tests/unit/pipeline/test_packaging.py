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


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """{normalised name: (version, [sha256, ...])} of requirements.lock (comments left out)."""
    text = re.sub(r"(?m)^#.*\n", "", (ROOT / "requirements.lock").read_text()).replace("\\\n", " ")
    entries = {}
    for line in filter(str.strip, text.splitlines()):
        pin, *options = line.split()
        name, version = pin.split("==")
        hashes = [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=sha256:")]
        assert len(hashes) == len(options), f"requirements.lock: {pin} has options other than hashes"
        entries[name.lower().replace("_", "-")] = (version, hashes)
    return entries


def test_every_lock_line_is_an_exact_pin_with_its_sha256():
    entries = lock_entries()
    assert entries["torch"][0] == "2.13.0"
    unhashed = [name for name, (_, hashes) in entries.items() if not hashes]
    assert not unhashed, f"requirements.lock: no --hash for {unhashed}"
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for _, hashes in entries.values() for h in hashes)


def test_lock_file_agrees_with_the_direct_pins():
    lock = {name: version for name, (version, _) in lock_entries().items()}
    for name, spec in pyproject_pins().items():
        version = lock[name.lower().replace("_", "-")]
        assert re.fullmatch(spec[2:].replace(".", r"\.").replace("*", ".*"), version), (name, spec, version)
