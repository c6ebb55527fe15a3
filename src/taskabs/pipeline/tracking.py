"""MLflow records: one parent run per pipeline invocation, one child run per Snakemake job.

The store is ``sqlite:///mlflow.db`` unless config ``tracking.uri`` or the standard
``MLFLOW_TRACKING_URI`` says otherwise (the environment wins, so a cluster can point every job at
one server without editing config).  :func:`prepare` creates the database and the experiment once,
before any job starts: many processes creating a fresh SQLite database at once fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from taskabs.hashing import canonical_json

log = logging.getLogger(__name__)
# Before mlflow is imported: MLflow 3's telemetry thread unsets a variable of os.environ while a
# request iterates it (KeyError '_MLFLOW_TELEMETRY_SESSION_ID', ~1 job in 60 against a server).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # manifests, read by checks

PARENT_RUN_ENV = "TASKABS_PARENT_RUN_ID"
DEFAULT_URI = "sqlite:///mlflow.db"
T = TypeVar("T")


def tracking_uri(config: dict) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or config.get("tracking", {}).get("uri") or DEFAULT_URI


def experiment_name(config: dict) -> str:
    return config.get("tracking", {}).get("experiment", "task-abstraction")


def _client(uri: str):
    from mlflow.tracking import MlflowClient  # imported lazily: mlflow takes seconds to import

    return MlflowClient(tracking_uri=uri)


def retry(call: Callable[[], T], *, attempts: int = 8, first_wait: float = 0.2) -> T:
    """Retry a tracking call on transient failures (a locked SQLite file, a busy server)."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # mlflow wraps sqlalchemy/requests errors in its own types
            transient = any(
                word in str(error).lower() for word in ("locked", "busy", "timed out", "connection")
            )
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(first_wait * 2**attempt)
    raise AssertionError("unreachable")


