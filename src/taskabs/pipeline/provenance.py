"""Where a result came from: code version, data hashes, config hash, host, device."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from pathlib import Path

from taskabs.hashing import canonical_json, md5_file, sha256_file

# Snakemake writes this marker into every directory() output after its job has ended: it is not
# part of what the job made, so no listing, digest or manifest counts it.
SNAKEMAKE_MARKERS = frozenset({".snakemake_timestamp"})


def tree_files(directory: str | os.PathLike) -> list[Path]:
    """Every file under ``directory`` (symbolic links to files included), sorted; Snakemake's
    own markers left out."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.name not in SNAKEMAKE_MARKERS)


def tree_digest(directory: str | os.PathLike, file_hash=md5_file) -> str:
    """One hash over a directory: ``file_hash`` of the canonical [[relpath, hash], ...] listing.

    With :func:`~taskabs.hashing.md5_file` it is computed from DVC's record as well (the audit
    does), with :func:`~taskabs.hashing.sha256_file` it is the SHA-256 a run records for a
    directory output.
    """
    return listing_digest(tree_listing(directory, file_hash), md5=file_hash is md5_file)


def tree_listing(directory: str | os.PathLike, file_hash=sha256_file) -> dict[str, str]:
    """{path relative to ``directory``: hash} of every file under it."""
    base = Path(directory)
    return {str(p.relative_to(base)): file_hash(p) for p in tree_files(base)}


def listing_digest(listing: dict[str, str], *, md5: bool = False) -> str:
    text = canonical_json(sorted(listing.items())).encode()
    return (hashlib.md5 if md5 else hashlib.sha256)(text).hexdigest()


def content_md5(path: str | os.PathLike) -> str:
    """MD5 of a file, or :func:`tree_digest` of a directory."""
    return tree_digest(path) if Path(path).is_dir() else md5_file(path)


def data_hash(paths: list[str | os.PathLike]) -> str:
    """One hash over the MD5s of several input files (or directories), in path order."""
    listing = [[str(p), content_md5(p)] for p in sorted(map(str, paths))]
    return hashlib.md5(canonical_json(listing).encode()).hexdigest()


CODE_PATHS = ("src", "workflow", "Snakefile")


def git_state(cwd: str | os.PathLike = ".") -> tuple[str, bool]:
    """(commit, dirty) of the repository; ("unknown", True) outside a git repository.

    Dirty means the code (``CODE_PATHS``) differs from the commit, new files included.  Config
    edits are not code (the audit checks configs on their own), nor is dvc.lock, which every
    `make reproduce` rewrites.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return commit, bool(status.strip())


def host() -> str:
    return socket.gethostname()


def user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return str(os.getuid())


def slurm_job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


def path_hash_rows(paths: dict[str, Path]) -> dict[str, str]:
    """{name: sha256} for existing files, and the SHA-256 tree digest of directories (the
    artifact hashes the audit checks)."""
    rows = {name: sha256_file(p) for name, p in paths.items() if Path(p).is_file()}
    rows |= {name: tree_digest(p, sha256_file) for name, p in paths.items() if Path(p).is_dir()}
    return rows


def git_dirty(paths: list[str], cwd: str | os.PathLike = ".") -> bool:
    """Whether any of ``paths`` differs from HEAD (True outside a git repository)."""
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", *paths],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return True
    return bool(status.strip())


def stage_code(rule: str) -> dict[str, str]:
    """{path of each module the rule's stage reaches (``src/taskabs/...``): its SHA-256}.

    What a result's code check compares: only these modules can have changed what the job made.
    """
    from taskabs.pipeline.codehash import SOURCE, module_path, reached_modules
    from taskabs.pipeline.stages import stage_module

    modules = {}
    for name in reached_modules(stage_module(rule), SOURCE):
        path = module_path(name, SOURCE)
        modules[f"src/taskabs/{path.relative_to(SOURCE).as_posix()}"] = sha256_file(path)
    return modules
