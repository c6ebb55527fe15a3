"""The ``taskabs`` console script: housekeeping around the Snakemake pipeline."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def snakemake_running_here(root: Path) -> list[int]:
    """PIDs of other Snakemake processes working in ``root``."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if (
                proc.info["pid"] != os.getpid()
                and "snakemake" in cmd
                and "--unlock" not in cmd
                and Path(proc.info["cwd"] or "/").resolve() == root.resolve()
            ):
                pids.append(proc.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def unlock_stale(args) -> int:
    """Remove Snakemake's lock left by a killed run, unless a run is really going on."""
    root = Path(args.directory)
    if not (root / ".snakemake" / "locks").is_dir() or not any((root / ".snakemake" / "locks").iterdir()):
        return 0
    if pids := snakemake_running_here(root):
        print(f"snakemake is running in {root} (pids {pids}); not unlocking", file=sys.stderr)
        return 1
    return subprocess.run([sys.executable, "-m", "snakemake", "--unlock", "--quiet"], cwd=root).returncode


def settle_times(paths: list[Path], *, when: float | None = None) -> int:
    """Give every file and directory under ``paths`` one modification time; returns how many.

    ``dvc pull`` and ``dvc checkout`` write files in no particular order, and Snakemake re-runs a
    job whose input is newer than any of its outputs (logs and benchmark files included) whatever
    its rerun triggers say.  With one time for all, no input is newer than any output, while
    config, code and upstream re-runs still propagate (they do not depend on file times).
    Symbolic links themselves are left alone.
    """
    when = time.time() if when is None else when
    count = 0
    for root in paths:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                os.utime(path, (when, when))
                count += 1
    return count


def settle(args) -> int:
    count = settle_times([Path(p) for p in args.paths])
    print(f"settled the times of {count} files and directories under {' '.join(args.paths)}")
    return 0


def audit(args) -> int:
    """Check every result against its MLflow run, git, dvc.lock and the resolved config."""
    from taskabs.pipeline.audit import DEFAULT_CONFIGFILES
    from taskabs.pipeline.audit import main as run_audit

    return run_audit(args.root, args.configfile or list(DEFAULT_CONFIGFILES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskabs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("unlock-stale", help="clear the lock of a killed Snakemake run")
    p.add_argument("--directory", default=".")
    p.set_defaults(func=unlock_stale)
    p = sub.add_parser(
        "settle-times",
        help="one modification time for every file under the paths "
        "(after dvc pull/checkout, so Snakemake re-runs nothing)",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=settle)
    p = sub.add_parser(
        "audit",
        help="trace every file in results/ to its run, code, data and config; exit 1 naming each mismatch",
    )
    p.add_argument(
        "--configfile",
        action="append",
        metavar="FILE",
        help="config file the results were made with, as given to snakemake, relative to --root "
        "(repeatable; default config/config.yaml)",
    )
    p.add_argument("--root", default=".", help="the project directory (default: the current one)")
    p.set_defaults(func=audit)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
