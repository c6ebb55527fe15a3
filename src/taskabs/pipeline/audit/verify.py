"""`taskabs verify [--repair]`: files whose bytes differ from what their producing run recorded."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from taskabs.hashing import md5_file, sha256_file
from taskabs.pipeline import tracking
from taskabs.pipeline.audit.checks import Manifests, check_artifact, check_report
from taskabs.pipeline.audit.pins import pin_failures, repair_hint
from taskabs.pipeline.audit.records import (
    AUDITED_DIRS,
    DEFAULT_CONFIGFILES,
    NOT_FROM_A_JOB,
    Producer,
    RunRecord,
    dvc_records,
    index_outputs,
    load_runs,
    producing_run,
    result_files,
    tracking_uri,
)
from taskabs.pipeline.provenance import SNAKEMAKE_MARKERS

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


@dataclass(frozen=True)
class Failure:
    """A file that fails its check, the output to set aside for it, and what is wrong."""

    path: str
    output: str
    detail: str
    pinned: bool = False  # a fetched or gathered file that fails its pin (not a job's record)
    repair: str = "re-make"  # for a pinned file: "fetch" or "gather"
    label: str = "CORRUPT"  # or MISSING (an intermediate), STALE (an output made from it)


def directory_output(root: Path, path: str) -> str:
    """The Snakemake directory output holding ``path`` (the folder with Snakemake's timestamp
    marker), else ``path``: what to set aside so that Snakemake re-makes it."""
    parent = os.path.dirname(path)
    while parent and parent not in AUDITED_DIRS:
        if any((root / parent / marker).exists() for marker in SNAKEMAKE_MARKERS):
            return parent
        parent = os.path.dirname(parent)
    return path


def verify_files(
    root: Path, configfiles: Iterable[str] = DEFAULT_CONFIGFILES, *, pinned_only: bool = False
) -> list[Failure]:
    """Every file under data/ and results/ that fails a check: a fetched or gathered file its pin
    (:mod:`taskabs.pipeline.audit.pins`); a job's output the SHA-256 its run recorded (a directory
    output: the run's manifest; a file missing from it); a file no run records, the MD5 dvc.lock
    records (a clone after ``dvc pull``); the report its end; the outputs made from a missing
    intermediate (:func:`missing_intermediates`). ``pinned_only``: the pins alone."""
    root = Path(root).resolve()
    config = light_config(root, configfiles)
    bad = [
        Failure(f.path, f.output, f.detail, pinned=True, repair=f.repair) for f in pin_failures(root, config)
    ]
    if pinned_only:
        return bad
    uri = tracking_uri(config, root)
    try:
        runs = load_runs(uri, tracking.experiment_name(config))
    except (FileNotFoundError, LookupError):
        runs = []  # nothing recorded yet: dvc.lock is the reference
    index, manifests = index_outputs(runs), Manifests(uri)
    dvc = None
    directories: dict[str, Producer] = {}
    for path in result_files(root):
        if path in NOT_FROM_A_JOB:
            verdict = check_report(root / path)
            if not verdict.ok:
                bad.append(Failure(path, path, verdict.detail))
            continue
        producer = producing_run(path, index, sha256_file(root / path))
        if producer is None:  # no run made it here: it must be what dvc.lock records
            dvc = dvc or dvc_records(root)
            recorded = dvc.md5.get(path)
            if recorded is not None and recorded != md5_file(root / path):
                detail = "changed since dvc.lock recorded it (no run made it here)"
                bad.append(Failure(path, directory_output(root, path), detail))
            continue
        if producer.path != path:
            directories[producer.path] = producer
        verdict = check_artifact(producer, path, sha256_file(root / path), manifests)
        if not verdict.ok:
            bad.append(Failure(path, producer.path, verdict.detail))
    for declared, producer in sorted(directories.items()):
        for rel in sorted(manifests.get(producer) or {}):
            if not (root / declared / rel).is_file():
                bad.append(Failure(os.path.join(declared, rel), declared, f"missing from {declared}"))
    bad += missing_intermediates(root, index)
    seen: set[str] = set()  # one line per file: a pin failure first, then its run's record
    return [f for f in bad if not (f.path in seen or seen.add(f.path))]


def missing_intermediates(root: Path, index) -> list[Failure]:
    """Every output made from a file that is gone, so that setting them aside re-makes both.

    Snakemake does not re-make a missing intermediate whose consumers' outputs are up to date; it
    does re-make the consumers' missing outputs, and the intermediate with them. Only the newest
    FINISHED run of each output counts (a run superseded, or of an older config, reads nothing now);
    a missing file nobody reads is a target of its own, which Snakemake re-makes anyway.
    """
    newest: dict[str, RunRecord] = {}
    for path, candidates in index.items():
        finished = [run for run, _ in candidates if run.status == "FINISHED"]
        if finished:
            newest[path] = finished[0]
    current = {run.run_id: run for run in newest.values()}
    readers: dict[str, list[RunRecord]] = {}
    for run in current.values():
        if all(newest.get(out) is run for out in run.outputs().values()):
            for path, _md5 in run.inputs().values():
                readers.setdefault(os.path.normpath(path), []).append(run)
    failures: list[Failure] = []
    for gone in sorted(p for p in newest if p in readers and not (root / p).exists()):
        downstream, todo = set(), [gone]
        while todo:
            for run in readers.get(todo.pop(), []):
                fresh = set(run.outputs().values()) - downstream
                downstream |= fresh
                todo += fresh
        stale = [out for out in sorted(downstream) if (root / out).exists()]
        if stale:
            failures.append(
                Failure(gone, gone, f"read by {len(stale)} output(s) still here", label="MISSING")
            )
            failures += [Failure(out, out, f"made from {gone}", label="STALE") for out in stale]
    return failures


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
    pinned_only: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print every file that fails its check; with ``repair``, set the outputs aside (the next
    Snakemake run re-makes them). 0 if all check out (or all were set aside), else 1."""
    out, root = out or sys.stdout, Path(root).resolve()
    bad = verify_files(root, list(configfiles), pinned_only=pinned_only)
    for failure in bad:
        print(f"{failure.label} {failure.path}: {failure.detail}", file=out)
    if not bad:
        return 0
    if repair:
        where = set_aside(root, [f.output for f in bad])
        print(
            f"verify: set aside {len({f.output for f in bad})} output(s) under {where.relative_to(root)}; "
            "the next snakemake run re-makes them",
            file=out,
        )
        return 0
    pinned = [f for f in bad if f.pinned]
    if pinned:
        print(
            f"verify: {len(pinned)} fetched or gathered file(s) fail their pins; nothing was versioned "
            f"and no job ran. Repair: {repair_hint(pinned)}",
            file=out,
        )
    if len(pinned) < len(bad):
        print(
            f"verify: {len(bad) - len(pinned)} file(s) fail their check; nothing was versioned. Repair: "
            "`taskabs verify --repair` sets them aside and `make reproduce` re-makes them "
            "(or `dvc checkout <file>` restores the committed version)",
            file=out,
        )
    return 1
