"""Sixteen jobs logging to one MLflow store at the same moment lose nothing.

A seed sweep runs its jobs in parallel, and every job is one MLflow run (taskabs.pipeline.jobs.run_job:
create the run, one batched log of params/metrics/tags, an artifact, terminate). Here 16 real
processes do exactly that, released together by a barrier, against

- a fresh SQLite file, created once beforehand by :func:`taskabs.pipeline.tracking.prepare` in its own
  process (what the pipeline's ``onstart`` does before any job starts), and
- the PostgreSQL-backed ``mlflow server`` of ``scripts/tracking-server.sh`` (skipped with the
  script's reason where it cannot run: not root, not Debian).

Every run must be FINISHED with every metric value, param, tag and its artifact. The processes are
forked from a parent that has imported torch and MLflow but opened no store, so each pays only
for its own connections (spawning 16 interpreters would cost ~16 s of imports on 2 cores).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster_fixtures import TrackingServer, tracking_server, tracking_server_launch  # noqa: F401

from taskabs.pipeline import tracking  # first: it switches MLflow's telemetry off before mlflow is imported

N_JOBS = 16
SHARED_INPUT = "data/shared.bin"
CURVE_STEPS = 300  # per-step training loss, as a train job logs it
SCALARS = ("final_loss", "accuracy", "auc")
RULE = "sweep_job"


def _curve(seed: int) -> list[float]:
    return [1.0 / (1 + step) + seed * 1e-3 for step in range(CURVE_STEPS)]


def _scalars(seed: int) -> dict[str, float]:
    return {name: 0.5 + 0.01 * seed + 0.1 * i for i, name in enumerate(SCALARS)}


def _stage(job):
    """A stage as taskabs.pipeline.stages has them: writes its output, logs a curve, returns metrics."""
    job.output["metrics"].parent.mkdir(parents=True, exist_ok=True)
    job.output["metrics"].write_text(json.dumps({"seed": job.seed}))
    job.log_curve("train_loss", _curve(job.seed))
    return _scalars(job.seed)


def _prepare(config: dict, errors) -> None:
    try:
        tracking.prepare(config)
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def _job(config: dict, seed: int, barrier, results) -> None:
    """One sweep job in its own process: the real taskabs.pipeline.jobs.run_job path."""
    sys.stdout = open(os.devnull, "w")  # MLflow prints a "View run ..." line per run on a server
    try:
        from taskabs.pipeline.jobs import Job, run_job

        job = Job(
            rule=RULE,
            input={"train": Path(SHARED_INPUT)},  # the same dataset: every job logs it at once
            output={"metrics": Path(f"results/seed{seed}/metrics.json")},
            config={"lr": 0.003, "hidden": 16, "seed": seed},
            wildcards={"seed": str(seed)},
        )
        barrier.wait(timeout=120)
        started = time.perf_counter()
        run_job(job, _stage, config)
        results.put((seed, job.run.run_id, time.perf_counter() - started, None))
    except BaseException:
        results.put((seed, None, 0.0, traceback.format_exc()))
        raise


@dataclass
class ConcurrencyResult:
    uri: str
    experiment: str
    run_ids: dict[int, str]  # seed -> MLflow run id, for every job that finished without error
    errors: list[str]  # tracebacks of failed jobs
    exit_codes: list[int]
    wall_seconds: float  # from the barrier's release to the last job's exit
    job_seconds: list[float]  # per job, run_job alone


def log_concurrently(uri: str, workdir: Path, *, n_jobs: int = N_JOBS) -> ConcurrencyResult:
    """Run ``n_jobs`` tracked jobs at once against ``uri`` (store created first, once)."""
    import mlflow.store.tracking.rest_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import mlflow.tracking  # noqa: F401

    import taskabs.pipeline.jobs  # noqa: F401  imported once here (torch, numpy), inherited by the forks

    experiment = f"concurrency-{uuid.uuid4().hex[:8]}"  # a store may hold earlier attempts
    config = {"tracking": {"uri": uri, "experiment": experiment}, "device": "cpu"}
    context = multiprocessing.get_context("fork")
    previous = Path.cwd()
    os.chdir(workdir)  # outputs and SQLite's default artifact root (./mlruns) go here
    Path(SHARED_INPUT).parent.mkdir(parents=True, exist_ok=True)
    Path(SHARED_INPUT).write_bytes(b"the input every job reads")
    try:
        errors = context.Queue()
        first = context.Process(target=_prepare, args=(config, errors))
        first.start()
        first.join(timeout=300)
        if first.exitcode != 0:
            raise RuntimeError(f"prepare() failed (exit {first.exitcode}):\n{errors.get(timeout=5)}")

        barrier, results = context.Barrier(n_jobs + 1), context.Queue()
        jobs = [context.Process(target=_job, args=(config, seed, barrier, results)) for seed in range(n_jobs)]
        for job in jobs:
            job.start()
        barrier.wait(timeout=300)  # every job has imported and is about to create its run
        released = time.perf_counter()
        rows = [results.get(timeout=600) for _ in jobs]  # drain before join: a full pipe blocks exit
        for job in jobs:
            job.join(timeout=120)
        wall = time.perf_counter() - released
    finally:
        os.chdir(previous)
    return ConcurrencyResult(
        uri=uri,
        experiment=experiment,
        run_ids={seed: run_id for seed, run_id, _, error in rows if error is None},
        errors=[error for *_, error in rows if error is not None],
        exit_codes=[job.exitcode for job in jobs],
        wall_seconds=wall,
        job_seconds=sorted(seconds for _, _, seconds, error in rows if error is None),
    )


def lost_records(result: ConcurrencyResult) -> list[str]:
    """Everything the store should hold for the jobs but does not (empty: nothing lost)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=result.uri)
    experiment = client.get_experiment_by_name(result.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.rule = '{RULE}'", max_results=1000)
    problems = [f"{len(runs)} runs stored, expected {N_JOBS}"] if len(runs) != N_JOBS else []
    by_seed = {int(r.data.tags.get("seed", -1)): r for r in runs}
    for seed in range(N_JOBS):
        run = by_seed.get(seed)
        if run is None:
            problems.append(f"seed {seed}: no run")
            continue
        where = f"seed {seed} (run {run.info.run_id})"
        if run.info.status != "FINISHED":
            problems.append(f"{where}: status {run.info.status}")
        history = client.get_metric_history(run.info.run_id, "train_loss")
        if sorted((m.step, m.value) for m in history) != list(enumerate(_curve(seed))):
            problems.append(f"{where}: train_loss has {len(history)}/{CURVE_STEPS} steps or wrong values")
        for name, value in _scalars(seed).items():
            if run.data.metrics.get(name) != value:
                problems.append(f"{where}: metric {name}={run.data.metrics.get(name)}, expected {value}")
        if "wall_seconds" not in run.data.metrics:
            problems.append(f"{where}: metric wall_seconds missing")
        if run.data.params.get("seed") != str(seed) or run.data.params.get("lr") != "0.003":
            problems.append(f"{where}: params {run.data.params}")
        if run.data.tags.get("output.metrics.sha256") is None:
            problems.append(f"{where}: output hash tag missing")
        if [a.path for a in client.list_artifacts(run.info.run_id, "metrics")] != ["metrics/metrics.json"]:
            problems.append(f"{where}: artifact metrics/metrics.json missing")
    return problems


def _assert_nothing_lost(result: ConcurrencyResult) -> None:
    assert not result.errors, "\n".join(result.errors)
    assert result.exit_codes == [0] * N_JOBS
    assert len(result.run_ids) == N_JOBS
    assert lost_records(result) == []


@pytest.fixture(scope="module", autouse=True)
def _start_tracking_server_early(request):
    """Boot the server (~20-40 s) while the SQLite test runs, if a server test is selected."""
    if any(
        getattr(item, "module", None) is request.module and "tracking_server" in item.fixturenames
        for item in request.session.items
    ):  # doctest items have no module
        request.getfixturevalue("tracking_server_launch")


def test_sixteen_jobs_lose_nothing_in_a_fresh_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = log_concurrently(uri, tmp_path)
    _assert_nothing_lost(result)


@pytest.mark.cluster
def test_sixteen_jobs_lose_nothing_on_the_tracking_server(tracking_server: TrackingServer, tmp_path):  # noqa: F811
    import psycopg2

    result = log_concurrently(tracking_server.uri, tmp_path)
    _assert_nothing_lost(result)
    # Recorded by the server in PostgreSQL, and the artifacts proxied into the server's store.
    with psycopg2.connect(tracking_server.backend_store_uri) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_uuid, count(*) FROM metrics WHERE run_uuid = ANY(%s) AND key = 'train_loss' "
            "GROUP BY run_uuid",
            (list(result.run_ids.values()),),
        )
        assert sorted(n for _, n in cur.fetchall()) == [CURVE_STEPS] * N_JOBS
    conn.close()
    stored = list((tracking_server.state_dir / "artifacts").rglob("metrics.json"))
    assert len(stored) == N_JOBS
    assert not (tmp_path / "mlruns").exists(), "artifacts went to the client's directory, not the server"
