"""Jobs log the same MLflow records over REST (a real ``mlflow server``) as through MlflowClient,
without importing mlflow; the local server lives exactly as long as the process that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from conftest import served_store, tool_env

pytestmark = pytest.mark.slow

CONFIG = {"tracking": {"uri": "sqlite:///mlflow.db", "experiment": "stores"}}

# One job's whole record, written through whichever store the environment selects; prints its run
# id and whether mlflow was imported.
JOB = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from taskabs.pipeline import tracking
    config = json.loads(sys.argv[1])
    Path("out.txt").write_text("bytes of an output")
    Path("folder").mkdir(exist_ok=True)
    run = tracking.JobRun(config, name="job[seed=0]", tags={"rule": "job", "mlflow.user": "tester"})
    run.log_params({"model": {"hidden": 8, "layers": [1, 2]}, "threads": 1})
    run.log_inputs({"data": ("data/x.npz", "0123abcd")})
    run.log_dict({"model": {"hidden": 8}}, "config.json")
    run.log_metrics([("loss", 0.5, 0), ("loss", 0.25, 1), ("accuracy", 0.75, 0), ("gap", float("nan"), 0)])
    made = {tracking.produced_key("out.txt"): tracking.content_sha256("out.txt")}
    run.set_tags({"output.out.path": "out.txt", **made})
    run.log_artifact("out.txt", "out")
    run.log_dict({"a.txt": "ff00"}, "_manifests/folder.json")
    run.finish("FINISHED")
    print(json.dumps({"run_id": run.run_id, "mlflow_imported": "mlflow" in sys.modules}))
    """
)


def _job(cwd, **env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", JOB, json.dumps(CONFIG)],
        cwd=cwd,
        env=tool_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _record(store_dir, run_id) -> dict:
    """Everything MLflow holds about a run, minus what differs between any two runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store_dir}/mlflow.db")
    run = client.get_run(run_id)
    artifacts = {}
    for folder in ("", "out", "_manifests"):
        for item in client.list_artifacts(run_id, folder or None):
            if not item.is_dir:
                path = client.download_artifacts(run_id, item.path, str(store_dir / "dl" / run_id))
                artifacts[item.path] = open(path, "rb").read()
    history = {
        key: [
            (m.value if m.value == m.value else "nan", m.step) for m in client.get_metric_history(run_id, key)
        ]
        for key in run.data.metrics
    }
    return {
        "status": run.info.status,
        "user": run.info.user_id,
        "name": run.info.run_name,
        "params": run.data.params,
        "tags": {k: v for k, v in run.data.tags.items()},
        "metrics": history,
        "inputs": sorted(
            (d.dataset.name, d.dataset.digest, d.dataset.source, [(t.key, t.value) for t in d.tags])
            for d in run.inputs.dataset_inputs
        ),
        "artifacts": {k: json.loads(v) if k.endswith(".json") else v for k, v in artifacts.items()},
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A local server over a fresh SQLite store, started as the workflow starts it."""
    root = tmp_path_factory.mktemp("served")
    with served_store(root, CONFIG) as (url, owner):
        yield root, url, owner


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2):
            return True
    except OSError:
        return False


def test_a_job_logs_the_same_record_over_rest_without_importing_mlflow(server, tmp_path):
    root, url, _ = server
    served = _job(root, MLFLOW_TRACKING_URI=url)
    assert served["mlflow_imported"] is False

    direct_dir = tmp_path / "direct"
    direct_dir.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from taskabs.pipeline import tracking; "
            "tracking.prepare(json.loads(sys.argv[1]))",
            json.dumps(CONFIG),
        ],
        cwd=direct_dir,
        env=tool_env(),
        check=True,
    )
    direct = _job(direct_dir)
    assert direct["mlflow_imported"] is True

    over_rest, through_client = _record(root, served["run_id"]), _record(direct_dir, direct["run_id"])
    assert over_rest == through_client
    assert over_rest["status"] == "FINISHED" and over_rest["metrics"]["loss"] == [(0.5, 0), (0.25, 1)]
    assert over_rest["artifacts"]["out/out.txt"] == b"bytes of an output"


def test_a_job_finds_the_run_that_made_its_input_over_rest(server):
    from taskabs.pipeline import tracking
    from taskabs.pipeline.stores import RestStore

    root, url, _ = server
    _job(root, MLFLOW_TRACKING_URI=url)
    store = RestStore(url)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert tracking.verify_against_producer(CONFIG, "out.txt", store) is None
        (root / "out.txt").write_text("bytes of an output, edited")
        problem = tracking.verify_against_producer(CONFIG, "out.txt", store)
    finally:
        os.chdir(cwd)
    assert problem and "recorded by run" in problem and "rule job" in problem


def test_the_server_stops_when_the_process_that_started_it_is_killed(server):
    _, url, owner = server
    assert _answers(url)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait(timeout=10)
    deadline = time.monotonic() + 30
    while _answers(url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _answers(url), "the tracking server outlived the process that started it"
