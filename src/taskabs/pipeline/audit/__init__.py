"""Audit every file in ``results/`` back to the MLflow run, code, data and config that made it.

For each result file the audit finds its producing run (the MLflow run whose ``output.<name>.path``
tag names the file) and checks, each against an independent record:

========  ====================================================================================
exists    every file the current config's DAG makes, ``dvc.lock`` records, or a run's manifest
          of a directory output lists, is on disk (a missing one gets a row of its own)
run       the run exists and FINISHED
code      its ``git_commit`` is in HEAD's history, and the modules its stage reached when it ran
          (``code_modules``: path and SHA-256 of each) are the ones the stage reaches now, with
          the same bytes, and were committed when it ran: a change to any other module is not
          a change to this result (runs recorded before ``code_modules``: all of ``src/``,
          ``workflow/`` and ``Snakefile``)
data      its ``data_hash`` equals the hash of its inputs as ``dvc.lock`` records them, and each
          input on disk still has that content (a directory input: the MD5 of its listing)
config    its ``config_json`` hashes to its ``config_hash``, and the current config (the same
          ``--configfile``\\ s, resolved by Snakemake) still gives the job that config
record    MLflow's params are the run's config, its metrics are the ones the stage returned
          (``metric_keys``, ``metrics_digest``) and agree with the numbers in its JSON outputs
artifact  the file's SHA-256 equals the run's ``output.<name>.sha256`` (a file in a directory
          output: the SHA-256 the run's manifest artifact lists for it)
dvc       the file's MD5 equals the one ``dvc.lock`` records for it
========  ====================================================================================

Every file under ``data/`` and ``results/`` is audited; a check that cannot read its record
reports the damage instead of stopping the audit.  A fetched or gathered file is also checked
against its pin (:mod:`taskabs.pipeline.audit.pins`, no run needed): a failure shows in its
``artifact`` column.

``results/report.html`` is made by ``snakemake --report``, not by a job: only its ``dvc`` check
applies.  Snakemake's own ``--list-changes params`` cannot do the config check: in Snakemake 9.27.1
it lists the last output of every job whether or not its params changed, and it is silent where
``.snakemake/metadata`` is missing (a fresh clone after ``dvc pull``).  Instead the audit runs
Snakemake's CLI (same profile, same config files) with the change listing replaced by a dump of
every job's resolved ``params.config`` (:func:`resolve_jobs`), and compares it with the run's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from taskabs.hashing import md5_file, sha256_file
from taskabs.pipeline import tracking
from taskabs.pipeline.audit.checks import (
    Manifests,
    check_artifact,
    check_code,
    check_config,
    check_data,
    check_dvc,
    check_record,
    check_report,
    check_run,
)
from taskabs.pipeline.audit.pins import PinFailure, pin_failures, repair_hint
from taskabs.pipeline.audit.records import (
    AUDITED_DIRS,
    CHECKS,
    DEFAULT_CONFIGFILES,
    NOT_FROM_A_JOB,
    OK,
    Check,
    DvcRecord,
    Git,
    Producer,
    Resolution,
    RunRecord,
    StageCode,
    dvc_records,
    index_outputs,
    load_runs,
    producing_run,
    resolve_jobs,
    result_files,
    tracking_uri,
)
from taskabs.pipeline.audit.verify import verify_main

# the package's interface: the audit itself, its records and checks (tests and the CLI use them)
__all__ = [
    "CHECKS",
    "OK",
    "DEFAULT_CONFIGFILES",
    "DvcRecord",
    "Git",
    "Producer",
    "Resolution",
    "RunRecord",
    "audit",
    "audit_file",
    "check_artifact",
    "check_config",
    "check_data",
    "check_run",
    "index_outputs",
    "main",
    "mismatches",
    "producing_run",
    "resolve_jobs",
    "verify_main",
    "with_pins",
]

# ---------------------------------------------------------------------------------------------
# The audit


def audit_file(
    path: str,
    root: Path,
    index,
    dvc: DvcRecord,
    resolution: Resolution,
    git: Git,
    manifests: Manifests | None = None,
    stages: StageCode | None = None,
) -> dict:
    """One row of the audit table: file, rule, run id and one :class:`Check` per check.

    A damaged record (a tag that is not what the pipeline writes) fails the row's ``run`` check
    with what went wrong, instead of stopping the audit.
    """
    try:
        return _audit_file(path, root, index, dvc, resolution, git, manifests, stages)
    except Exception as error:
        skipped = Check(True, "-")
        return (
            {"file": path, "rule": "", "run_id": ""}
            | dict.fromkeys(CHECKS, skipped)
            | {"run": Check(False, f"record damaged, cannot check ({type(error).__name__}: {error})")}
        )


def _audit_file(path, root, index, dvc, resolution, git, manifests, stages) -> dict:
    sha256, md5 = sha256_file(root / path), md5_file(root / path)
    row: dict[str, Any] = {"file": path, "dvc": check_dvc(path, md5, dvc), "exists": OK}
    if path in NOT_FROM_A_JOB:
        made_by = Check(True, "n/a")  # the rule column names what made it
        checks = dict.fromkeys(CHECKS[1:-1], made_by) | {"artifact": check_report(root / path)}
        return row | {"rule": f"({NOT_FROM_A_JOB[path]})", "run_id": ""} | checks
    producer = producing_run(path, index, sha256)
    if producer is None:  # the run check fails; the checks of the run's record cannot be made
        skipped = Check(True, "-")
        return (
            row | {"rule": "", "run_id": ""} | dict.fromkeys(CHECKS[1:-1], skipped) | {"run": check_run(None)}
        )
    run = producer.run
    return row | {
        "rule": run.tags.get("rule", ""),
        "run_id": run.run_id,
        "run": check_run(producer),
        "code": check_code(run, git, stages),
        "data": check_data(run, dvc, root),
        "config": check_config(run, producer, resolution),
        "record": check_record(run, root),
        "artifact": check_artifact(producer, path, sha256, manifests),
    }


def expected_files(
    root: Path, resolution: Resolution, dvc: DvcRecord, index, manifests: Manifests | None
) -> dict[str, str]:
    """{file the pipeline should have on disk: why}: the outputs of every job of the current
    config, the files dvc.lock records, and the files the runs' manifests list for directory
    outputs of those jobs."""
    expected: dict[str, str] = {}
    for path, (rule, _config) in resolution.jobs.items():
        if not (root / path).is_dir():
            expected[path] = f"rule {rule} makes it"
        for run, name in index.get(path, [])[:1] if manifests else []:
            if run.status == "FINISHED" and f"output.{name}.sha256" in run.tags:
                for rel in manifests.get(Producer(run, name, path)) or {}:
                    expected.setdefault(
                        os.path.join(path, rel), f"run {run.run_id[:8]} (rule {rule}) made it"
                    )
    for path in dvc.md5:
        if path.split("/", 1)[0] in AUDITED_DIRS:
            expected.setdefault(path, "dvc.lock records it")
    return expected


def missing_row(path: str, why: str, resolution: Resolution) -> dict:
    rule = resolution.jobs.get(path, ("", {}))[0]
    repair = "make reproduce re-makes it" if path in resolution.jobs or rule else "dvc checkout restores it"
    skipped = Check(True, "-")
    return (
        {"file": path, "rule": rule, "run_id": ""}
        | dict.fromkeys(CHECKS, skipped)
        | {"exists": Check(False, f"missing: {why} ({repair})")}
    )


def audit(
    root: Path,
    configfiles: Iterable[str] = DEFAULT_CONFIGFILES,
    *,
    until: Iterable[str] = (),
    resolution: Resolution | None = None,
) -> list[dict]:
    """Audit every file under ``root/data`` and ``root/results``, and every file that should be
    there and is not: a list of rows (see :func:`audit_file`). ``resolution``: the DAG as
    :func:`resolve_jobs` gives it for this tree's config and workflow, if already known (one
    Snakemake call spared when auditing several copies of one tree)."""
    root = Path(root).resolve()
    resolution = resolution or resolve_jobs(root, configfiles, until=until)
    uri = tracking_uri(resolution.config, root)
    runs = load_runs(uri, tracking.experiment_name(resolution.config))
    index, dvc, git = index_outputs(runs), dvc_records(root), Git(root)
    manifests, stages = Manifests(uri), StageCode(root)
    present = result_files(root)
    rows = [audit_file(path, root, index, dvc, resolution, git, manifests, stages) for path in present]
    expected = expected_files(root, resolution, dvc, index, manifests)
    rows += [
        missing_row(path, why, resolution)
        for path, why in sorted(expected.items())
        if not (root / path).exists()
    ]
    return sorted(with_pins(rows, pin_failures(root, resolution.config)), key=lambda row: row["file"])


def with_pins(rows: list[dict], failures: list[PinFailure]) -> list[dict]:
    """The rows with each pin failure in its file's artifact check (a row of its own if none)."""
    by_path = {row["file"]: row for row in rows}
    for failure in failures:
        verdict = Check(False, f"fails its pin: {failure.detail} (repair: {repair_hint([failure])})")
        if failure.path in by_path:
            by_path[failure.path]["artifact"] = verdict
        else:
            skipped = Check(True, "-")
            row = {"file": failure.path, "rule": "", "run_id": ""} | dict.fromkeys(CHECKS, skipped)
            by_path[failure.path] = row | {"artifact": verdict}
    return list(by_path.values())


