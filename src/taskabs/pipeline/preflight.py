"""Before any job: are the system packages the configured data comes from installed?

``make reproduce`` runs this after ``make data-deps`` (which installs them as root with apt-get).
Anything still missing stops the run before the first job with one message listing every missing
package and the command that installs it. With ``--allow-missing`` the run goes on without what
needs them: a config overlay switches those parts off, and their claims show "not run".

    python -m taskabs.pipeline.preflight --configfile config/config.yaml [--allow-missing OVERLAY]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from taskabs.data.sources import DEFAULT_DATASETS, QUICK_CORPORA


@dataclass(frozen=True)
class Need:
    package: str  # Debian package
    what: str  # what needs it, for the message
    switch_off: tuple[tuple[str, ...], object]  # config path and the value that drops the need


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def load_config(paths: list[str]) -> dict:
    config: dict = {}
    for path in paths:
        config = _deep_merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


def needs(config: dict) -> list[Need]:
    """The Debian packages the enabled experiments read data from (quick-default sources)."""
    found: list[Need] = []
    images = config.get("images", {})
    if images.get("enabled", True):
        data = images.get("data", {})
        overrides = data.get("datasets") or {}
        ood = list(data.get("ood", []))
        for name in [data.get("in_distribution"), *ood]:
            spec = overrides.get(name) or DEFAULT_DATASETS.get(name) or {}
            for source in spec.get("sources", []):
                if source.get("package") and source.get("kind") == "dir":
                    remaining = [o for o in ood if o != name]
                    switch = (
                        (("images", "data", "ood"), remaining)
                        if name in ood
                        else (("images", "enabled"), False)
                    )
                    found.append(Need(source["package"], f"images: dataset {name}", switch))
    language = config.get("language", {})
    data = language.get("data", {})
    if language.get("enabled", True) and data.get("source", "debian") == "debian":
        specs = {**QUICK_CORPORA, **(data.get("custom_corpora") or {})}
        for corpus in [*data.get("corpora", []), *data.get("held_out", [])]:
            package = specs.get(corpus, {}).get("package")
            for name in [package] if isinstance(package, str) else list(package or []):
                found.append(Need(name, f"language: corpus {corpus}", (("language", "enabled"), False)))
    return found


def installed(package: str) -> bool:
    """Whether dpkg knows ``package`` as installed (False where there is no dpkg)."""
    if not shutil.which("dpkg-query"):
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], capture_output=True, text=True
    )
    return result.returncode == 0 and result.stdout.startswith("ii")


def missing(config: dict) -> list[Need]:
    return [need for need in needs(config) if not installed(need.package)]


def install_command(packages: list[str]) -> str:
    if shutil.which("apt-get"):
        return "sudo make data-deps   (or: sudo apt-get install " + " ".join(packages) + ")"
    return (
        "install the Debian packages "
        + ", ".join(packages)
        + " (no apt-get here), or rerun with ALLOW_MISSING=1"
    )


def overlay(absent: list[Need]) -> dict:
    """A config overlay that switches off every part that needs an absent package."""
    out: dict = {}
    for need in absent:
        keys, value = need.switch_off
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        previous = node.get(keys[-1])
        if isinstance(value, list) and isinstance(previous, list):  # several OOD sets absent
            value = [v for v in previous if v in value]
        node[keys[-1]] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taskabs.pipeline.preflight", description=__doc__)
    parser.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    parser.add_argument(
        "--allow-missing", metavar="OVERLAY", help="write a config overlay instead of stopping"
    )
    args = parser.parse_args(argv)
    # as the Snakefile does: config/config.yaml first, then the files given on top of it
    config = load_config(list(dict.fromkeys(["config/config.yaml", *args.configfile])))
    absent = missing(config)
    if args.allow_missing:
        Path(args.allow_missing).parent.mkdir(parents=True, exist_ok=True)
        Path(args.allow_missing).write_text(yaml.safe_dump(overlay(absent), sort_keys=True))
    if not absent:
        return 0
    packages = sorted({need.package for need in absent})
    lines = [f"  {need.package:<24} needed by {need.what}" for need in absent]
    if args.allow_missing:
        print(
            "preflight: running without the parts that need missing packages (their claims: not run):",
            file=sys.stderr,
        )
        print("\n".join(lines), file=sys.stderr)
        return 0
    print("preflight: missing system packages (no job has started):", file=sys.stderr)
    print("\n".join(lines), file=sys.stderr)
    print(f"install them with: {install_command(packages)}", file=sys.stderr)
    print("or run without those parts: make reproduce ALLOW_MISSING=1", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
