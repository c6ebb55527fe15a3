"""Writing and reading the files stages produce: every write atomic, every checkpoint load named.

A write goes to a temporary sibling, is flushed, then renamed onto its path, so a killed job never
leaves a torn file behind for a later job (or DVC) to take as a result.  A checkpoint that cannot
be read raises :class:`CorruptArtifact` naming the file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "CorruptArtifact",
    "atomic_write_bytes",
    "load_checkpoint",
    "load_frozen",
    "publish",
    "save_checkpoint",
    "write_json",
    "write_npz",
    "write_table",
]


class CorruptArtifact(OSError):
    """A file a stage needs exists but cannot be read: delete it and re-run its producer."""


def publish(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file onto ``path`` with ordinary permissions.

    ``mkstemp`` creates files readable by the owner only; give the final file the mode a plain
    ``open`` would (0666 minus the umask) before the atomic ``os.replace``.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary sibling, fsync and ``os.replace``."""
    _atomic(Path(path), lambda f: f.write(payload))


def _atomic(path: Path, write: Callable[[Any], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Sorted keys, two-space indent, trailing newline: the same object gives the same bytes."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n"
    atomic_write_bytes(path, text.encode())


def write_table(frame, path: str | os.PathLike) -> None:
    """A polars frame as CSV or Parquet (by suffix); the column order is the frame's."""
    path = Path(path)
    if path.suffix == ".parquet":
        _atomic(path, frame.write_parquet)
    else:
        _atomic(path, frame.write_csv)


def write_npz(path: str | os.PathLike, **arrays) -> None:
    import numpy as np

    _atomic(Path(path), lambda f: np.savez_compressed(f, **arrays))


RESUME_DIR = "checkpoints"  # training's resume checkpoints: set aside if corrupt, not fatal
DIGEST_SUFFIX = ".sha256"


def is_resume_checkpoint(path: Path) -> bool:
    return RESUME_DIR in Path(path).parts


def save_checkpoint(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file, so a kill never leaves a torn checkpoint.

    A resume checkpoint (under ``checkpoints/``) gets a ``.sha256`` sidecar, so that a bit flip
    that ``torch.load`` would not notice is caught on resume.
    """
    import hashlib

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    path = Path(path)
    atomic_write_bytes(path, payload)
    if is_resume_checkpoint(path):
        atomic_write_bytes(_digest_path(path), hashlib.sha256(payload).hexdigest().encode())


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def _verify_digest(path: Path) -> None:
    from taskabs.hashing import sha256_file

    digest = _digest_path(path)
    if is_resume_checkpoint(path) and digest.is_file():
        recorded, actual = digest.read_text().strip(), sha256_file(path)
        if recorded != actual:
            raise ValueError(f"sha256 {actual[:12]} != {recorded[:12]} written with it")


def set_aside(path: Path) -> Path:
    """Rename a corrupt file to ``<name>.corrupt-<time>`` beside it (kept for inspection)."""
    import time

    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    _digest_path(path).unlink(missing_ok=True)
    return target


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """The dict a stage saved with :func:`save_checkpoint`; :class:`CorruptArtifact` if unreadable.

    A corrupt *resume* checkpoint (under ``checkpoints/``) is not an error: it is named in the
    log, set aside (:func:`set_aside`) and an empty dict returned, so training starts afresh
    instead of failing on every re-run.
    """
    import logging

    import torch

    path = Path(path)
    try:
        _verify_digest(path)
        return torch.load(path, weights_only=False, map_location=map_location)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        what = f"{type(error).__name__}: {error}"
        if is_resume_checkpoint(path):
            moved = set_aside(path)
            logging.getLogger(__name__).warning(
                "checkpoint %s is corrupt (%s); set aside as %s, training restarts from step 0",
                path,
                what,
                moved,
            )
            return {}
        raise CorruptArtifact(
            f"checkpoint {path} cannot be read ({what}); delete it and re-run the job that writes it"
        ) from error


def load_frozen(model, state: dict, device="cpu"):
    """``model`` with ``state['model']`` loaded, on ``device``, in eval mode, weights frozen."""
    model.load_state_dict(state["model"])
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
