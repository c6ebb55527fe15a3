"""Tracking overhead: one training job with its MLflow run against the same loop without.

Both arms train the quick-default GBI-LSTM for the same steps in-process; the tracked arm also
creates the run, logs the resolved config, sends the live progress (the curve's new steps and the
fraction done, at the jobs' rate), the batched per-step metrics and finishes the run, as
taskabs.pipeline.jobs does; two more arms send no live progress (the record before it existed)
or send it every second, to show what the live view and its rate cost.  The one-off cost of
importing mlflow is reported separately.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import interleaved, report
from taskabs.models.sequence import SequenceModelConfig, TaskConditionedLSTM
from taskabs.pipeline.jobs import Job
from taskabs.train import PROGRESS_EVERY_S, train

STREAMS, CHUNK = 32, 25
REPEATS = 5  # timed runs of each arm, after one warm-up run


def measure(steps: int) -> None:
    x = torch.rand(STREAMS, steps * CHUNK, 1)
    z = torch.nn.functional.one_hot(torch.randint(0, 2, (STREAMS, steps * CHUNK)), 2).float()
    workdir = Path(tempfile.mkdtemp())
    config = {"tracking": {"uri": f"sqlite:///{workdir}/mlflow.db", "experiment": "bench"}}

    def train_once(progress=None, every_s=PROGRESS_EVERY_S):
        torch.manual_seed(0)
        model = TaskConditionedLSTM(SequenceModelConfig())
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        step_loss = lambda net, s: (
            net.loss_per_example(x[:, s * CHUNK : (s + 1) * CHUNK], z[:, s * CHUNK : (s + 1) * CHUNK]).mean(),
            {},
        )
        result = train(
            model,
            opt,
            step_loss,
            steps=steps,
            checkpoint_path=workdir / "ckpt.pt",
            checkpoint_every=50,
            resolved_config={"steps": steps},
            progress=progress,
            progress_every_s=every_s,
        )
        (workdir / "ckpt.pt").unlink()  # or the next repetition would resume from it
        return result

    from taskabs.pipeline import tracking

    tracking.prepare(config)

    live_calls: dict[float, list[float]] = {}  # rate -> seconds of each live call (the A/B is noisy)

    def tracked(every_s=PROGRESS_EVERY_S, live=True):
        run = tracking.JobRun(config, name="bench", tags={"rule": "bench"})
        run.log_params({"sequence": {"train": {"steps": steps, "lr": 3e-3}}, "seed": 0})
        job = Job(rule="bench", input={}, output={}, config={}, run=run)
        hook = job.training_progress("train_loss")

        def timed(*args):
            started = time.perf_counter()
            hook(*args)
            live_calls.setdefault(every_s, []).append(time.perf_counter() - started)

        result = train_once(timed if live else None, every_s)
        run.log_metrics(("train_loss", v, i) for i, v in enumerate(result.history["loss"]))
        run.finish("FINISHED")

    arms = {
        "training loop": train_once,
        "+ MLflow run, no live view": lambda: tracked(live=False),
        f"+ MLflow run, live every {PROGRESS_EVERY_S:g} s": tracked,
        "+ MLflow run, live every 1 s": lambda: tracked(1.0),
    }
    medians = interleaved(arms, repeats=REPEATS)
    report(f"Tracking overhead ({steps} steps, GBI-LSTM, 1 thread)", medians, "training loop")
    for every_s, calls in sorted(live_calls.items()):
        per_call = statistics.median(calls)
        print(
            f"  live every {every_s:g} s: {len(calls) / (REPEATS + 1):.1f} calls per run, "
            f"{per_call * 1e3:.1f} ms each: {per_call / every_s:.2%} of the time at that rate"
        )


def main() -> None:
    torch.set_num_threads(1)
    started = time.perf_counter()
    import mlflow  # noqa: F401  (what every job process pays once, tracked or not)

    print(f"one-off import of mlflow: {time.perf_counter() - started:.2f} s per job process")
    for steps in (200, 2000):  # the quick default's training job, and a ten times longer one
        measure(steps)


if __name__ == "__main__":
    main()
