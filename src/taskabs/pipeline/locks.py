"""Is a Snakemake lock held by a live run? Evidence that holds across hosts: heartbeats.

Every Snakemake process that runs jobs in a directory (the Snakefile calls :func:`start_heartbeat`)
writes ``.snakemake/taskabs-heartbeats/<host>.<pid>.json`` with its host, boot id, PID namespace,
pid and start time, and rewrites it every :data:`INTERVAL` seconds until it exits. A lock is stale
only if every heartbeat is provably dead: its process is gone from this very machine (same host,
boot and PID namespace), or it has not been refreshed for :data:`STALE_AFTER` seconds (a process
on another host or container that stopped). Without any heartbeat nobody can tell, and nothing is
unlocked: the message says what to check and what to run.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEARTBEATS = Path(".snakemake") / "taskabs-heartbeats"
LOCKS = Path(".snakemake") / "locks"
INTERVAL = 10.0
STALE_AFTER = 120.0  # 12 missed beats: also absorbs clock skew between hosts on shared storage
NO_HEARTBEAT_ENV = "TASKABS_NO_HEARTBEAT"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def heartbeat_path(root: Path, identity: dict[str, Any]) -> Path:
    return root / HEARTBEATS / f"{identity['host']}.{identity['pid']}.json"


def start_heartbeat(workflow: Any = None, root: str | os.PathLike = ".") -> Path | None:
    """Start the heartbeat of this process (a daemon thread); None where it is not needed:
    dry runs, ``--touch``, jobs re-parsing the workflow on a cluster node, the audit's DAG dump."""
    from taskabs.pipeline.tracking import process_identity

    if os.environ.get(NO_HEARTBEAT_ENV):
        return None
    if workflow is not None:
        try:
            if workflow.dryrun or workflow.touch or workflow.remote_exec or workflow.subprocess_exec:
                return None
        except Exception:
            pass
    root = Path(root).resolve()
    identity = process_identity()
    path = heartbeat_path(root, identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**identity, "directory": str(root)}

    def beat() -> None:
        _write_atomic(path, json.dumps({**record, "time": time.time()}))

    beat()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(INTERVAL):
            try:
                beat()
            except OSError:
                pass

    threading.Thread(target=loop, name="taskabs-heartbeat", daemon=True).start()

    def end() -> None:
        stop.set()
        path.unlink(missing_ok=True)

    atexit.register(end)
    return path


@dataclass(frozen=True)
class Heartbeat:
    path: Path
    record: dict[str, Any]
    age: float  # seconds since last written (file time, this host's clock)
    alive: bool | None  # from the process table where this machine can tell

    @property
    def live(self) -> bool:
        """A live run may hold the lock: the process runs, or it may and has beaten recently."""
        if self.alive is not None:
            return self.alive
        return self.age < STALE_AFTER

    def describe(self) -> str:
        r = self.record
        state = {True: "running", False: "gone", None: "on another host or container"}[self.alive]
        return f"host {r.get('host')} pid {r.get('pid')} ({state}, heartbeat {self.age:.0f} s ago)"


def heartbeats(root: Path) -> list[Heartbeat]:
    from taskabs.pipeline.tracking import process_alive

    found = []
    for path in sorted((root / HEARTBEATS).glob("*.json")):
        try:
            age = time.time() - path.stat().st_mtime
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being rewritten, or removed meanwhile
        found.append(Heartbeat(path, record, age, process_alive(record)))
    return found


def locked(root: Path) -> bool:
    locks = root / LOCKS
    return locks.is_dir() and any(locks.iterdir())


def stale_verdict(root: Path) -> tuple[bool, str]:
    """(True, why) if the locks can be removed, else (False, what to do)."""
    beats = heartbeats(root)
    live = [b for b in beats if b.live]
    if live:
        return False, (
            "a workflow may be running in this directory: "
            + "; ".join(b.describe() for b in live)
            + ". Not unlocking. Wait for it to finish; if you are sure it is gone (e.g. its host "
            "crashed), remove its heartbeat file(s) under "
            f"{HEARTBEATS} and run `taskabs unlock-stale` again"
        )
    if beats:
        return True, "every run that held a lock is gone: " + "; ".join(b.describe() for b in beats)
    return False, (
        "Snakemake's lock has no heartbeat: it was taken by a run that did not record one (an older "
        "version, or one started another way), and nothing here tells whether it still runs, "
        "possibly on another host sharing this directory. Check every host that uses this "
        "directory; if no snakemake runs there, run `taskabs unlock-stale --force`"
    )
