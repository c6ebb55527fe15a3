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


def save_checkpoint(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file, so a kill never leaves a torn checkpoint."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """The dict a stage saved with :func:`save_checkpoint`; :class:`CorruptArtifact` if unreadable."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, weights_only=False, map_location=map_location)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise CorruptArtifact(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); delete it and "
            "re-run the job that writes it"
        ) from error


def load_frozen(model, state: dict, device="cpu"):
    """``model`` with ``state['model']`` loaded, on ``device``, in eval mode, weights frozen."""
    model.load_state_dict(state["model"])
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
