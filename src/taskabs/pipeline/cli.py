"""The ``taskabs`` console script: housekeeping around the Snakemake pipeline."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def unlock_stale(args) -> int:
    """Remove Snakemake's lock left by a killed run, never one a live run (on any host) may hold.

    The evidence is the heartbeat every running workflow refreshes (taskabs.pipeline.locks), not
    this machine's process table: another host, container or PID namespace sharing the directory
    is invisible there.
    """
    from taskabs.pipeline import locks

    root = Path(args.directory).resolve()
    if not locks.locked(root):
        return 0
    stale, why = locks.stale_verdict(root)
    if not stale and not args.force:
        print(f"unlock-stale: {why}", file=sys.stderr)
        return 1
    print(f"unlock-stale: {why if stale else 'forced'}; removing the lock", file=sys.stderr)
    for beat in locks.heartbeats(root):
        if not beat.live or args.force:
            beat.path.unlink(missing_ok=True)
    env = {**os.environ, locks.NO_HEARTBEAT_ENV: "1"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--unlock", "--quiet"], cwd=root, env=env
    ).returncode


def check_config(args) -> int:
    """Each config file parses as a YAML mapping; problems named with file, line and column."""
    from taskabs.pipeline.config_checks import check_yaml_files

    problems = check_yaml_files(args.files)
    for problem in problems:
        print(f"config: {problem}", file=sys.stderr)
    return 1 if problems else 0


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

    until = getattr(args, "until", None) or []
    if until:
        return run_audit(args.root, args.configfile or list(DEFAULT_CONFIGFILES), until=until)
    return run_audit(args.root, args.configfile or list(DEFAULT_CONFIGFILES))


def verify(args) -> int:
    """Check every file under data/ and results/ against the run that made it."""
    from taskabs.pipeline.audit import DEFAULT_CONFIGFILES, verify_main

    configfiles = args.configfile or list(DEFAULT_CONFIGFILES)
    return verify_main(args.root, configfiles, repair=args.repair, pinned_only=args.pinned_only)


def rocrate(args) -> int:
    """Write results/ro-crate-metadata.json: a Workflow Run RO-Crate of the reproduction."""
    from taskabs.pipeline.rocrate import main as write_crate

    return write_crate(args.root, args.configfile or [], until=args.until or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskabs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("unlock-stale", help="clear the lock of a killed Snakemake run")
    p.add_argument("--directory", default=".")
    p.add_argument(
        "--force",
        action="store_true",
        help="unlock even without evidence that the run is gone (after checking every host yourself)",
    )
    p.set_defaults(func=unlock_stale)
    p = sub.add_parser("check-config", help="each config file is YAML (errors name file, line and column)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=check_config)
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
    p.add_argument(
        "--until", nargs="+", metavar="RULE", help="the results of a partial run (snakemake --until RULE...)"
    )
    p.set_defaults(func=audit)
    p = sub.add_parser(
        "verify",
        help="check every file under data/ and results/ against the SHA-256 its producing run recorded; "
        "exit 1 naming each file that fails (run before anything versions them)",
    )
    p.add_argument("--configfile", action="append", metavar="FILE", help="config file (repeatable)")
    p.add_argument("--root", default=".", help="the project directory (default: the current one)")
    p.add_argument(
        "--repair",
        action="store_true",
        help="set failing outputs aside under .snakemake/set-aside/ so that the next run re-makes them",
    )
    p.add_argument(
        "--pinned-only",
        action="store_true",
        help="check only fetched and gathered files against their pins (no MLflow needed)",
    )
    p.set_defaults(func=verify)
    p = sub.add_parser(
        "rocrate",
        help="write results/ro-crate-metadata.json, a Workflow Run RO-Crate (files, runs, verdicts, audit)",
    )
    p.add_argument("--configfile", action="append", metavar="FILE", help="config file (repeatable)")
    p.add_argument("--root", default=".", help="the project directory (default: the current one)")
    p.add_argument("--until", nargs="+", metavar="RULE", help="the results of a partial run")
    p.set_defaults(func=rocrate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
