"""The cluster half of the pipeline, tested against real services on this machine.

A single-node SLURM cluster (scripts/local-slurm.sh) runs a batch job and a Snakemake workflow
through the SLURM executor plugin with the project's SLURM profile; an MLflow server backed by
PostgreSQL (scripts/tracking-server.sh) stores a run. Both need root on Debian and are skipped
with the scripts' reason elsewhere. The profile and `check` tests need neither.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_fixtures import (  # noqa: F401  (fixtures are used by name)
    REPO_ROOT,
    TRACKING_MARK,
    TRACKING_SCRIPT,
    LocalSlurm,
    TrackingServer,
    leftover_processes,
    local_slurm,
    service_processes,
    tracking_server,
    tracking_server_launch,
)

SLURM_PROFILE = REPO_ROOT / "profiles" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
GPU_RULES = ("train_sequence", "infer_sequence", "recompose_sequence")


@pytest.fixture(scope="module", autouse=True)
def _start_tracking_server_early(request):
    """Let the tracking server boot while the SLURM tests run (if any `cluster` test is selected)."""
    if any(
        item.get_closest_marker("cluster") and getattr(item, "module", None) is request.module
        for item in request.session.items
    ):  # doctest items have no module
        request.getfixturevalue("tracking_server_launch")


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the SLURM profile (dry runs: no cluster needed) -------------------------------------------

PROFILE_SNAKEFILE = """
rule all:
    input: "train.txt", "infer.txt", "recompose.txt", "other.txt"
rule train_sequence:
    output: "train.txt"
    shell: "touch {output}"
rule infer_sequence:
    output: "infer.txt"
    shell: "touch {output}"
rule recompose_sequence:
    output: "recompose.txt"
    shell: "touch {output}"
rule other:
    output: "other.txt"
    shell: "touch {output}"
