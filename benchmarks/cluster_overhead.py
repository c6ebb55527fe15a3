"""What running through SLURM and a tracking server costs, measured on this machine in one session.

1. Wall time of the DAG of tests/cluster/test_cluster_pipeline.py (config/smoke.yaml with only the
   sequence experiment; ``--whole-smoke`` for all of config/smoke.yaml) run locally (default
   profile, SQLite store) against the same DAG through the local one-node SLURM cluster
   (``--executor slurm`` with the test's settings, every job logging to the PostgreSQL-backed
   MLflow server), each in a fresh copy of the project, alternating (``--repeats``) because this
   machine is shared and its load drifts. Target: ratio <= 3.
2. Time from starting Snakemake with an unreachable tracking server to its error (nothing submitted).
3. Sixteen jobs logging at once (tests/cluster/test_tracking_concurrency.py): to a fresh SQLite file and to
   the server; runs complete with all their metrics, and how long it took.

The cluster and the server come up at the start and go down at the end (scripts/local-slurm.sh,
scripts/tracking-server.sh; root on Debian). Where they cannot, parts 1-2 and the server half of 3
are skipped with the reason. Usage: ``.venv/bin/python benchmarks/cluster_overhead.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "cluster")]  # conftest, and the cluster tests' fixtures

from cluster_fixtures import (  # noqa: E402
    SLURM_MARK,
    TRACKING_MARK,
    Unsupported,
    leftover_processes,
    service_processes,
    start_local_slurm,
    start_tracking_server,
    stop_local_slurm,
    stop_tracking_server,
)
from test_cluster_pipeline import OVERLAY, SLURM_SETTINGS, overlay  # noqa: E402
from test_tracking_concurrency import N_JOBS, log_concurrently, lost_records  # noqa: E402

from conftest import BIN, copy_project, tool_env  # noqa: E402

CONFIGS: list[str] = []  # set in main(): config/smoke.yaml, plus the test's overlay


def snakemake(profile: str, *extra: str) -> list[str]:
    # Options first: --configfile takes every argument after it.
    return [str(BIN / "snakemake"), "--workflow-profile", profile, *extra, "--configfile", *CONFIGS]


def new_project(dest: Path) -> Path:
    project = copy_project(dest)
    (project / OVERLAY).write_text(yaml.safe_dump(overlay(project), sort_keys=False))
    return project


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def timed_run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, int]:
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return time.monotonic() - started, code


def count_slurm_jobs(env: dict[str, str]) -> int:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i"], env=env, capture_output=True, text=True, check=True
    ).stdout
    return len(out.split())


def wall_times(workdir: Path, slurm_env: dict[str, str] | None, repeats: int, slurm_args: list[str]) -> None:
    print(
        f"\n1. Wall time of the DAG of {' + '.join(CONFIGS)}: local (default profile, SQLite) "
        "vs SLURM (local cluster, server)"
    )
    times: dict[str, list[float]] = {"local": [], "slurm": []}
    arms = {"local": (snakemake("profiles/default"), tool_env())}
    if slurm_env is not None:
        arms["slurm"] = (snakemake("profiles/slurm", *slurm_args), slurm_env)
    for i in range(repeats):
        for name, (cmd, env) in arms.items():
            project = new_project(workdir / f"{name}{i}")
            before = load()
            seconds, code = timed_run(cmd, project, env, workdir / f"{name}{i}.log")
            status = "ok" if code == 0 else f"FAILED (exit {code}, see {workdir / f'{name}{i}.log'})"
            print(f"   {name:<5} run {i + 1}: {seconds:7.1f} s  {status}  ({before} -> {load()})", flush=True)
            if code == 0:
                times[name].append(seconds)
            shutil.rmtree(project, ignore_errors=True)
    if times["local"] and times["slurm"]:
        local, slurm = statistics.median(times["local"]), statistics.median(times["slurm"])
        print(f"   median: local {local:.1f} s, SLURM {slurm:.1f} s, ratio {slurm / local:.2f} (target <= 3)")


def server_down(workdir: Path, slurm_env: dict[str, str]) -> None:
    print("\n2. Tracking server down at start")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    project = new_project(workdir / "down")
    env = {**slurm_env, "MLFLOW_TRACKING_URI": uri}
    jobs_before = count_slurm_jobs(env)
    started = time.monotonic()
    proc = subprocess.run(snakemake("profiles/slurm"), cwd=project, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    lines = (proc.stdout + proc.stderr).splitlines()
    message = next((line for line in lines if uri in line), "(no line names the URI)")
    submitted = count_slurm_jobs(env) - jobs_before
    print(
        f"   exit {proc.returncode} after {seconds:.1f} s; SLURM jobs submitted: {submitted}; "
        f"results/ exists: {(project / 'results').exists()}"
    )
    print(f"   message: {message.strip()}")


def concurrency(workdir: Path, server_uri: str | None) -> None:
    print(f"\n3. {N_JOBS} jobs logging at once")
    stores = {"SQLite (fresh file)": f"sqlite:///{workdir}/concurrency.db"}
    if server_uri:
        stores["server (PostgreSQL)"] = server_uri
    for name, uri in stores.items():
        result = log_concurrently(uri, workdir)
        lost = lost_records(result)
        complete = N_JOBS - len({problem.split(" (")[0] for problem in lost}) if lost else N_JOBS
        jobs = result.job_seconds
        print(
            f"   {name:<20} {len(result.run_ids)}/{N_JOBS} jobs ok, {complete}/{N_JOBS} runs complete; "
            f"all done {result.wall_seconds:.1f} s after the start; per job median "
            f"{statistics.median(jobs) if jobs else float('nan'):.1f} s, "
            f"max {max(jobs, default=float('nan')):.1f} s",
            flush=True,
        )
        for problem in lost[:5] + result.errors[:2]:
            print(f"      {problem.strip().splitlines()[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="alternating local/SLURM pairs (default 1)")
    parser.add_argument("--skip-dag", action="store_true", help="only parts 2 and 3")
    parser.add_argument("--slurm-args", default="", help="extra snakemake arguments for the SLURM arm")
    parser.add_argument(
        "--whole-smoke",
        action="store_true",
        help="all of config/smoke.yaml, not only the cluster test's subset",
    )
    args = parser.parse_args()
    CONFIGS[:] = ["config/smoke.yaml"] if args.whole_smoke else ["config/smoke.yaml", OVERLAY]
    print(f"{os.cpu_count()} CPUs, {load()}; SLURM settings: {SLURM_SETTINGS}")

    workdir = Path(tempfile.mkdtemp(prefix="taskabs-bench-"))
    os.chmod(workdir, 0o755)  # PostgreSQL runs as `postgres` and must reach its state directory
    slurm_dir, tracking_dir = workdir / "slurm", workdir / "tracking"
    cluster = server = None
    try:
        try:
            started = time.monotonic()
            cluster = start_local_slurm(slurm_dir)
            print(f"local SLURM cluster up in {time.monotonic() - started:.1f} s")
            started = time.monotonic()
            server = start_tracking_server(tracking_dir)
            print(f"tracking server up in {time.monotonic() - started:.1f} s: {server.uri}")
        except Unsupported as reason:
            print(f"cluster parts skipped: {reason}")
        slurm_env = None
        if cluster is not None and server is not None:
            slurm_env = tool_env(
                SLURM_CONF=str(cluster.slurm_conf), MLFLOW_TRACKING_URI=server.uri, **SLURM_SETTINGS
            )
        if not args.skip_dag:
            wall_times(workdir, slurm_env, args.repeats, args.slurm_args.split())
        if slurm_env is not None:
            server_down(workdir, slurm_env)
        concurrency(workdir, server.uri if server else None)
    finally:
        left = []
        if server is not None:
            before = service_processes(tracking_dir, TRACKING_MARK)
            stop_tracking_server(tracking_dir)
            left += leftover_processes(before, tracking_dir, TRACKING_MARK)
        if cluster is not None:
            before = service_processes(slurm_dir, SLURM_MARK)
            stop_local_slurm(cluster)
            left += leftover_processes(before, slurm_dir, SLURM_MARK)
        print(f"\nteardown: {'processes left: ' + str(left) if left else 'nothing left running'}")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
