"""MLflow's own authentication (``mlflow server --app-name basic-auth``) in front of the record.

A real server on a free port, with SQLite stores in a tmp dir: a request without credentials (or
with a wrong password) is refused; a user created through MLflow's auth API runs a real tracked job
(:func:`taskabs.pipeline.jobs.run_job`) with ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
set, and the run is there, FINISHED, with its metric. docs/cluster.md says how to turn it on.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
flask_wtf = pytest.importorskip(
    "flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (pinned in pyproject.toml; make venv)"
)

ADMIN = "admin"
JOB_USER = "pipeline"
# One tracked job, as a Snakemake job runs it, in a process whose environment holds the credentials.
JOB = """
import json, sys
from pathlib import Path
from taskabs.pipeline import tracking
from taskabs.pipeline.jobs import Job, run_job

config = json.loads(sys.argv[1])
tracking.prepare(config)
Path("data").mkdir(exist_ok=True)
Path("data/input.txt").write_text("input")
def stage(job):
    job.output["metrics"].write_text(json.dumps({"accuracy": 0.75}))
    return {"accuracy": 0.75}
job = Job(rule="auth_job", input={"x": Path("data/input.txt")}, output={"metrics": Path("results/m.json")},
          config={"lr": 0.1}, wildcards={})
Path("results").mkdir(exist_ok=True)
run_job(job, stage, config)
print("RUN", job.run.run_id)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, *, user: str | None = None, password: str = "", body: dict | None = None):
    """(HTTP status, parsed JSON or None) of a GET, or a POST of ``body``."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text.strip().startswith("{") else None
    except urllib.error.HTTPError as error:
        return error.code, None
    except urllib.error.URLError:  # not listening (yet)
        return 0, None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, admin password, work dir) of a basic-auth MLflow server; stopped afterwards."""
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    work = tmp_path_factory.mktemp("auth")
    password = secrets.token_urlsafe(18)
    ini = work / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{work / 'auth.db'}\nadmin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    ini.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,  # read once, when the user store is created
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),  # CSRF protection of the auth pages
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (work / "server.log").open("w")
    process = subprocess.Popen(
        [mlflow, "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port)]
        + [
            "--backend-store-uri",
            f"sqlite:///{work / 'mlflow.db'}",
            "--artifacts-destination",
            str(work / "art"),
        ]
        + ["--workers", "1"],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while request(f"{url}/health")[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(work / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, password, work
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
        log.close()


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=10"


def test_a_request_without_credentials_or_with_a_wrong_password_is_refused(server):
    url, password, _ = server
    assert request(url + SEARCH)[0] == 401
    assert request(url + SEARCH, user=ADMIN, password=password + "x")[0] == 401
    assert request(url + SEARCH, user=ADMIN, password=password)[0] == 200


def test_a_job_with_tracking_credentials_logs_its_run(server, tmp_path):
    url, password, _ = server
    job_password = secrets.token_urlsafe(18)
    status, _ = request(
        url + "/api/2.0/mlflow/users/create",
        user=ADMIN,
        password=password,
        body={"username": JOB_USER, "password": job_password},
    )
    assert status == 200
    config = {"tracking": {"uri": url, "experiment": "auth-test"}, "device": "cpu"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    without = subprocess.run(
        [sys.executable, "-c", JOB, json.dumps(config)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert without.returncode != 0, "a job without credentials reached the record"
    env |= {"MLFLOW_TRACKING_USERNAME": JOB_USER, "MLFLOW_TRACKING_PASSWORD": job_password}
    done = subprocess.run(
        [sys.executable, "-c", JOB, json.dumps(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    [run_id] = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("RUN ")]
    status, found = request(f"{url}/api/2.0/mlflow/runs/get?run_id={run_id}", user=ADMIN, password=password)
    assert status == 200
    run = found["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]}["accuracy"] == 0.75
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["rule"] == "auth_job"
    # MLflow gave the experiment to the user who created it: the job ran as that user
    status, granted = request(
        f"{url}/api/3.0/mlflow/users/permissions/list?username={JOB_USER}", user=ADMIN, password=password
    )
    experiment = run["info"]["experiment_id"]
    rows = [r for r in granted["permissions"] if str(experiment) in json.dumps(r)]
    assert status == 200 and rows and "MANAGE" in json.dumps(rows), granted