def mismatches(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(file, check, detail) of every failed check."""
    return [(row["file"], check, row[check].detail) for row in rows for check in CHECKS if not row[check].ok]


def table(rows: list[dict], *, width: int = 36):
    """The audit as a polars DataFrame: file, rule, run id, one column per check."""
    import polars as pl

    columns = ["file", "rule", "run_id", *CHECKS]

    def cell(row: dict, column: str) -> str:  # full paths; verdicts cut short (the lines below say all)
        if column in CHECKS:
            detail = row[column].detail
            return detail if len(detail) <= width else detail[: width - 1] + "…"
        return row[column][:8] if column == "run_id" else row[column]

    return pl.DataFrame(
        [{c: cell(row, c) for c in columns} for row in rows], schema={c: pl.String for c in columns}
    )


def main(
    root: str | Path = ".",
    configfiles: Iterable[str] = DEFAULT_CONFIGFILES,
    *,
    out: TextIO | None = None,
    until: Iterable[str] = (),
    resolution: Resolution | None = None,
) -> int:
    """Print the audit table and one line per mismatch; 0 if everything checks out, else 1."""
    import polars as pl

    out = out or sys.stdout
    try:
        rows = audit(Path(root), list(configfiles), until=until, resolution=resolution)
    except (RuntimeError, FileNotFoundError, LookupError) as error:
        print(f"audit: cannot read the records: {error}", file=out)
        from taskabs.pipeline.audit.verify import light_config  # the pins need no records

        for failure in pin_failures(Path(root), light_config(Path(root), configfiles)):
            print(f"MISMATCH {failure.path} [artifact]: fails its pin: {failure.detail}", file=out)
        return 2
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=1000,
        fmt_str_lengths=1000,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        print(table(rows), file=out)
    found = mismatches(rows)
    for path, check, detail in found:
        print(f"MISMATCH {path} [{check}]: {detail}", file=out)
    if not rows:
        print(f"audit: no files under {' or '.join(AUDITED_DIRS)}/", file=out)
    elif found:
        print(
            f"audit: {len(found)} mismatch(es) in {len({f for f, _, _ in found})} of {len(rows)} files",
            file=out,
        )
    else:
        print(f"audit: all {len(rows)} files under {'/ and '.join(AUDITED_DIRS)}/ check out", file=out)
    return 1 if found else 0