"""


def _dry_run_resources(workdir: Path, env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Resources per rule as Snakemake resolves them with the SLURM profile."""
    (workdir / "Snakefile").write_text(PROFILE_SNAKEFILE)
    proc = subprocess.run(
        [*SNAKEMAKE, "--dry-run", "--workflow-profile", str(SLURM_PROFILE)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resources, rule = {}, None
    for line in (proc.stdout + proc.stderr).splitlines():
        if m := re.match(r"\s*(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif (m := re.match(r"\s+resources: (.*)", line)) and rule:
            resources[rule] = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
    return resources


def test_profile_requests_gpus_only_for_the_model_rules(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKABS_SLURM_")}
    resources = _dry_run_resources(tmp_path, env)
    for rule in GPU_RULES:
        assert resources[rule]["gpu"] == "1", resources[rule]
        # no cpus_per_task: SLURM grants the rule's `threads`, the count torch is set to in both
        # profiles, so a job uses the CPUs it asks for and results match a local run
        assert "cpus_per_task" not in resources[rule]
        assert int(resources[rule]["mem_mb"]) >= 4000
    assert "gpu" not in resources["other"]
    # No site-specific partition or account baked into the profile.
    assert not any("slurm_partition" in r or "slurm_account" in r for r in resources.values())


def test_profile_takes_site_settings_from_the_environment(tmp_path):
    env = {
        **os.environ,
        "TASKABS_SLURM_PARTITION": "gpu-a100",
        "TASKABS_SLURM_ACCOUNT": "lab42",
        "TASKABS_SLURM_GPUS": "0",
    }
    resources = _dry_run_resources(tmp_path, env)
    for rule in (*GPU_RULES, "other"):
        assert resources[rule]["slurm_partition"] == "gpu-a100"
        assert resources[rule]["slurm_account"] == "lab42"
    for rule in GPU_RULES:
        assert resources[rule]["gpu"] == "0"


# --- `check`: a dead tracking server is reported quickly ---------------------------------------


def _check(uri: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(TRACKING_SCRIPT), "check", uri], capture_output=True, text=True, timeout=60
    )
    return proc, time.monotonic() - start


def test_check_fails_fast_when_nothing_listens():
    proc, elapsed = _check(f"http://127.0.0.1:{_free_loopback_port()}")
    assert proc.returncode != 0
    assert elapsed < 10
    assert "not reachable" in proc.stderr


def test_check_fails_fast_when_the_server_hangs():
    with socket.socket() as hung:  # accepts connections (kernel backlog), never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(4)
        proc, elapsed = _check(f"http://127.0.0.1:{hung.getsockname()[1]}")
    assert proc.returncode != 0
    assert elapsed < 10
    assert "not reachable" in proc.stderr


# --- the guard against leaked daemons is not vacuous --------------------------------------------


def test_leftover_check_finds_a_process_started_for_the_state_dir(tmp_path):
    child = subprocess.Popen(["sleep", "60"], env={**os.environ, TRACKING_MARK: str(tmp_path)})
    try:
        before = service_processes(tmp_path, TRACKING_MARK)
        assert child.pid in before
        assert leftover_processes(before, tmp_path, TRACKING_MARK, timeout=0)
    finally:
        child.kill()
        child.wait()
    assert leftover_processes(before, tmp_path, TRACKING_MARK, timeout=5) == []


def test_leftover_check_finds_an_unmarked_process_working_in_the_state_dir(tmp_path):
    """Like an orphaned PostgreSQL backend: environment overwritten, parent gone, cwd = data dir."""
    (tmp_path / "pg").mkdir()
    env = {k: v for k, v in os.environ.items() if k != TRACKING_MARK}
    child = subprocess.Popen(["sleep", "60"], cwd=tmp_path / "pg", env=env)
    try:
        assert child.pid in service_processes(tmp_path, TRACKING_MARK)
    finally:
        child.kill()
        child.wait()


# --- the local SLURM cluster -------------------------------------------------------------------


@pytest.mark.cluster
def test_sbatch_wait_runs_a_job_and_reports_its_exit_code(local_slurm: LocalSlurm, tmp_path):  # noqa: F811
    out = tmp_path / "job.out"
    ok = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-o", str(out), "--wrap", "echo job=$SLURM_JOB_ID"],
        env=local_slurm.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    job_id = ok.stdout.strip().split(";")[0]
    assert out.read_text().strip() == f"job={job_id}"

    failing = subprocess.run(
        ["sbatch", "--wait", "-o", "/dev/null", "--wrap", "exit 3"],
        env=local_slurm.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failing.returncode != 0


WORKFLOW_SNAKEFILE = """
localrules: all
rule all:
    input: "out/train.txt", "out/infer.txt"
rule train_sequence:
    output: "out/train.txt"
    shell: "echo $SLURM_JOB_ID > {output}"
rule infer_sequence:
    output: "out/infer.txt"
    shell: "echo $SLURM_JOB_ID > {output}"
"""


def _job_fields(cluster: LocalSlurm, job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (finished jobs stay visible for MinJobAge)."""
    proc = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(kv.split("=", 1) for kv in proc.stdout.split() if "=" in kv)


@pytest.mark.cluster
def test_snakemake_runs_jobs_through_the_slurm_executor(local_slurm: LocalSlurm, tmp_path):  # noqa: F811
    (tmp_path / "Snakefile").write_text(WORKFLOW_SNAKEFILE)
    env = local_slurm.env(
        TASKABS_SLURM_GPUS="0",
        # No accounting database here: squeue instead of sacct. Status checks come at 3, 16,
        # 39 s after submission (each miss adds 10 s); a job here takes 6-15 s (two Snakemake
        # start-ups: the job script and its inner srun step).
        TASKABS_SLURM_STATUS_COMMAND="squeue",
        TASKABS_SLURM_FIRST_CHECK="3",
    )
    proc = subprocess.run(
        [*SNAKEMAKE, "--workflow-profile", str(SLURM_PROFILE), "--jobs", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    train_id = (tmp_path / "out" / "train.txt").read_text().strip()
    infer_id = (tmp_path / "out" / "infer.txt").read_text().strip()
    assert train_id.isdigit() and infer_id.isdigit() and train_id != infer_id
    # Each ran as its own SLURM job with the memory, CPUs and time limit of the profile.
    train, infer = _job_fields(local_slurm, train_id), _job_fields(local_slurm, infer_id)
    assert (train["JobState"], train["MinMemoryNode"], train["TimeLimit"]) == (
        "COMPLETED",
        "8000M",
        "02:00:00",
    )
    assert (infer["JobState"], infer["MinMemoryNode"], infer["TimeLimit"]) == (
        "COMPLETED",
        "4000M",
        "01:00:00",
    )
    assert train["NumCPUs"] == infer["NumCPUs"] == "1"


# --- the tracking server -----------------------------------------------------------------------


@pytest.mark.cluster
def test_tracking_server_answers_check(tracking_server: TrackingServer):  # noqa: F811
    proc, elapsed = _check(tracking_server.uri)
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 10


@pytest.mark.cluster
def test_mlflow_run_is_stored_in_postgres(tracking_server: TrackingServer):  # noqa: F811
    import mlflow
    import psycopg2

    client = mlflow.MlflowClient(tracking_uri=tracking_server.uri)
    experiment_id = client.create_experiment("infra-test")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "seed", "7")
    client.log_metric(run.info.run_id, "loss", 0.25, step=3)
    client.log_text(run.info.run_id, "hello", "notes/hello.txt")
    client.set_terminated(run.info.run_id)

    with psycopg2.connect(tracking_server.backend_store_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT key, value FROM params WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == [("seed", "7")]
        cur.execute("SELECT key, value, step FROM metrics WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == [("loss", 0.25, 3)]
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone() == ("FINISHED",)
    conn.close()
    # Artifacts go through the server into its own store, not into the client's directory.
    stored = list((tracking_server.state_dir / "artifacts").rglob("hello.txt"))
    assert [p.read_text() for p in stored] == ["hello"]
