"""Run one Snakemake job as one tracked, seeded, logged call into the library.

Every rule's ``script:`` is ``workflow/scripts/run_stage.py``, which hands the ``snakemake`` object
to :func:`run_snakemake_job`.  That looks the rule up in :data:`taskabs.pipeline.stages.STAGES` and runs it
inside an MLflow run tagged with everything the audit needs: git commit and dirty flag, data hash,
config hash, rule, wildcards, seed, device, host, SLURM job id, and the SHA-256 of every output.
A job that fails, or is sent SIGTERM (``scancel``, a time limit), ends its run FAILED.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskabs.artifacts import CorruptArtifact
from taskabs.devices import resolve_device
from taskabs.hashing import canonical_json, config_hash
from taskabs.pipeline import provenance, tracking
from taskabs.pipeline.tracking import JobRun

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What a stage function sees: named inputs/outputs, its resolved config, and a tracker."""

    rule: str
    input: dict[str, Path | list[Path]]  # expand()ed inputs are lists
    output: dict[str, Path]
    config: dict[str, Any]  # the job's resolved config (params.config): all a stage may read
    wildcards: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # other params (e.g. checkpoint paths)
    threads: int = 1
    device: Any = "cpu"  # a torch.device once the job runs a torch stage
    run: JobRun | None = None
    _metrics: list[tuple[str, float, int]] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return int(self.wildcards.get("seed", self.config.get("seed", 0)))

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self._metrics.append((key, float(value), step))

    def log_curve(self, key: str, values: list[float]) -> None:
        self._metrics.extend((key, float(v), i) for i, v in enumerate(values))

    def progress(self, step: int, total: int, curves: dict[str, list[float]]) -> None:
        """Where a running job is, and its curves so far (as :meth:`log_curve` will log them),
        sent to its MLflow run at once; nothing outside a job."""
        if self.run is not None:
            self.run.progress(step, total, curves)

    def training_progress(self, key: str, *, stride: int = 1, part: int = 0, parts: int = 1):
        """The ``progress`` hook of :func:`taskabs.train.train`: the loss curve as ``key``, every
        ``stride``-th step (as the stage logs it at the end), and the job's fraction done when it
        trains ``parts`` models one after another (this one is number ``part``, from 0)."""

        def report(done: int, total: int, history: dict[str, list[float]]) -> None:
            self.progress(part * total + done, parts * total, {key: history["loss"][::stride]})

        return report


def seed_everything(seed: int, threads: int) -> None:
    """Seeds and deterministic kernels: identical results on CPU for the same seed and threads.

    torch is seeded only when the stage's module imported it: a stage without torch (tables,
    figures, the scorecard) does not pay its import, about a second per job.
    """
    random.seed(seed)
    np.random.seed(seed)
    if "torch" not in sys.modules:
        return
    import torch

    from taskabs.devices import make_deterministic

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    make_deterministic()
    if (inductor := sys.modules.get("torch._inductor.config")) is not None:
        inductor.deterministic = True


class Terminated(SystemExit):
    """SIGTERM received: ``scancel``, a SLURM time limit, ``kill``. (Ctrl-C is KeyboardInterrupt.)

    A SystemExit (exit code 128 + 15, as if killed by the signal) so that stage code catching
    ``Exception`` does not swallow it, while :func:`run_job` still marks the run FAILED.
    """


def _on_sigterm(signum, frame):
    raise Terminated(128 + signum)


