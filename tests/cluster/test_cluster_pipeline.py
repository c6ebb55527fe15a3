"""The smoke DAG through a real SLURM cluster, every job logging to a PostgreSQL-backed MLflow server.

A single-node SLURM cluster (scripts/local-slurm.sh) and an ``mlflow server`` on PostgreSQL
(scripts/tracking-server.sh) come up for this module and go down after it (the fixtures of
cluster_fixtures.py fail if a process is left behind). Where they cannot run (not root, not
Debian) every test here is skipped with the scripts' reason.

- A tracking server that is down stops the run with its URI in the message before anything is
  submitted to SLURM.
- The smoke DAG runs with ``--executor slurm``; one training job is cancelled with ``scancel``
  between two checkpoints, which fails the workflow with the job's SLURM state; re-running resumes
  that job from its checkpoint and completes the DAG. Its results are then identical to those of
  an uninterrupted local run (same configuration, started in the background at the beginning, so
  the two overlap), and every job is an MLflow run on the server, tagged with its SLURM job id.

Both copies run config/smoke.yaml plus an overlay written by the test (``config/cluster-test.yaml``):

- Only the sequence experiment runs; every other section with an ``enabled`` key (read from
  config/config.yaml and the schema at test time, so new experiments are off too) is disabled.
  What is tested is the executor, the resume after ``scancel``, identical results and the
  server-side record, not the science; the sequence experiment has every rule the SLURM profile
  sends to a GPU (train, infer, recompose) and rules of every kind (data, evaluation, local
  tables, figures, scorecard). With the whole smoke DAG this module took 9.5 min, now ~3
  (docs/cluster.md).
- Training is made long enough to cancel between checkpoints (500 one-trial steps instead of 20).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import yaml
from cluster_fixtures import (  # noqa: F401  (fixtures are used by name)
    LocalSlurm,
    TrackingServer,
    local_slurm,
    tracking_server,
    tracking_server_launch,
)

from conftest import BIN, copy_project, tool_env

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# No GPUs and no accounting database on the local cluster (docs/cluster.md). Status checks come
# TASKABS_SLURM_FIRST_CHECK s after the last check that saw a job finish, and 10 s later after each
# that saw none (a, 2a+10, 3a+30 s): with a=6 the checks at 6 and 22 s catch the 12-20 s jobs here.
SLURM_SETTINGS = {
    "TASKABS_SLURM_GPUS": "0",
    "TASKABS_SLURM_STATUS_COMMAND": "squeue",
    "TASKABS_SLURM_FIRST_CHECK": "6",
}
KEPT_EXPERIMENT = "sequence"
OVERLAY = "config/cluster-test.yaml"
CONFIGS = ["config/smoke.yaml", OVERLAY]
CANCELLED_MODEL = "gbi_lstm"
TRAIN_STEPS = 500  # training steps = config/smoke.yaml's train_length (500) / chunk (1, below)
SUBMITTED = re.compile(
    r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: [^)]*/slurm_logs/rule_(\w+)/"
)
# Fields that differ between any two runs: measured durations (cpu_seconds, ...) and the ids of
# the MLflow runs behind a result (scorecard.csv's mlflow_runs).
RUN_SPECIFIC = re.compile(r"seconds|mlflow_run")


def switchable_experiments(project: Path) -> set[str]:
    """Config sections with an ``enabled`` key, in config/config.yaml or the config schema."""
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    schema = yaml.safe_load((project / "workflow/schemas/config.schema.yaml").read_text())
    in_config = {k for k, v in config.items() if isinstance(v, dict) and "enabled" in v}
    in_schema = {k for k, v in schema["properties"].items() if "enabled" in v.get("properties", {})}
    return in_config | in_schema


def overlay(project: Path) -> dict:
    """Only the sequence experiment, with training long enough to cancel between checkpoints."""
    disabled = switchable_experiments(project) - {KEPT_EXPERIMENT}
    return {
        **{name: {"enabled": False} for name in sorted(disabled)},
        # One trial per step: TRAIN_STEPS steps (2-5 s here), a checkpoint every 25.
        KEPT_EXPERIMENT: {"enabled": True, "train": {"chunk": 1, "checkpoint_every": 25}},
    }


def _snakemake(*targets: str, profile: str, configs: list[str] = CONFIGS) -> list[str]:
    # Targets first: --configfile takes every argument after it.
    return [str(BIN / "snakemake"), *targets, "--workflow-profile", profile, "--configfile", *configs]


def _slurm_env(cluster: LocalSlurm, uri: str) -> dict[str, str]:
    return tool_env(SLURM_CONF=str(cluster.slurm_conf), MLFLOW_TRACKING_URI=uri, **SLURM_SETTINGS)


_PROJECTS: list[Path] = []  # every copy this module runs in (checked for leftover processes)


def _new_project(root: Path) -> Path:
    project = copy_project(root)
    (project / OVERLAY).write_text(
        "# Written by tests/cluster/test_cluster_pipeline.py\n"
        + yaml.safe_dump(overlay(project), sort_keys=False)
    )
    _PROJECTS.append(project)
    return project


def _processes_in(roots: list[Path]) -> list[str]:
    """Live processes whose working directory is in one of ``roots`` (snakemake, job steps)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            if entry.name.isdigit() and any(cwd == r or r in cwd.parents for r in roots):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {command[:200]}")
        except OSError:
            continue
    return found


