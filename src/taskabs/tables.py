"""Summary tables across seeds (polars): one way to aggregate, one way to read them back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import polars as pl


def json_rows(paths: Iterable[str | os.PathLike]) -> pl.DataFrame:
    """One row per JSON file (each file one flat object)."""
    return pl.DataFrame([json.loads(Path(p).read_text()) for p in paths])


def mean_sd(frame: pl.DataFrame, by: list[str], columns: list[str]) -> pl.DataFrame:
    """Mean, sd and count over seeds of each column, per group, sorted by the groups.

    >>> t = mean_sd(pl.DataFrame({"m": ["a", "a", "b"], "x": [1.0, 3.0, 5.0]}), ["m"], ["x"])
    >>> t.rows()
    [('a', 2.0, 1.4142135623730951, 2), ('b', 5.0, None, 1)]
    """
    aggs = []
    for c in columns:
        aggs += [pl.col(c).mean().alias(f"{c}_mean"), pl.col(c).std().alias(f"{c}_sd")]
    return frame.group_by(by, maintain_order=True).agg(*aggs, pl.len().alias("n_seeds")).sort(by)


def read_table(path: str | os.PathLike) -> pl.DataFrame:
    """Read a summary CSV; statistics stay floats even when all null (sd of a single seed)."""
    frame = pl.read_csv(path)
    stats = [c for c in frame.columns if c in ("mean", "sd") or c.endswith(("_mean", "_sd"))]
    return frame.with_columns(pl.col(stats).cast(pl.Float64))
