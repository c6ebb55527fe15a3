"""`make reproduce` against its compute floor: the wall time of a reproduction from a fresh clone,
and what it would be if every core did nothing but the stages' own work.

floor = (sum over jobs of the stage's own wall time, which each job records in its MLflow run as
``wall_seconds``) / cores + the report build. Everything above the floor is overhead: process
start-up, tracking, Snakemake's scheduling, checks, DVC. Target: wall <= 1.3x the floor. The job
benchmark files (``logs/benchmarks``) give each job's whole wall time, start-up included, for the
breakdown by rule.

    python benchmarks/reproduce_floor.py                 # clone, make reproduce, report (~12 min)
    python benchmarks/reproduce_floor.py --project DIR --wall SECONDS   # a finished run
"""

from __future__ import annotations

import argparse
import csv
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage_seconds(project: Path) -> dict[str, list[float]]:
    """Rule -> the stage wall times its FINISHED runs recorded (the latest invocation only)."""
    db = sqlite3.connect(f"file:{project / 'mlflow.db'}?mode=ro", uri=True)
    (parent,) = db.execute(
        "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'rule' AND t.value = 'pipeline' ORDER BY r.start_time DESC LIMIT 1"
    ).fetchone()
    rows = db.execute(
        "SELECT rule.value, m.value FROM runs r "
        "JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'mlflow.parentRunId' AND p.value = ? "
        "JOIN tags rule ON rule.run_uuid = r.run_uuid AND rule.key = 'rule' "
        "JOIN latest_metrics m ON m.run_uuid = r.run_uuid AND m.key = 'wall_seconds' "
        "WHERE r.status = 'FINISHED'",
        (parent,),
    ).fetchall()
    by_rule: dict[str, list[float]] = defaultdict(list)
    for rule, seconds in rows:
        by_rule[rule].append(seconds)
    return by_rule


def job_seconds(project: Path) -> dict[str, list[float]]:
    """Rule -> whole job wall times from Snakemake's benchmark files."""
    by_rule: dict[str, list[float]] = defaultdict(list)
    for path in (project / "logs/benchmarks").rglob("*.tsv"):
        rule = path.relative_to(project / "logs/benchmarks").parts[0].removesuffix(".tsv")
        with path.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        by_rule[rule].append(float(row["s"]))
    return by_rule


def reproduce(clone: Path) -> tuple[float, float]:
    """(wall of make reproduce, wall of a report rebuild) in a fresh clone using this venv."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    os.symlink(ROOT / ".venv", clone / ".venv")
    (ROOT / ".venv/.installed").touch(exist_ok=True)
    started = time.perf_counter()
    subprocess.run(["make", "reproduce"], cwd=clone, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    started = time.perf_counter()
    snakemake = [str(clone / ".venv/bin/snakemake"), "--workflow-profile", "profiles/default"]
    subprocess.run(
        [*snakemake, "--report", str(clone / "report-again.html"), "--configfile", "config/config.yaml"],
        cwd=clone,
        check=True,
        capture_output=True,
    )
    return wall, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a finished reproduction (default: make one)")
    parser.add_argument("--wall", type=float, help="its make reproduce wall seconds (with --project)")
    parser.add_argument("--report-seconds", type=float, default=None)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    if args.project:
        if args.wall is None:
            sys.exit("--project needs --wall (seconds make reproduce took)")
        project, wall, report = args.project, args.wall, args.report_seconds or 0.0
    else:
        project = Path(tempfile.mkdtemp(prefix="reproduce-floor-")) / "clone"
        wall, report = reproduce(project)
    stages, jobs = stage_seconds(project), job_seconds(project)
    compute = sum(sum(v) for v in stages.values())
    whole_jobs = sum(sum(v) for v in jobs.values())
    floor = compute / args.cores + report
    print(f"\nmake reproduce against its floor ({project}, {args.cores} cores)")
    print(f"  {'rule':<24} {'jobs':>5} {'stage s':>9} {'job s':>9} {'start-up etc. s':>16}")
    for rule in sorted(jobs, key=lambda r: -sum(jobs[r])):
        s, j = sum(stages.get(rule, [])), sum(jobs[rule])
        print(f"  {rule:<24} {len(jobs[rule]):>5} {s:>9.1f} {j:>9.1f} {j - s:>16.1f}")
    print(
        f"  {'total':<24} {sum(map(len, jobs.values())):>5} {compute:>9.1f} {whole_jobs:>9.1f}"
        f" {whole_jobs - compute:>16.1f}"
    )
    print(
        f"\n  floor = {compute:.0f} s of stage compute / {args.cores} cores"
        f" + report {report:.0f} s = {floor:.0f} s"
    )
    print(f"  make reproduce: {wall:.0f} s = {wall / floor:.2f}x the floor (target <= 1.3x)")


if __name__ == "__main__":
    main()
