"""Figure conventions shared by every experiment: one style, deterministic PNG output."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: jobs run in CI and on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"gbi_lstm": "#1f77b4", "lstm": "#d62728"}
LABELS = {"gbi_lstm": "GBI-LSTM", "lstm": "LSTM"}


def figure(ncols: int = 1, *, width: float = 4.0, height: float = 3.2):
    fig, axes = plt.subplots(
        1, ncols, figsize=(width * ncols, height), squeeze=False, constrained_layout=True
    )
    return fig, axes[0]


def save(fig, path: str | os.PathLike) -> None:
    """Save atomically, without timestamps, so identical data give identical bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)
