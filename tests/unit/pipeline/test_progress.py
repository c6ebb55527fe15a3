"""A training job shows its loss curve and its progress in MLflow while it runs, and MLflow ends
with each step of the curve exactly once: the final record is what it would be without the live view.

The job is a real one (:func:`taskabs.pipeline.jobs.run_job` around the real training loop, the
hook wired as the stages wire it) against a real store, either the SQLite file or the local
``mlflow server`` over it (what local runs use). It runs in a thread and waits on an event after
its first checkpoint, while the test reads the run.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import served_store
from taskabs.pipeline.jobs import Job, run_job
from taskabs.train import train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("progress")]  # one server for the module

STEPS, CHECKPOINT_EVERY = 12, 4
EXPERIMENT = "progress"


class Pause:
    """Holds the training loop at the start of one step until the test lets it go on."""

    def __init__(self, at_step: int | None):
        self.at_step, self.reached, self.go_on = at_step, threading.Event(), threading.Event()

    def __call__(self, step: int) -> None:
        if step == self.at_step:
            self.reached.set()
            assert self.go_on.wait(timeout=120), "the test never let the job go on"


def training_stage(pause: Pause, *, live: bool, every_s: float):
    """A small regression trained by the real loop; the curve file and MLflow as a stage makes them."""

    def stage(job: Job) -> dict:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        x, y = torch.randn(64, 3), torch.randn(64, 1)

        def step_loss(net, step):
            pause(step)
            rows = slice(8 * (step % 8), 8 * (step % 8) + 8)  # the batch from the step index only
            return nn.functional.mse_loss(net(x[rows]), y[rows]), {}

        result = train(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            step_loss,
            steps=STEPS,
            checkpoint_path=job.output["curve"].with_suffix(".ckpt"),
            checkpoint_every=CHECKPOINT_EVERY,
            resolved_config=job.config,
            progress=job.training_progress("train_loss") if live else None,
            progress_every_s=every_s,
        )
        losses = result.history["loss"]
        job.output["curve"].write_text(json.dumps(losses))
        job.log_curve("train_loss", losses)
        return {"final_loss": losses[-1]}

    return stage


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The local server over a fresh SQLite store, started as the workflow starts it."""
    config = {"tracking": {"uri": "sqlite:///mlflow.db", "experiment": EXPERIMENT}}
    with served_store(tmp_path_factory.mktemp("served"), config) as (url, _):
        yield url


@pytest.fixture(params=["sqlite", "server"])
def uri(request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps its artifacts under the working directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if request.param == "server":
        return request.getfixturevalue("server")
    return f"sqlite:///{tmp_path}/mlflow.db"


def start_job(uri: str, out: Path, pause: Pause, *, live: bool = True, every_s: float = 0.0):
    """The job in a thread; returns the Job (its run appears once the stage starts) and the thread."""
    out.mkdir(parents=True, exist_ok=True)
    job = Job(rule="train_progress", input={}, output={"curve": out / "curve.json"}, config={"lr": 0.1})
    config = {"tracking": {"uri": uri, "experiment": EXPERIMENT}, "device": "cpu"}
    errors: list[BaseException] = []

    def target():
        try:
            run_job(job, training_stage(pause, live=live, every_s=every_s), config)
        except BaseException as error:  # re-raised by the test
            errors.append(error)
            pause.reached.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return job, thread, errors


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_running_job_shows_its_curve_and_progress_and_ends_with_each_step_once(uri, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    pause = Pause(at_step=CHECKPOINT_EVERY)  # held after the first checkpoint
    job, thread, errors = start_job(uri, tmp_path / "live", pause)
    assert pause.reached.wait(timeout=300) and not errors, errors
    try:
        run = client.get_run(job.run.run_id)
        assert run.info.status == "RUNNING"
        assert run.data.metrics["progress"] == CHECKPOINT_EVERY / STEPS  # what the runs table shows
        partial = history(client, job.run.run_id, "train_loss")
        assert [step for step, _ in partial] == list(range(CHECKPOINT_EVERY))
        assert history(client, job.run.run_id, "progress") == [
            (s, s / STEPS) for s in range(1, CHECKPOINT_EVERY + 1)
        ]
    finally:
        pause.go_on.set()
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors

    assert client.get_run(job.run.run_id).info.status == "FINISHED"
    final = history(client, job.run.run_id, "train_loss")
    losses = json.loads(job.output["curve"].read_text())
    assert final == list(enumerate(losses))  # each step once, the values of the result file
    assert final[:CHECKPOINT_EVERY] == partial
    assert history(client, job.run.run_id, "progress")[-1] == (STEPS, 1.0)


def test_the_final_record_is_the_one_without_a_live_view_and_the_rate_is_kept(uri, tmp_path):
    """Sent live at every step, the record is the one without a live view plus ``progress``; at a
    rate no run this short reaches, the job sends nothing live and records no ``progress``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    records = {}
    for name, live, every_s in [("none", False, 0.0), ("every step", True, 0.0), ("hourly", True, 3600.0)]:
        job, thread, errors = start_job(uri, tmp_path / name, Pause(None), live=live, every_s=every_s)
        thread.join(timeout=300)
        assert not thread.is_alive() and not errors, errors
        metrics = client.get_run(job.run.run_id).data.metrics
        del metrics["wall_seconds"], metrics["cpu_seconds_job"], metrics["max_rss_mb"]  # differ by run
        records[name] = {key: history(client, job.run.run_id, key) for key in metrics}
    assert records["every step"].pop("progress") == [(s, s / STEPS) for s in range(1, STEPS + 1)]
    assert records["every step"] == records["none"] == records["hourly"]
    assert [step for step, _ in records["none"]["train_loss"]] == list(range(STEPS))