def check_reachable(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast, before any job is submitted, if an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise RuntimeError(f"tracking server {uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, OSError) as error:
        raise RuntimeError(
            f"tracking server {uri} is not reachable ({error}); start it, or unset MLFLOW_TRACKING_URI "
            "to use the local SQLite store"
        ) from None


def prepare(config: dict) -> str:
    """Create the store and the experiment if needed; return the experiment id."""
    from taskabs.pipeline.stores import open_store

    uri = tracking_uri(config)
    check_reachable(uri)
    return ensure_experiment(open_store(uri), config)


def ensure_experiment(store, config: dict) -> str:
    """The experiment's id in ``store`` (a :mod:`taskabs.pipeline.stores` store), created if missing."""
    name = experiment_name(config)
    return store.experiment_id(name) or store.create_experiment(name)


def start_invocation(config: dict, *, tags: dict[str, str]) -> str:
    """Open the parent run of one pipeline invocation; its id is exported to every job.

    First, runs left RUNNING by a process that is provably gone (``kill -9``, a crash) are marked
    KILLED (:func:`end_dead_runs`).
    """
    client = _client(tracking_uri(config))
    experiment_id = prepare(config)
    try:
        end_dead_runs(config)
    except Exception as error:  # never stop a run over housekeeping
        log.warning("could not check for runs left RUNNING: %s", error)
    run = client.create_run(
        experiment_id,
        tags={"mlflow.runName": "pipeline", "process": canonical_json(process_identity()), **tags},
    )
    os.environ[PARENT_RUN_ENV] = run.info.run_id
    return run.info.run_id


def end_invocation(config: dict, *, success: bool) -> None:
    run_id = os.environ.get(PARENT_RUN_ENV)
    if run_id:
        _client(tracking_uri(config)).set_terminated(run_id, "FINISHED" if success else "FAILED")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become their JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = canonical_json(value)
        else:
            out[name] = value
    return out


class JobRun:
    """One MLflow run for one Snakemake job.

    Params, metrics and tags are buffered and sent in one ``log_batch`` when the run finishes
    (whatever its status), so tracking costs three calls per job, none inside the training loop.
    The exception is :meth:`progress`, which a training loop calls at a low rate: it sends the
    curves' new steps and the fraction done at once, and the final batch leaves out the steps it
    sent, so MLflow holds each (key, step) once. Calls go through
    :func:`taskabs.pipeline.stores.open_store`: over REST, without importing mlflow, when the store
    is a server.
    """

    def __init__(self, config: dict, *, name: str, tags: dict[str, str]):
        from taskabs.pipeline.stores import open_store

        self.config = config
        self.store = open_store(tracking_uri(config))
        experiment_id = retry(lambda: ensure_experiment(self.store, config))
        all_tags = {"mlflow.runName": name, **tags}
        if parent := os.environ.get(PARENT_RUN_ENV):
            all_tags["mlflow.parentRunId"] = parent
        self.run_id = retry(lambda: self.store.create_run(experiment_id, all_tags))
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._metrics: list[tuple[str, float, int]] = []
        self._live: dict[str, dict[int, float]] = {}  # key -> {step: value} sent by progress()
        self._progress_total = 0  # the steps of the last progress report (0: none)

    def log_params(self, params: dict[str, Any]) -> None:
        self._params.update({k: str(v)[:6000] for k, v in flatten(params).items()})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, rows: Iterable[tuple[str, float, int]]) -> None:
        """rows of (key, value, step)."""
        self._metrics.extend((k, float(v), int(step)) for k, v, step in rows)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        retry(lambda: self.store.log_artifact(self.run_id, path, artifact_path))

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        retry(lambda: self.store.log_dict(self.run_id, obj, artifact_file))

    def log_inputs(self, inputs: dict[str, tuple[str, str]]) -> None:
        """Each input as an MLflow dataset: {name: (path, md5)}, the digest DVC records."""
        datasets = [(name, md5, path) for name, (path, md5) in inputs.items()]
        if not datasets:
            return
        # MLflow keeps one row per (experiment, name, digest): two jobs logging the same input at
        # once race to insert it, and the loser's insert fails; a second call finds the row.
        for attempt in range(3):
            try:
                retry(lambda: self.store.log_inputs(self.run_id, datasets))
                return
            except Exception as error:  # a server's error answer, or IntegrityError (SQLite)
                text = str(error).lower()
                if attempt == 2 or not ("duplicate key" in text or "unique constraint" in text):
                    raise

    def progress(self, step: int, total: int, curves: dict[str, list[float]]) -> None:
        """Send the steps of ``curves`` (value i at step i) not sent yet, and ``progress`` =
        step / total at ``step``, in one ``log_batch`` (more only past MLflow's 1000 per request).

        A live view is no reason to stall or fail a job: a failed send is logged, and the curve
        steps it held go with the final batch instead.
        """
        now = int(time.time() * 1000)
        rows = [("progress", step / total, step)] if total > 0 else []
        for key, values in curves.items():
            done = len(self._live.get(key, {}))
            rows += [(key, float(v), i) for i, v in enumerate(values[done:], start=done)]
        try:
            for start in range(0, len(rows), 1000):
                batch = [(k, v, now, i) for k, v, i in rows[start : start + 1000]]
                retry(lambda: self.store.log_batch(self.run_id, batch, {}, {}), attempts=2)
                for key, value, i in rows[start : start + 1000]:
                    self._live.setdefault(key, {})[i] = value
        except Exception as error:
            log.warning(
                "could not send the progress of run %s (sent at the end instead): %s", self.run_id, error
            )
        self._progress_total = max(self._progress_total, total)

    def _not_sent_live(self, key: str, value: float, step: int) -> bool:
        sent = self._live.get(key, {}).get(step)
        return sent is None or not (sent == value or (sent != sent and value != value))

    def flush(self) -> None:
        """Send everything buffered and not sent live, within MLflow's per-request limits."""
        now = int(time.time() * 1000)
        params = list(self._params.items())
        tags = list(self._tags.items())
        metrics = [(k, v, now, step) for k, v, step in self._metrics if self._not_sent_live(k, v, step)]
        while params or tags or metrics:
            batch_params, params = params[:100], params[100:]
            batch_tags, tags = tags[:100], tags[100:]
            room = 1000 - len(batch_params) - len(batch_tags)
            batch_metrics, metrics = metrics[:room], metrics[room:]
            retry(
                lambda: self.store.log_batch(self.run_id, batch_metrics, dict(batch_params), dict(batch_tags))
            )
        self._params, self._tags, self._metrics = {}, {}, []

    def finish(self, status: str) -> None:
        if status == "FINISHED" and self._progress_total:  # a finished job is all done
            self._metrics.append(("progress", 1.0, self._progress_total))
        self.flush()
        retry(lambda: self.store.set_terminated(self.run_id, status))


def runs_by_output(config: dict) -> dict[str, Any]:
    """Output path -> the latest FINISHED run that produced it (from the runs' output.*.path tags)."""
    client = _client(tracking_uri(config))
    experiment = client.get_experiment_by_name(experiment_name(config))
    if experiment is None:
        return {}
    index: dict[str, Any] = {}
    for run in client.search_runs(
        [experiment.experiment_id],
        "attributes.status = 'FINISHED'",
        max_results=50000,
        order_by=["attributes.start_time ASC"],
    ):
        for key, value in run.data.tags.items():
            if key.startswith("output.") and key.endswith(".path"):
                index[value] = run  # later runs overwrite earlier ones
    return index


def runs_behind(path: str, index: dict[str, Any]) -> list[str]:
    """Run ids behind a file: the run that made it and, recursively, the runs that made its inputs."""
    seen: list[str] = []
    stack = [path]
    while stack:
        run = index.get(stack.pop())
        if run is None or run.info.run_id in seen:
            continue
        seen.append(run.info.run_id)
        stack += [v for k, v in run.data.tags.items() if k.startswith("input.") and k.endswith(".path")]
    return seen


# ---------------------------------------------------------------------------------------------
# Processes behind runs: a run left RUNNING by a process that no longer exists was killed


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """Who runs: host, boot id, PID namespace, pid and start time (what tells a live process
    from a dead one whose pid was reused, and one host or container from another)."""
    import psutil

    pid = os.getpid() if pid is None else pid
    try:
        pid_ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        pid_ns = ""
    return {
        "host": socket.gethostname(),
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "pid_ns": pid_ns,
        "pid": pid,
        "start": round(psutil.Process(pid).create_time(), 2),
    }


def process_alive(identity: dict[str, Any]) -> bool | None:
    """True if the process is running, False if it provably is not, None if this machine cannot
    tell (another host, boot, container or PID namespace)."""
    import psutil

    here = process_identity()
    if any(identity.get(k) != here[k] for k in ("host", "boot_id", "pid_ns")) or not identity.get("pid"):
        return None
    try:
        process = psutil.Process(int(identity["pid"]))
        started = process.create_time()
        if process.status() == psutil.STATUS_ZOMBIE:  # exited, only not yet reaped by its parent
            return False
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, ValueError):
        return None
    return abs(started - float(identity.get("start", 0))) < 1.0


