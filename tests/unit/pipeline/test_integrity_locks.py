"""`taskabs unlock-stale` never removes a lock a live run may hold, on this host or another.

Staleness comes from heartbeats (taskabs.pipeline.locks), with real processes and real lock files:
a live heartbeat from another host (or container) blocks unlocking until it goes stale; a process
that is gone from this machine unlocks at once; no heartbeat at all is a doubt, reported with what
to do; an unrelated process whose command line mentions snakemake blocks nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskabs.pipeline import cli, locks
from taskabs.pipeline.tracking import process_identity


def lock(root: Path) -> Path:
    path = root / locks.LOCKS / "0.input.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("some/file\n")
    return path


def beat(root: Path, record: dict, *, age: float = 0.0) -> Path:
    path = root / locks.HEARTBEATS / f"{record['host']}.{record['pid']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def unlock(root: Path, *extra: str) -> int:
    return cli.main(["unlock-stale", "--directory", str(root), *extra])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Snakefile").write_text("rule all:\n    input: []\n")
    return tmp_path


def test_a_fresh_heartbeat_from_another_host_blocks_unlocking(project, capsys):
    held = lock(project)
    beat(project, {**process_identity(), "host": "node-7", "pid": 4242})
    assert unlock(project) == 1
    assert held.exists()
    err = capsys.readouterr().err
    assert "host node-7 pid 4242" in err and "Not unlocking" in err


def test_a_heartbeat_from_another_host_that_stopped_long_ago_is_stale(project):
    held = lock(project)
    heartbeat = beat(
        project, {**process_identity(), "host": "node-7", "pid": 4242}, age=locks.STALE_AFTER + 5
    )
    assert unlock(project) == 0
    assert not held.exists() and not heartbeat.exists()


def test_a_live_process_here_blocks_unlocking_however_old_its_heartbeat(project):
    held = lock(project)
    beat(project, process_identity(), age=locks.STALE_AFTER * 10)  # this very process: alive
    assert unlock(project) == 1 and held.exists()


def test_a_process_gone_from_this_machine_unlocks_at_once(project):
    held = lock(project)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(child.pid)
    child.wait()
    heartbeat = beat(project, identity)  # fresh, but its process is gone
    assert unlock(project) == 0
    assert not held.exists() and not heartbeat.exists()


def test_a_pid_reused_by_another_process_is_not_the_run(project):
    held = lock(project)
    beat(project, {**process_identity(), "start": process_identity()["start"] - 1000})
    assert unlock(project) == 0 and not held.exists()


def test_no_heartbeat_is_a_doubt_reported_with_what_to_do(project, capsys):
    held = lock(project)
    assert unlock(project) == 1 and held.exists()
    assert "taskabs unlock-stale --force" in capsys.readouterr().err
    assert unlock(project, "--force") == 0 and not held.exists()


def test_a_process_that_only_mentions_snakemake_blocks_nothing(project):
    held = lock(project)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(child.pid)
    child.wait()
    beat(project, identity)
    tail = subprocess.Popen(["sleep", "30", "snakemake"], cwd=project, stderr=subprocess.DEVNULL)
    try:
        assert unlock(project) == 0 and not held.exists()
    finally:
        tail.kill()
        tail.wait()


def test_the_heartbeat_is_refreshed_and_removed_at_exit(tmp_path):
    script = (
        "import sys, time\n"
        "from taskabs.pipeline import locks\n"
        "locks.INTERVAL = 0.2\n"
        "path = locks.start_heartbeat(root=sys.argv[1])\n"
        "print(path, flush=True)\n"
        "time.sleep(1.5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    path = Path(proc.stdout.readline().strip())
    first = path.stat().st_mtime
    time.sleep(1.0)
    assert path.stat().st_mtime > first, "the heartbeat was not refreshed"
    record = json.loads(path.read_text())
    assert record["pid"] == proc.pid and record["host"] and record["boot_id"] is not None
    proc.wait(timeout=30)
    assert not path.exists(), "the heartbeat outlived its process"


def test_an_exited_process_not_yet_reaped_counts_as_dead():
    """A zombie keeps its pid and start time until its parent reaps it; it runs nothing."""
    import psutil

    from taskabs.pipeline.tracking import process_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    identity = process_identity(child.pid)
    assert process_alive(identity) is True
    deadline = time.monotonic() + 30
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert process_alive(identity) is False
    finally:
        child.wait()
