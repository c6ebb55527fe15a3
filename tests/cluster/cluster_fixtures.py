"""Bring up a local SLURM cluster and a PostgreSQL-backed MLflow server from tests.

Thin wrappers around ``scripts/local-slurm.sh`` and ``scripts/tracking-server.sh`` plus
module-scoped pytest fixtures. To reuse them in another test module::

    from cluster_fixtures import local_slurm, tracking_server, tracking_server_launch  # noqa: F401

The scripts exit with code 3 when the machine cannot host them (not root, not Debian, ...);
the fixtures then skip with the script's own reason. Each fixture's teardown stops what it
started and fails if any process it started is still alive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_SLURM_SCRIPT = REPO_ROOT / "scripts" / "local-slurm.sh"
TRACKING_SCRIPT = REPO_ROOT / "scripts" / "tracking-server.sh"
UNSUPPORTED_EXIT = 3

# Environment variables the scripts put on every process they start (see the scripts).
SLURM_MARK = "TASKABS_LOCAL_SLURM"
TRACKING_MARK = "TASKABS_TRACKING"


class Unsupported(RuntimeError):
    """The machine cannot host the service; the message is the script's reason."""


@dataclass(frozen=True)
class LocalSlurm:
    state_dir: Path

    @property
    def slurm_conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment plus SLURM_CONF, for sbatch/squeue/snakemake."""
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf), **extra}


@dataclass(frozen=True)
class TrackingServer:
    state_dir: Path
    uri: str  # http://127.0.0.1:PORT, for MLFLOW_TRACKING_URI
    backend_store_uri: str  # postgresql://mlflow@127.0.0.1:PORT/mlflow


def _script_env(state_var: str, state_dir: Path) -> dict[str, str]:
    return {**os.environ, state_var: str(state_dir)}


def _raise_for(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode == UNSUPPORTED_EXIT:
        raise Unsupported(proc.stderr.strip() or f"{what}: unsupported here")
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr}")


def start_local_slurm(state_dir: Path, *, timeout: float = 600) -> LocalSlurm:
    """Run ``local-slurm.sh up`` (which may apt-get install slurm-wlm and munge)."""
    proc = subprocess.run(
        ["bash", str(LOCAL_SLURM_SCRIPT), "up"],
        env=_script_env("TASKABS_SLURM_DIR", state_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    _raise_for(proc, "local-slurm.sh up")
    return LocalSlurm(state_dir)


def stop_local_slurm(cluster: LocalSlurm, *, timeout: float = 120) -> None:
    proc = subprocess.run(
        ["bash", str(LOCAL_SLURM_SCRIPT), "down"],
        env=_script_env("TASKABS_SLURM_DIR", cluster.state_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != UNSUPPORTED_EXIT:  # unsupported: nothing could have been started
        _raise_for(proc, "local-slurm.sh down")


class PendingTrackingServer:
    """``tracking-server.sh up`` running in the background; ``wait()`` returns the server.

    Starting it early lets its ~10-30 s start-up overlap with other tests.
    """

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._out = (state_dir / "up.stdout").open("w+")
        self._err = (state_dir / "up.stderr").open("w+")
        self._proc = subprocess.Popen(
            ["bash", str(TRACKING_SCRIPT), "up"],
            env=_script_env("TASKABS_TRACKING_DIR", state_dir),
            stdout=self._out,
            stderr=self._err,
            text=True,
        )

    def wait(self, timeout: float = 600) -> TrackingServer:
        returncode = self._proc.wait(timeout=timeout)
        self._err.seek(0)
        _raise_for(subprocess.CompletedProcess([], returncode, "", self._err.read()), "tracking-server.sh up")
        return TrackingServer(
            state_dir=self.state_dir,
            uri=(self.state_dir / "uri").read_text().strip(),
            backend_store_uri=(self.state_dir / "backend-uri").read_text().strip(),
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.wait(timeout=600)
        self._out.close()
        self._err.close()


def start_tracking_server(state_dir: Path, *, timeout: float = 600) -> TrackingServer:
    """Run ``tracking-server.sh up`` (which may apt-get install postgresql) and wait."""
    pending = PendingTrackingServer(state_dir)
    try:
        return pending.wait(timeout)
    finally:
        pending.close()


def stop_tracking_server(state_dir: Path, *, timeout: float = 120) -> None:
    proc = subprocess.run(
        ["bash", str(TRACKING_SCRIPT), "down"],
        env=_script_env("TASKABS_TRACKING_DIR", state_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != UNSUPPORTED_EXIT:  # unsupported: nothing could have been started
        _raise_for(proc, "tracking-server.sh down")


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    start: int  # clock ticks since boot: tells a process from a later one with the same PID
    command: str
    marked: bool
    cwd: str  # "" if unreadable


def _read_proc(pid: int, mark: bytes) -> _Proc | None:
    """One live (non-zombie) process, or None if it is gone or unreadable."""
    base = Path("/proc") / str(pid)
    try:
        stat = (base / "stat").read_text()
        # Fields after the parenthesised command name: state, ppid, ..., starttime (22nd overall).
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            return None
        command = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        try:
            marked = mark in (base / "environ").read_bytes().split(b"\0")
        except OSError:
            marked = False
        try:
            cwd = os.readlink(base / "cwd")
        except OSError:
            cwd = ""
    except (OSError, ValueError, IndexError):
        return None
    return _Proc(pid, int(fields[1]), int(fields[19]), command, marked, cwd)


def service_processes(state_dir: Path, mark_var: str) -> dict[int, _Proc]:
    """Processes started for ``state_dir`` and all their descendants, by PID.

    The scripts put ``mark_var=state_dir`` in the environment of every daemon they start
    (slurmctld, slurmd, munged, postgres, mlflow); children usually inherit it. Those that
    overwrite it (PostgreSQL backends write their status over it) are found as descendants, or,
    orphaned, by their working directory (PostgreSQL's data directory, SLURM's log directory).
    """
    mark = f"{mark_var}={state_dir}".encode()
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            if (proc := _read_proc(int(entry.name), mark)) is not None:
                table[proc.pid] = proc
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: dict[int, _Proc] = {}
    inside = str(state_dir).rstrip("/") + "/"
    stack = [
        proc.pid
        for proc in table.values()
        if proc.marked or str(state_dir) in proc.command or (proc.cwd + "/").startswith(inside)
    ]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found[pid] = table[pid]
            stack.extend(children.get(pid, []))
    return found


def leftover_processes(
    before: dict[int, _Proc], state_dir: Path, mark_var: str, *, timeout: float = 10
) -> list[str]:
    """Which of ``before`` (or newly marked processes) are still alive after ``timeout`` s."""
    mark = f"{mark_var}={state_dir}".encode()
    deadline = time.monotonic() + timeout
    while True:
        left = {pid: proc for pid, proc in service_processes(state_dir, mark_var).items()}
        for pid, proc in before.items():
            now = _read_proc(pid, mark)
            if now is not None and now.start == proc.start:
                left[pid] = now
        if not left or time.monotonic() > deadline:
            return [f"{pid}: {proc.command}" for pid, proc in sorted(left.items())]
        time.sleep(0.2)


def stop_and_list_leftovers(stop, state_dir: Path, mark_var: str) -> list[str]:
    """Call ``stop()``; return the processes started for ``state_dir`` that outlive it."""
    before = service_processes(state_dir, mark_var)
    try:
        stop()
    finally:
        left = leftover_processes(before, state_dir, mark_var)
    return left


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """A running single-node SLURM cluster; skipped with the reason where it cannot run."""
    state_dir = tmp_path_factory.mktemp("slurm-state")
    cluster = LocalSlurm(state_dir)
    try:
        start_local_slurm(state_dir)
    except Unsupported as reason:
        pytest.skip(f"local SLURM cluster unavailable: {reason}")
    except BaseException:  # `up` stops what it started when it fails: check that it did
        left = stop_and_list_leftovers(lambda: stop_local_slurm(cluster), state_dir, SLURM_MARK)
        assert not left, f"local-slurm.sh up failed and left processes behind: {left}"
        raise
    try:
        yield cluster
    finally:
        left = stop_and_list_leftovers(lambda: stop_local_slurm(cluster), state_dir, SLURM_MARK)
        assert not left, f"local-slurm.sh down left processes behind: {left}"


@pytest.fixture(scope="module")
def tracking_server_launch() -> Iterator[PendingTrackingServer]:
    """Starts the tracking server in the background; request early to overlap its start-up."""
    # Not under pytest's basetemp: that is private to root, and PostgreSQL runs as `postgres`.
    state_dir = Path(tempfile.mkdtemp(prefix="taskabs-tracking-"))
    pending = PendingTrackingServer(state_dir)
    try:
        yield pending
    finally:
        try:
            pending.close()
            left = stop_and_list_leftovers(lambda: stop_tracking_server(state_dir), state_dir, TRACKING_MARK)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
        assert not left, f"tracking-server.sh down left processes behind: {left}"


@pytest.fixture(scope="module")
def tracking_server(tracking_server_launch: PendingTrackingServer) -> TrackingServer:
    """A running MLflow server backed by PostgreSQL; skipped with the reason where it cannot run."""
    try:
        return tracking_server_launch.wait()
    except Unsupported as reason:
        pytest.skip(f"tracking server unavailable: {reason}")