def end_dead_runs(config: dict) -> list[str]:
    """Mark KILLED every RUNNING run whose recorded process provably no longer exists.

    A job killed by SIGKILL (the OOM killer, ``kill -9``, a node reboot on the same host) cannot
    end its own run; the next invocation does. Runs of processes on other hosts (SLURM nodes,
    other containers) are left alone: this machine cannot tell whether they still run.
    """
    client = _client(tracking_uri(config))
    experiment = client.get_experiment_by_name(experiment_name(config))
    if experiment is None:
        return []
    ended = []
    for run in client.search_runs(
        [experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=5000
    ):
        try:
            identity = json.loads(run.data.tags.get("process", ""))
        except ValueError:
            continue
        if isinstance(identity, dict) and process_alive(identity) is False:
            client.set_tag(
                run.info.run_id, "killed_note", "its process was gone; marked KILLED by a later run"
            )
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    if ended:
        log.warning("marked %d run(s) KILLED: their processes are gone (%s)", len(ended), ", ".join(ended))
    return ended


# ---------------------------------------------------------------------------------------------
# Outputs as their producing runs recorded them


def metrics_digest(values: dict[str, float]) -> str:
    """SHA-256 over a stage's scalar metrics (exact float text): a run records it, the audit
    recomputes it from MLflow's metrics."""
    text = canonical_json({k: repr(float(v)) for k, v in values.items()})
    return hashlib.sha256(text.encode()).hexdigest()


def produced_key(path: str | os.PathLike) -> str:
    """The tag under which a run records the SHA-256 of an output path (searchable by path)."""
    return "produced." + hashlib.sha1(os.path.normpath(str(path)).encode()).hexdigest()[:24]


def content_sha256(path: str | os.PathLike) -> str:
    from taskabs.hashing import sha256_file
    from taskabs.pipeline.provenance import tree_digest

    return tree_digest(path, sha256_file) if Path(path).is_dir() else sha256_file(path)


def verify_against_producer(config: dict, path: str | os.PathLike, store=None) -> str | None:
    """None if ``path`` holds bytes a FINISHED run recorded making (or no run records making it);
    else what differs, naming the run, and for a directory the files."""
    from taskabs.pipeline.stores import open_store

    store = store or open_store(tracking_uri(config))
    experiment_id = retry(lambda: store.experiment_id(experiment_name(config)))
    if experiment_id is None:
        return None
    key, digest = produced_key(path), content_sha256(path)
    search = lambda where: retry(  # noqa: E731
        lambda: store.search(
            experiment_id,
            f"attributes.status = 'FINISHED' and tags.`{key}` {where}",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
    )
    if search(f"= '{digest}'"):
        return None
    found = search("LIKE '%'")
    if not found:
        return None
    run = found[0]
    recorded = run.tags[key]
    detail = (
        f"sha256 {digest[:12]} on disk, {recorded[:12]} recorded by run {run.run_id[:8]} "
        f"(rule {run.tags.get('rule', '?')})"
    )
    if Path(path).is_dir():
        changed = manifest_difference(store, run, path)
        if changed:
            detail += "; " + changed
    return detail


def run_manifest(store, run, path: str | os.PathLike) -> dict[str, str] | None:
    """{relpath: sha256} a run (a :class:`~taskabs.pipeline.stores.RunRecord`) recorded for its
    directory output ``path`` (None if none)."""
    wanted = os.path.normpath(str(path))
    names = [
        k[len("output.") : -len(".path")]
        for k, v in run.tags.items()
        if k.startswith("output.") and k.endswith(".path") and os.path.normpath(v) == wanted
    ]
    for name in names:
        try:
            return json.loads(store.read_artifact(run.run_id, f"_manifests/{name}.json"))
        except Exception:  # no manifest (older run) or an unreadable one
            continue
    return None


def manifest_difference(store, run, path: str | os.PathLike) -> str:
    """'changed: a, b; missing: c; unexpected: d' between a directory and its run's manifest."""
    from taskabs.pipeline.provenance import tree_listing

    manifest = run_manifest(store, run, path)
    if manifest is None:
        return ""
    return describe_difference(manifest, tree_listing(path), str(path))


def describe_difference(recorded: dict[str, str], on_disk: dict[str, str], base: str, limit: int = 3) -> str:
    parts = []
    for what, names in (
        ("changed", sorted(k for k in recorded.keys() & on_disk.keys() if recorded[k] != on_disk[k])),
        ("missing", sorted(recorded.keys() - on_disk.keys())),
        ("unexpected", sorted(on_disk.keys() - recorded.keys())),
    ):
        if names:
            more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
            parts.append(f"{what}: " + ", ".join(os.path.join(base, n) for n in names[:limit]) + more)
    return "; ".join(parts)
