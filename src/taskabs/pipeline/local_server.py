"""A tracking server over the local store, for the lifetime of one local workflow run.

Every job is a fresh process, and importing mlflow costs a job about 2.5 s of CPU; a job talking
to a server needs only the standard library (:class:`taskabs.pipeline.stores.RestStore`). So a
local run over a SQLite store starts ``mlflow server`` on that same store (127.0.0.1, a free port)
before the first job and points the jobs at it through ``MLFLOW_TRACKING_URI``. The records are
the same as when jobs open the file themselves; artifacts stay where the store keeps them.

The server lives exactly as long as the Snakemake process: it runs under a small watcher
(``python -m taskabs.pipeline.local_server``, in its own process group) that holds the read end of
a pipe whose write end only Snakemake has. However Snakemake ends, ``kill -9`` included, the pipe
closes and the watcher stops the server's whole process group. Config ``tracking.local_server:
false`` turns it off (jobs then open the store themselves).
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

LOG = Path(".taskabs/tracking-server.log")
START_TIMEOUT = 120.0  # seconds; importing the server takes ~10 s on a busy 2-core machine


def wanted(config: dict, workflow: Any) -> bool:
    """Only for a real local run over a SQLite store that the environment does not redirect."""
    from taskabs.pipeline.tracking import tracking_uri

    if not config.get("tracking", {}).get("local_server", True):
        return False
    if not tracking_uri(config).startswith("sqlite:"):
        return False
    try:
        return bool(
            workflow.local_exec
            and not (workflow.dryrun or workflow.touch or workflow.remote_exec or workflow.subprocess_exec)
        )
    except AttributeError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(config: dict) -> str:
    """Start the server over the config's SQLite store; set and return its URL for the jobs."""
    from taskabs.pipeline.tracking import tracking_uri

    backend = tracking_uri(config)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    read_end, write_end = os.pipe()  # both non-inheritable; the watcher gets the read end only
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("w") as log:
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                __name__,
                "--backend",
                backend,
                "--port",
                str(port),
                "--fd",
                str(read_end),
            ],
            pass_fds=(read_end,),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    os.close(read_end)

    def stop() -> None:
        os.close(write_end)  # the watcher sees EOF and stops the server
        try:
            watcher.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(watcher.pid, signal.SIGKILL)

    deadline = time.monotonic() + START_TIMEOUT
    while not _healthy(url):
        if watcher.poll() is not None or time.monotonic() > deadline:
            stop()
            tail = LOG.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the local tracking server over {backend} did not start (log {LOG}):\n{tail}")
        time.sleep(0.3)
    atexit.register(stop)
    os.environ["MLFLOW_TRACKING_URI"] = url
    return url


def _serve(backend: str, port: int, fd: int) -> int:
    """The watcher: run ``mlflow server`` in this process group until the pipe closes."""
    artifacts = str(Path("mlruns").resolve())  # where a client opening the store directly puts them
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            backend,
            "--default-artifact-root",
            artifacts,
            "--no-serve-artifacts",  # jobs on this machine write artifacts where the store says
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        while os.read(fd, 1):  # returns b"" once every write end is closed
            pass
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)  # uvicorn's workers too, and this watcher
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    return _serve(args.backend, args.port, args.fd)


if __name__ == "__main__":
    sys.exit(main())
