"""`taskabs verify [--repair]`: files whose bytes differ from what their producing run recorded."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from taskabs.hashing import sha256_file
from taskabs.pipeline import tracking
from taskabs.pipeline.audit.checks import Manifests, check_artifact, check_report
from taskabs.pipeline.audit.records import (
    DEFAULT_CONFIGFILES,
    NOT_FROM_A_JOB,
    Producer,
    index_outputs,
    load_runs,
    producing_run,
    result_files,
    tracking_uri,
)

# ---------------------------------------------------------------------------------------------
# Verification before use and before DVC versions anything (`taskabs verify`)

SET_ASIDE = ".snakemake/set-aside"


def light_config(root: Path, configfiles: Iterable[str]) -> dict:
    """The config files merged (later ones win), without Snakemake: enough for the tracking keys."""
    import yaml

    def merge(base: dict, over: dict) -> dict:
        return {
            k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            for k, v in {**base, **over}.items()
        }

    config: dict = {}
    for name in ["config/config.yaml", *configfiles]:
        path = root / name
        if path.is_file():
            loaded = yaml.safe_load(path.read_text()) or {}
            if isinstance(loaded, dict):
                config = merge(config, loaded)
    return config


def verify_files(root: Path, configfiles: Iterable[str] = DEFAULT_CONFIGFILES) -> list[tuple[str, str, str]]:
    """(file, the output to set aside, what is wrong) for every file under data/ and results/
    whose bytes are not what the run that made it recorded (a directory output: its manifest),
    every file missing from a directory output, and a truncated report."""
    root = Path(root).resolve()
    config = light_config(root, configfiles)
    uri = tracking_uri(config, root)
    try:
        runs = load_runs(uri, tracking.experiment_name(config))
    except (FileNotFoundError, LookupError):
        runs = []  # nothing recorded yet: nothing to check against
    index, manifests = index_outputs(runs), Manifests(uri)
    bad: list[tuple[str, str, str]] = []
    directories: dict[str, Producer] = {}
    for path in result_files(root):
        if path in NOT_FROM_A_JOB:
            verdict = check_report(root / path)
            if not verdict.ok:
                bad.append((path, path, verdict.detail))
            continue
        producer = producing_run(path, index, sha256_file(root / path))
        if producer is None:
            continue  # no run records making it: the audit reports it
        if producer.path != path:
            directories[producer.path] = producer
        verdict = check_artifact(producer, path, sha256_file(root / path), manifests)
        if not verdict.ok:
            bad.append((path, producer.path, verdict.detail))
    for declared, producer in sorted(directories.items()):
        for rel in sorted(manifests.get(producer) or {}):
            if not (root / declared / rel).is_file():
                bad.append((os.path.join(declared, rel), declared, f"missing from {declared}"))
    return bad


def set_aside(root: Path, paths: Iterable[str], *, stamp: str | None = None) -> Path:
    """Move each path (a file or a whole directory output) under .snakemake/set-aside/<stamp>/."""
    import shutil
    import time

    target = root / SET_ASIDE / (stamp or time.strftime("%Y%m%d-%H%M%S"))
    for path in sorted(set(paths)):
        if (root / path).exists():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(root / path), str(target / path))
    return target


def verify_main(
    root: str | Path = ".",
    configfiles: Iterable[str] = DEFAULT_CONFIGFILES,
    *,
    repair: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print every file that fails its check; with ``repair``, set the outputs aside (the next
    Snakemake run re-makes them). 0 if all check out (or all were set aside), else 1."""
    out, root = out or sys.stdout, Path(root).resolve()
    bad = verify_files(root, list(configfiles))
    for path, _declared, detail in bad:
        print(f"CORRUPT {path}: {detail}", file=out)
    if not bad:
        return 0
    if repair:
        where = set_aside(root, [declared for _, declared, _ in bad])
        print(
            f"verify: set aside {len({d for _, d, _ in bad})} output(s) under {where.relative_to(root)}; "
            "the next snakemake run re-makes them",
            file=out,
        )
        return 0
    print(
        f"verify: {len(bad)} file(s) fail their check; nothing was versioned. Repair: "
        "`taskabs verify --repair` sets them aside and `make reproduce` re-makes them "
        "(or `dvc checkout <file>` restores the committed version)",
        file=out,
    )
    return 1