def _slurm_jobs(cluster: LocalSlurm) -> set[str]:
    """Every job slurmctld knows, finished ones included (they stay for MinJobAge)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i"],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return set(out.split())


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:]


class Background:
    """A command running in the background in its own session, its output in a file."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str], log: Path):
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=self._file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        return code, self.output()

    def stop(self) -> None:
        """SIGTERM to the whole session (Snakemake cancels its jobs), SIGKILL after 30 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._file.close()


@dataclass
class LocalReference:
    project: Path
    run: Background


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> LocalReference:
    """The same DAG run locally, started in the background so that it overlaps the SLURM runs."""
    project = _new_project(tmp_path_factory.mktemp("local-project"))
    # One core: the SLURM runs are the critical path; this one has minutes to finish beside them.
    # (No rule here asks for more than one thread, so the results do not depend on it.)
    run = Background(
        _snakemake("--cores", "1", profile="profiles/default"), project, tool_env(), project / "snakemake.log"
    )
    yield LocalReference(project, run)
    run.stop()  # still running if a test failed early


@pytest.fixture(scope="module")
def local_project(local_reference: LocalReference) -> Path:
    """The local run's project, once that run has finished successfully."""
    code, output = local_reference.run.wait(timeout=900)
    assert code == 0, _tail(output)
    return local_reference.project


