"""Shared fixtures: a throw-away copy of the project for end-to-end runs of the real tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def project_files() -> list[str]:
    """Files a clean clone would have: tracked plus new files git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def copy_project(dest: Path) -> Path:
    """A fresh git repository holding the project's files, with one commit."""
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@localhost",
    }
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "snapshot"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: the venv's tools first, the local SQLite store."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TASKABS_PARENT_RUN_ID")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["CI"] = "true"
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, *, check: bool = True, timeout: float = 600, **env: str):
    result = subprocess.run(
        cmd, cwd=cwd, env=tool_env(**env), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def snakemake(cwd: Path, *args: str, config: str = "config/smoke.yaml", check: bool = True, **env: str):
    # --configfile takes several values: targets and options go before it
    return run(
        [str(BIN / "snakemake"), *args, "--workflow-profile", "profiles/default", "--configfile", config],
        cwd,
        check=check,
        **env,
    )


# Creates the store, starts the local server as the workflow's onstart does, prints its URL and
# holds it until stdin closes (the test's way to end its owner, or SIGKILL it).
_SERVE = textwrap.dedent(
    """
    import json, sys
    from taskabs.pipeline import local_server, tracking
    config = json.loads(sys.argv[1])
    tracking.prepare(config)
    print(local_server.start(config), flush=True)
    sys.stdin.read()
    """
)


@contextmanager
def served_store(root: Path, config: dict) -> Iterator[tuple[str, subprocess.Popen]]:
    """(URL, owner process) of a local tracking server over ``config``'s SQLite store in ``root``."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _SERVE, json.dumps(config)],
        cwd=root,
        env=tool_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = owner.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    try:
        yield url, owner
    finally:
        if owner.poll() is None:
            owner.stdin.close()
            owner.wait(timeout=60)


@pytest.fixture(scope="session")
def project_copy(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist (``make test``: ``-n 2``) hands out whole modules, and the cluster modules as one.

    An end-to-end module builds its run once in a module fixture, so its tests stay together; the
    cluster modules share one SLURM cluster and one PostgreSQL on fixed ports, so they take turns
    on one worker. (Not ``--dist loadgroup``: under pytest 9 its marks do not change a node id.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/cluster" if path.startswith("tests/cluster/") else path

    return ByModule(config, log)
