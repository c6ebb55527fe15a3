"""A job killed with SIGTERM (``scancel``, a SLURM time limit, ``kill``) records its failure.

SLURM sends SIGTERM, then SIGKILL ``KillWait`` seconds later. taskabs.pipeline.jobs.run_job turns SIGTERM
into an exception, so the MLflow run is marked FAILED instead of staying RUNNING for ever, and
nothing of the interrupted stage is published. Here a real job process is signalled mid-stage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import tool_env

# The stage signals that it is running, then "works". It catches Exception around the work, as
# stage code may: a SIGTERM that became an Exception would be swallowed and the output published.
JOB_SCRIPT = """
import sys, time
from pathlib import Path
from taskabs.pipeline.jobs import Job, run_job

uri, ready = sys.argv[1], Path(sys.argv[2])

def stage(job):
    ready.write_text("running")
    try:
        time.sleep(300)
    except Exception:
        pass
    job.output["model"].write_text("trained")
    return {"loss": 0.1}

job = Job(rule="train_sequence", input={}, output={"model": Path("model.txt")},
          config={"lr": 0.01}, wildcards={"model": "gbi_lstm", "seed": "0"})
run_job(job, stage, {"tracking": {"uri": uri, "experiment": "signals"}, "device": "cpu"})
"""


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"the job exited ({proc.returncode}) before its stage ran:\n{proc.stderr.read()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the stage did not start within {timeout} s")
        time.sleep(0.05)


def test_sigterm_marks_the_run_failed_and_publishes_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    uri, ready = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", JOB_SCRIPT, uri, str(ready)],
        cwd=tmp_path,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready, proc, timeout=300)
        os.kill(proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        proc.wait(timeout=60)
        stopped = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    proc.stderr.close()
    print(f"exit {proc.returncode} {stopped:.2f} s after SIGTERM")  # shown with -rP

    assert proc.returncode == 128 + signal.SIGTERM, stderr  # not killed by the signal: it exited
    assert stopped < 30, "slower than SLURM's default KillWait: SIGKILL would come first"
    assert not (tmp_path / "model.txt").exists(), "the interrupted stage published its output"

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("signals")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert run.info.end_time is not None
    assert run.data.tags["rule"] == "train_sequence"
    assert run.data.params["lr"] == "0.01"  # what was buffered is still sent with the failure
    assert not [k for k in run.data.tags if k.startswith("output.")], run.data.tags
    assert "loss" not in run.data.metrics
    # only the resolved config, logged before the stage ran: no output of the killed stage
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.json"]


def test_sigterm_outside_a_job_keeps_its_usual_meaning():
    """The handler is installed for the job only; the previous one is back afterwards."""
    from taskabs.pipeline.jobs import _on_sigterm, sigterm_handler

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_handler(_on_sigterm):
        assert signal.getsignal(signal.SIGTERM) is _on_sigterm
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_run_killed_by_sigkill_is_marked_killed_by_the_next_invocation(tmp_path):
    """SIGKILL cannot be caught: the next invocation (its onstart: tracking.start_invocation) sees
    that the run's process is gone from this machine and ends the run KILLED."""
    from mlflow.tracking import MlflowClient

    from taskabs.pipeline import tracking

    uri, ready = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "ready"
    config = {"tracking": {"uri": uri, "experiment": "signals"}, "device": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-c", JOB_SCRIPT, uri, str(ready)],
        cwd=tmp_path,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready, proc, timeout=300)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("signals")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "RUNNING"  # what SIGKILL leaves behind
    tracking.start_invocation(config, tags={"rule": "pipeline"})
    tracking.end_invocation(config, success=True)
    killed = client.get_run(run.info.run_id)
    assert killed.info.status == "KILLED" and killed.info.end_time is not None
    # a run whose process is alive, or on another host, is left alone
    live = client.create_run(
        experiment.experiment_id,
        tags={"process": tracking.canonical_json({**tracking.process_identity(), "host": "node-7"})},
    )
    assert tracking.end_dead_runs(config) == []
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