@pytest.fixture(scope="module", autouse=True)
def _services(request):
    """Start the cluster, the tracking server (~10-40 s, in the background), then the local run."""
    request.getfixturevalue("local_slurm")  # skips the module, with its reason, where it cannot run
    request.getfixturevalue("tracking_server_launch")
    reference = request.getfixturevalue("local_reference")
    yield
    reference.run.stop()  # already finished unless a test failed before waiting for it
    deadline = time.monotonic() + 30
    while (left := _processes_in(_PROJECTS)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left running in the test projects: {left}"


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_stops_the_run_before_any_job_is_submitted(
    local_slurm: LocalSlurm, tmp_path
):  # noqa: F811
    project = _new_project(tmp_path)
    uri = f"http://127.0.0.1:{_free_loopback_port()}"
    jobs_before = _slurm_jobs(local_slurm)
    started = time.monotonic()
    result = subprocess.run(
        _snakemake(profile="profiles/slurm"),
        cwd=project,
        env=_slurm_env(local_slurm, uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    print(f"error after {elapsed:.1f} s")  # shown with -rP
    output = result.stdout + result.stderr
    assert result.returncode != 0, _tail(output)
    assert f"tracking server {uri} is not reachable" in output, _tail(output)
    assert "has been submitted with SLURM jobid" not in output
    assert _slurm_jobs(local_slurm) == jobs_before, "a job reached SLURM"
    assert not (project / ".snakemake" / "slurm_logs").exists()
    assert not (project / "results").exists()
    assert elapsed < 60, f"the error took {elapsed:.0f} s"


@dataclass
class SlurmRuns:
    project: Path
    first: str  # output of the run whose training job was cancelled
    second: str  # output of the re-run
    cancelled_job: str  # SLURM job id
    checkpoint_step: int  # the step of the checkpoint the cancelled job left
    submitted: dict[str, str]  # SLURM job id -> rule, over both runs


def _cancel_training_when_checkpointed(
    run: Background, cluster: LocalSlurm, checkpoint: Path, timeout: float = 900
) -> str:
    """scancel the training job of CANCELLED_MODEL as soon as its first checkpoint exists."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(
        rf"submitted with SLURM jobid (\d+) \(log: [^)]*/rule_train_sequence/{CANCELLED_MODEL}_"
    )
    job_id = None
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            raise AssertionError(
                f"the run ended before its training job was cancelled:\n{_tail(run.output())}"
            )
        if job_id is None and (m := pattern.search(run.output())):
            job_id = m.group(1)
        if job_id is not None and checkpoint.exists():
            subprocess.run(["scancel", job_id], env=cluster.env(), check=True, timeout=30)
            return job_id
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of the training job after {timeout} s:\n{_tail(run.output())}")


@pytest.fixture(scope="module")
def slurm_runs(local_slurm: LocalSlurm, tracking_server: TrackingServer, tmp_path_factory) -> SlurmRuns:  # noqa: F811
    import torch

    project = _new_project(tmp_path_factory.mktemp("slurm-project"))
    cmd, env = _snakemake(profile="profiles/slurm"), _slurm_env(local_slurm, tracking_server.uri)
    checkpoint = project / f"checkpoints/sequence/{CANCELLED_MODEL}/seed0.pt"

    first = Background(cmd, project, env, project / "snakemake-1.log")
    try:
        cancelled = _cancel_training_when_checkpointed(first, local_slurm, checkpoint)
        code, first_output = first.wait(timeout=900)
    finally:
        first.stop()
    assert code != 0, "the workflow succeeded although a job was cancelled:\n" + _tail(first_output)
    step = torch.load(checkpoint, weights_only=False)["step"]

    second = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    second_output = second.stdout + second.stderr
    assert second.returncode == 0, _tail(second_output, 8000)
    submitted = {job: rule for job, rule in SUBMITTED.findall(first_output + second_output)}
    return SlurmRuns(project, first_output, second_output, cancelled, step, submitted)


def test_cancelled_training_job_fails_the_workflow_clearly(slurm_runs: SlurmRuns):
    out = slurm_runs.first
    assert slurm_runs.submitted[slurm_runs.cancelled_job] == "train_sequence"
    assert f"SLURM-job '{slurm_runs.cancelled_job}' failed, SLURM status is: 'CANCELLED'" in out, _tail(out)
    assert re.search(r"Error in rule train_sequence", out), _tail(out)
    # Cancelled between two checkpoints: neither at the start nor after the last step.
    assert 0 < slurm_runs.checkpoint_step < TRAIN_STEPS


def _server_runs(tracking_server: TrackingServer):  # noqa: F811
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_server.uri)
    experiment = client.get_experiment_by_name("task-abstraction")
    return client, client.search_runs([experiment.experiment_id], max_results=5000)


def test_rerun_resumes_the_cancelled_job_from_its_checkpoint(
    slurm_runs: SlurmRuns, tracking_server: TrackingServer
):  # noqa: F811
    assert (slurm_runs.project / f"results/sequence/{CANCELLED_MODEL}/seed0/model.pt").is_file()
    _, runs = _server_runs(tracking_server)
    train = [
        r
        for r in runs
        if r.data.tags.get("rule") == "train_sequence"
        and r.info.status == "FINISHED"
        and json.loads(r.data.tags["wildcards"])["model"] == CANCELLED_MODEL
    ]
    assert len(train) == 1
    assert train[0].data.metrics["resumed_from_step"] == slurm_runs.checkpoint_step > 0
    assert train[0].data.tags["slurm_job_id"] != slurm_runs.cancelled_job
    # scancel's SIGTERM reached the job mid-training: its run says so (taskabs.pipeline.jobs.run_job).
    cancelled = [r for r in runs if r.data.tags.get("slurm_job_id") == slurm_runs.cancelled_job]
    assert [r.info.status for r in cancelled] == ["FAILED"]
    assert not [k for k in cancelled[0].data.tags if k.startswith("output.")]
    parents = sorted(r.info.status for r in runs if r.data.tags.get("rule") == "pipeline")
    assert parents == ["FAILED", "FINISHED"]


def _frame_without_run_specifics(path: Path) -> pl.DataFrame:
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    return frame.select([c for c in frame.columns if not RUN_SPECIFIC.search(c)])


def _without_run_specifics(tree):
    if isinstance(tree, dict):
        return {k: _without_run_specifics(v) for k, v in tree.items() if not RUN_SPECIFIC.search(k)}
    if isinstance(tree, list):
        return [_without_run_specifics(v) for v in tree]
    return tree


def result_differences(a: Path, b: Path) -> list[str]:
    """Files of data/ and results/ that differ between two runs, RUN_SPECIFIC fields aside."""

    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for d in ("data", "results")
            if (root / d).is_dir()
            for p in (root / d).rglob("*")
            if p.is_file()
        }

    only = files(a) ^ files(b)
    problems = [f"only in one run: {sorted(only)}"] if only else []
    for name in sorted(files(a) & files(b)):
        x, y = a / name, b / name
        if x.read_bytes() == y.read_bytes():
            continue
        if x.suffix == ".json":
            x_tree, y_tree = json.loads(x.read_text()), json.loads(y.read_text())
            same = _without_run_specifics(x_tree) == _without_run_specifics(y_tree)
        elif x.suffix in (".csv", ".parquet"):
            same = _frame_without_run_specifics(x).equals(_frame_without_run_specifics(y))
        else:
            same = False
        if not same:
            problems.append(name)
    return problems


def test_results_are_identical_to_a_local_run(slurm_runs: SlurmRuns, local_project: Path):
    results = list((slurm_runs.project / "results").rglob("*"))
    assert len([p for p in results if p.suffix == ".png"]) >= 5
    assert result_differences(local_project, slurm_runs.project) == []


def test_every_job_is_a_run_on_the_server_tagged_with_its_slurm_job_id(
    slurm_runs: SlurmRuns, tracking_server: TrackingServer, local_project: Path
):  # noqa: F811
    import psycopg2

    _, runs = _server_runs(tracking_server)
    finished = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("rule") != "pipeline"]
    tagged = {
        r.data.tags["slurm_job_id"]: r.data.tags["rule"] for r in finished if "slurm_job_id" in r.data.tags
    }
    # Every job that went through SLURM (all but the cancelled one) finished as the run of that job.
    expected = {job: rule for job, rule in slurm_runs.submitted.items() if job != slurm_runs.cancelled_job}
    assert tagged == expected
    # Each torch job ran with as many threads as the CPUs SLURM granted it (the rule's `threads`).
    threaded = [r for r in finished if "slurm_job_id" in r.data.tags and "torch_threads" in r.data.tags]
    assert threaded, "no SLURM job recorded its torch thread count"
    for r in threaded:
        granted = r.data.tags["slurm_cpus"]
        assert r.data.tags["torch_threads"] == granted == r.data.params["threads"], (r.info.run_name, granted)
    # The jobs that ran on the submitting host (localrule: True) carry no SLURM id.
    local_rules = {r.data.tags["rule"] for r in finished if "slurm_job_id" not in r.data.tags}
    assert local_rules and not local_rules & set(expected.values())
    # The same jobs as the local run: one finished run per job.
    from mlflow.tracking import MlflowClient

    local = MlflowClient(tracking_uri=f"sqlite:///{local_project}/mlflow.db")
    local_runs = local.search_runs(
        [local.get_experiment_by_name("task-abstraction").experiment_id],
        "attributes.status = 'FINISHED'",
        max_results=5000,
    )
    names = sorted(r.info.run_name for r in local_runs if r.data.tags.get("rule") != "pipeline")
    assert sorted(r.info.run_name for r in finished) == names
    # Stored by the server in PostgreSQL; nothing in a local store of the project.
    with psycopg2.connect(tracking_server.backend_store_uri) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
            "WHERE e.name = 'task-abstraction'"
        )
        assert cur.fetchone()[0] == len(runs)
    conn.close()
    assert not (slurm_runs.project / "mlflow.db").exists() and not (slurm_runs.project / "mlruns").exists()
    # The scorecard traces each claim to runs on the server (taskabs.pipeline.tracking.runs_behind).
    scorecard = slurm_runs.project / "results/scorecard.csv"
    if scorecard.exists():
        cited = {
            run
            for runs_of_claim in pl.read_csv(scorecard)["mlflow_runs"].drop_nulls()
            for run in runs_of_claim.split()
        }
        assert cited and cited <= {r.info.run_id for r in finished}
