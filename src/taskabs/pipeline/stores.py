"""The few calls a job makes to the MLflow tracking store, in two implementations.

A job creates its run, logs one batch, its inputs and artifacts, ends the run, and looks up the
runs that made its inputs. :class:`RestStore` makes those calls over MLflow's REST API with the
standard library, so a job against a tracking server (a cluster's, or the one the workflow starts
for the local store: :mod:`taskabs.pipeline.local_server`) does not import mlflow, which costs
about 2.5 s of CPU per job here. :class:`ClientStore` makes the same calls through
``MlflowClient`` for any other store (a SQLite file opened directly). Both write the same records.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Metric = tuple[str, float, int, int]  # key, value, timestamp (ms), step


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    status: str
    tags: dict[str, str]


def open_store(uri: str):
    return RestStore(uri) if uri.startswith(("http://", "https://")) else ClientStore(uri)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ClientStore:
    """Through ``MlflowClient`` (imported here, when a job opens a store that is not a server)."""

    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)

    def experiment_id(self, name: str) -> str | None:
        experiment = self.client.get_experiment_by_name(name)
        return None if experiment is None else experiment.experiment_id

    def create_experiment(self, name: str) -> str:
        return self.client.create_experiment(name)

    def create_run(self, experiment_id: str, tags: dict[str, str]) -> str:
        return self.client.create_run(experiment_id, tags=tags).info.run_id

    def log_batch(self, run_id: str, metrics: list[Metric], params: dict, tags: dict) -> None:
        from mlflow.entities import Metric as MlflowMetric
        from mlflow.entities import Param, RunTag

        self.client.log_batch(
            run_id,
            metrics=[MlflowMetric(k, v, ts, step) for k, v, ts, step in metrics],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )

    def log_inputs(self, run_id: str, datasets: list[tuple[str, str, str]]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        self.client.log_inputs(
            run_id,
            datasets=[
                DatasetInput(
                    Dataset(name=name, digest=digest, source_type="local", source=source),
                    tags=[InputTag("mlflow.data.context", "input")],
                )
                for name, digest, source in datasets
            ],
        )

    def set_terminated(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, local_path, artifact_path)

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, obj, artifact_file)

    def search(
        self, experiment_id: str, where: str, *, max_results: int, order_by: list[str]
    ) -> list[RunRecord]:
        runs = self.client.search_runs([experiment_id], where, max_results=max_results, order_by=order_by)
        return [RunRecord(r.info.run_id, r.info.status, dict(r.data.tags)) for r in runs]

    def read_artifact(self, run_id: str, path: str) -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, path, tmp)).read_bytes()


class TrackingError(RuntimeError):
    """An error answer of the tracking server (its error code and message)."""


def _finite(value: float) -> float | str:
    # MLflow's protobuf JSON spells non-finite doubles as strings; bare NaN is not JSON
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _pairs(mapping: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in mapping.items()]


class RestStore:
    """MLflow's REST API (``/api/2.0/mlflow``) with ``urllib``: no mlflow import in the job.

    Artifacts go where the run's ``artifact_uri`` says: through the server's artifact proxy
    (``mlflow-artifacts:``, a server started with ``--serve-artifacts``, the default), or into a
    directory of this file system (a server over a local store). Credentials come from MLflow's own
    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or ``MLFLOW_TRACKING_TOKEN``.
    """

    def __init__(self, uri: str, *, timeout: float = 120.0):
        self.uri = uri.rstrip("/")
        self.timeout = timeout
        self._artifact_uris: dict[str, str] = {}

    # -- HTTP
    def _headers(self) -> dict[str, str]:
        import base64

        headers = {"User-Agent": "taskabs"}
        if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {token}"
        elif user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
            secret = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()
        return headers

    def _request(self, method: str, path: str, *, body: bytes | None = None, content_type: str = "") -> bytes:
        headers = self._headers()
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.uri + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                answer = json.loads(text)
                text = f"{answer.get('error_code', error.code)}: {answer.get('message', text)}"
            except ValueError:
                pass
            raise TrackingError(f"{method} {self.uri}{path}: HTTP {error.code} {text}") from None
        except (urllib.error.URLError, OSError) as error:  # "connection" errors are retried by callers
            raise TrackingError(f"{method} {self.uri}{path}: connection failed ({error})") from None

    def _call(self, endpoint: str, payload: dict | None = None, *, query: dict | None = None) -> dict:
        path = "/api/2.0/mlflow/" + endpoint
        if query is not None:
            answer = self._request("GET", path + "?" + urllib.parse.urlencode(query))
        else:
            body = json.dumps(payload or {}).encode()
            answer = self._request("POST", path, body=body, content_type="application/json")
        return json.loads(answer or b"{}")

    # -- runs
    def experiment_id(self, name: str) -> str | None:
        try:
            return self._call("experiments/get-by-name", query={"experiment_name": name})["experiment"][
                "experiment_id"
            ]
        except TrackingError as error:
            if "RESOURCE_DOES_NOT_EXIST" in str(error):
                return None
            raise

    def create_experiment(self, name: str) -> str:
        return self._call("experiments/create", {"name": name})["experiment_id"]

    def create_run(self, experiment_id: str, tags: dict[str, str]) -> str:
        run = self._call(
            "runs/create",
            {
                "experiment_id": experiment_id,
                "start_time": _now_ms(),
                "user_id": tags.get("mlflow.user", "unknown"),
                "tags": _pairs(tags),
            },
        )["run"]["info"]
        self._artifact_uris[run["run_id"]] = run["artifact_uri"]
        return run["run_id"]

    def log_batch(self, run_id: str, metrics: list[Metric], params: dict, tags: dict) -> None:
        self._call(
            "runs/log-batch",
            {
                "run_id": run_id,
                "metrics": [
                    {"key": k, "value": _finite(v), "timestamp": ts, "step": step}
                    for k, v, ts, step in metrics
                ],
                "params": _pairs(params),
                "tags": _pairs(tags),
            },
        )

    def log_inputs(self, run_id: str, datasets: list[tuple[str, str, str]]) -> None:
        self._call(
            "runs/log-inputs",
            {
                "run_id": run_id,
                "datasets": [
                    {
                        "tags": [{"key": "mlflow.data.context", "value": "input"}],
                        "dataset": {"name": name, "digest": digest, "source_type": "local", "source": source},
                    }
                    for name, digest, source in datasets
                ],
            },
        )

    def set_terminated(self, run_id: str, status: str) -> None:
        self._call("runs/update", {"run_id": run_id, "status": status, "end_time": _now_ms()})

    def search(
        self, experiment_id: str, where: str, *, max_results: int, order_by: list[str]
    ) -> list[RunRecord]:
        found: list[RunRecord] = []
        token = None
        while len(found) < max_results:
            payload = {
                "experiment_ids": [experiment_id],
                "filter": where,
                "max_results": min(max_results - len(found), 1000),
                "order_by": order_by,
            }
            if token:
                payload["page_token"] = token
            answer = self._call("runs/search", payload)
            for run in answer.get("runs", []):
                tags = {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}
                found.append(RunRecord(run["info"]["run_id"], run["info"]["status"], tags))
            token = answer.get("next_page_token")
            if not token:
                break
        return found

    # -- artifacts
    def _artifact_uri(self, run_id: str) -> str:
        if run_id not in self._artifact_uris:
            run = self._call("runs/get", query={"run_id": run_id})["run"]["info"]
            self._artifact_uris[run_id] = run["artifact_uri"]
        return self._artifact_uris[run_id]

    def _destination(self, run_id: str, relpath: str) -> tuple[str, str]:
        """('proxy', URL path) or ('local', file path) for an artifact of a run."""
        base = self._artifact_uri(run_id)
        parsed = urllib.parse.urlparse(base)
        if parsed.scheme == "mlflow-artifacts":
            where = parsed.path.lstrip("/") + "/" + relpath
            return "proxy", "/api/2.0/mlflow-artifacts/artifacts/" + urllib.parse.quote(where)
        if parsed.scheme in ("", "file"):
            return "local", os.path.join(urllib.parse.unquote(parsed.path), relpath)
        raise TrackingError(
            f"run {run_id} stores artifacts at {base}: start the server with --serve-artifacts "
            "(the default) so jobs can upload through it"
        )

    def _put(self, run_id: str, relpath: str, data: bytes) -> None:
        kind, where = self._destination(run_id, relpath)
        if kind == "proxy":
            self._request("PUT", where, body=data, content_type="application/octet-stream")
            return
        Path(where).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{where}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(where)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None) -> None:
        name = os.path.basename(local_path)
        relpath = f"{artifact_path}/{name}" if artifact_path else name
        kind, where = self._destination(run_id, relpath)
        if kind == "local":  # copied, not read into memory: model files are large
            Path(where).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path, where)
            return
        self._put(run_id, relpath, Path(local_path).read_bytes())

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self._put(run_id, artifact_file, json.dumps(obj, indent=2).encode())

    def read_artifact(self, run_id: str, path: str) -> bytes:
        kind, where = self._destination(run_id, path)
        if kind == "local":
            return Path(where).read_bytes()
        return self._request("GET", where)
