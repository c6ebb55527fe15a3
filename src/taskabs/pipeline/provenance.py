"""Where a result came from: code version, data hashes, config hash, host, device."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from taskabs.hashing import canonical_json, md5_file, sha256_file

if TYPE_CHECKING:
    import torch


def data_hash(paths: list[str | os.PathLike]) -> str:
    """One hash over the MD5s of several input files, in path order."""
    listing = [[str(p), md5_file(p)] for p in sorted(map(str, paths))]
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


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA if visible, then Apple MPS, then CPU; anything else is forced."""
    # Imported here, not at the top: the Snakefile imports this module (via taskabs.pipeline.tracking), so a
    # top-level torch import costs ~1 s in every Snakemake start-up, two per SLURM job.
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config device={requested!r} but no CUDA device is visible")
    return device


def host() -> str:
    return socket.gethostname()


def slurm_job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


def path_hash_rows(paths: dict[str, Path]) -> dict[str, str]:
    """{name: sha256} for existing files (the artifact hashes the audit checks)."""
    return {name: sha256_file(p) for name, p in paths.items() if Path(p).is_file()}