@contextmanager
def sigterm_handler(handler) -> Iterator[None]:
    """``handler`` (a function, or ``signal.SIG_IGN``) takes SIGTERM within the block.

    :func:`run_job` uses :func:`_on_sigterm`, so that a killed job marks its run FAILED: without it
    the process dies at once and the run stays RUNNING for ever. SLURM sends SIGTERM first and
    SIGKILL only ``KillWait`` seconds later (30 by default), time enough to record the failure.
    Only the main thread can take signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_job(job: Job, stage: Callable[[Job], dict[str, float] | None], pipeline_config: dict) -> dict:
    """Run ``stage(job)`` inside one MLflow run; re-raise failures after marking the run FAILED.

    Any failure before the run is FINISHED, SIGTERM included, marks it FAILED: then the process
    exits non-zero, Snakemake counts the job as failed, and the record agrees.
    """
    with sigterm_handler(_on_sigterm):
        return _run_job(job, stage, pipeline_config)


def _run_job(job: Job, stage: Callable[[Job], dict[str, float] | None], pipeline_config: dict) -> dict:
    seed_everything(job.seed, job.threads)
    if "torch" in sys.modules:  # the device only means something to a torch stage
        job.device = resolve_device(pipeline_config.get("device", "cpu"))
    commit, dirty = provenance.git_state()
    inputs = files_of(job.input)
    tags = {
        "rule": job.rule,
        "wildcards": json.dumps(job.wildcards, sort_keys=True),
        "seed": str(job.seed),
        "device": str(job.device),
        "host": provenance.host(),
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "config_hash": config_hash(job.config),
        "config_json": canonical_json(job.config),
        "data_hash": provenance.data_hash(inputs) if inputs else "none",
        # MLflow's standard source tags, so its UI and search know where the run came from
        "mlflow.source.git.commit": commit,
        "mlflow.source.name": f"workflow/rules (rule {job.rule})",
        "mlflow.source.type": "JOB",
        "mlflow.user": provenance.user(),
        "process": canonical_json(tracking.process_identity()),
        "workdir": os.getcwd(),
    }
    tags |= code_tags(job.rule)
    if slurm := provenance.slurm_job_id():
        tags["slurm_job_id"] = slurm
        # the CPUs SLURM granted, beside the threads torch runs with: the cluster test compares them
        tags["slurm_cpus"] = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE", "")
    if "torch" in sys.modules:
        tags["torch_threads"] = str(sys.modules["torch"].get_num_threads())
    datasets = {}
    for name, value in job.input.items():
        for i, path in enumerate(value if isinstance(value, list) else [value]):
            if path.exists():
                key = f"input.{name}" + (f".{i}" if isinstance(value, list) else "")
                tags[f"{key}.path"] = str(path)
                tags[f"{key}.md5"] = provenance.content_md5(path)
                datasets[key.removeprefix("input.")] = (str(path), tags[f"{key}.md5"])
    name = job.rule + "".join(f"[{k}={v}]" for k, v in sorted(job.wildcards.items()))
    job.run = JobRun(pipeline_config, name=name, tags=tags)
    job.run.log_params({**job.config, "threads": job.threads})
    job.run.log_inputs(datasets)
    job.run.log_dict(job.config, "config.json")  # the resolved config, structured
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        verify_inputs(job, pipeline_config)
        metrics = stage(job) or {}
        for key, value in metrics.items():
            job.log_metric(key, value)
        # the job's own benchmark record (Snakemake's benchmark file is written after the job)
        job.log_metric("wall_seconds", time.perf_counter() - started)
        job.log_metric("cpu_seconds_job", time.process_time() - cpu_started)
        job.log_metric("max_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        job.run.log_metrics(job._metrics)
        hashes = provenance.path_hash_rows(job.output)
        job.run.set_tags(
            {f"output.{k}.sha256": v for k, v in hashes.items()}
            | {f"output.{k}.path": str(p) for k, p in job.output.items()}
            | {tracking.produced_key(job.output[k]): v for k, v in hashes.items()}
            | scalar_metric_tags(metrics, job._metrics)
        )
        for name, path in job.output.items():
            if Path(path).is_file() and Path(path).stat().st_size < 50 * 2**20:
                job.run.log_artifact(str(path), artifact_path=name)
            elif Path(path).is_dir():  # the SHA-256 of every file: what the audit and later jobs check
                job.run.log_dict(provenance.tree_listing(path), f"{MANIFESTS}/{name}.json")
        job.run.finish("FINISHED")
    except BaseException:
        with sigterm_handler(signal.SIG_IGN):  # a second SIGTERM must not cut this short
            job.run.finish("FAILED")
        raise
    return metrics


def scalar_metric_tags(metrics: dict, logged: list[tuple[str, float, int]]) -> dict[str, str]:
    """``metric_keys`` (the stage's own metrics, not curves) and ``metrics_digest`` over their
    values: the audit compares MLflow's metrics with both and with the result files."""
    curves = {key for key, _, step in logged if step > 0}
    scalars = {k: float(v) for k, v in metrics.items() if k not in curves}
    return {
        "metric_keys": canonical_json(sorted(scalars)),
        "metrics_digest": tracking.metrics_digest(scalars),
    }


MANIFESTS = "_manifests"  # artifact folder: {relpath: sha256} of each directory output


def code_tags(rule: str) -> dict[str, str]:
    """The code a job runs: its stage's modules with their SHA-256, their hash, and whether any
    of them differed from the git commit (what the audit's per-stage code check compares)."""
    from taskabs.pipeline.codehash import code_hash
    from taskabs.pipeline.stages import stage_module

    try:
        modules = provenance.stage_code(rule)
    except KeyError:  # a rule without a stage (tests)
        return {}
    return {
        "code_hash": code_hash(stage_module(rule)),
        "code_modules": canonical_json(modules),
        "code_dirty": str(provenance.git_dirty(sorted(modules))).lower(),
    }


def verify_inputs(job: Job, pipeline_config: dict) -> None:
    """Every input a job made must still hold the bytes its producing run recorded.

    :class:`~taskabs.artifacts.CorruptArtifact` names the first input that does not, the run that
    made it, and the repair; inputs no recorded run made (or made before runs recorded
    ``produced.*`` tags) are not checked here (the audit reports them).
    """
    for path in [p for v in job.input.values() for p in (v if isinstance(v, list) else [v])]:
        if not path.exists():
            continue
        problem = tracking.verify_against_producer(pipeline_config, path, job.run.store if job.run else None)
        if problem:
            raise CorruptArtifact(
                f"input {path} of rule {job.rule} fails its check: {problem}. Repair: "
                "`taskabs verify --repair` sets it aside, then `make reproduce` re-runs the job that "
                "makes it (or `dvc checkout` restores the committed version)"
            )


def files_of(named: dict[str, Path | list[Path]]) -> list[Path]:
    """Every existing file (or directory) among named inputs, lists flattened."""
    flat = [p for v in named.values() for p in (v if isinstance(v, list) else [v])]
    return [p for p in flat if p.exists()]


def _named(items) -> dict[str, Path | list[Path]]:
    return {
        name: [Path(v) for v in value] if isinstance(value, list) else Path(value)
        for name, value in items.items()
    }


def run_snakemake_job(smk) -> None:
    """Entry point for ``script:`` rules: the ``snakemake`` object -> :func:`run_job`."""
    from taskabs.pipeline.stages import stage

    function = stage(smk.rule)  # fails before logging is set up: a rule without a stage
    log_path = Path(smk.log[0]) if smk.log else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )
    params = dict(smk.params.items())
    job = Job(
        rule=smk.rule,
        input=_named(smk.input),
        output=_named(smk.output),
        config=params.pop("config", {}),
        wildcards=dict(smk.wildcards.items()),
        params=params,
        threads=smk.threads,
    )
    try:
        run_job(job, function, smk.config)
    except BaseException:  # into the job's log too, which Snakemake shows when a job fails
        log.exception("rule %s failed", smk.rule)
        raise
