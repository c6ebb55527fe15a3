"""Tables of the geometry experiment from the sweep's rows (docs/experiments/geometry.md).

``summary_table``: latent and random-task networks per cell and layer; ``vs_p_table``: the
random-task variant (d binary latents, MSE) per P; ``multitask_table``: Johnston & Fusi's
protocol per kind of latents and P; ``sequence_table``: the sequence models' hidden state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from taskabs.geometry import METRICS

__all__ = ["LAYERS", "read_rows", "summary_table", "vs_p_table", "multitask_table", "sequence_table"]

LAYERS = ("input", "untrained", "trained")
METRIC_NAMES = tuple(METRICS)  # ps, ccgp, shattering
NULLS = ("shuffle", "geometry")
MULTITASK_METRICS = ("classifier_gen", "regression_gen", "ps")


def paths(value) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]


def read_rows(files) -> pl.DataFrame:
    frames = [pl.read_parquet(p) for p in paths(files)]
    if not frames:
        raise ValueError("tabulate needs at least one rows file")
    return pl.concat(frames, how="diagonal_relaxed")


def _layer_order(frame: pl.DataFrame, *keys: str) -> pl.DataFrame:
    return (
        frame.with_columns(
            pl.col("layer").replace_strict({l: i for i, l in enumerate(LAYERS)}).alias("_rank")
        )
        .sort([*keys, "_rank"])
        .drop("_rank")
    )


def summary_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Per task type, n_tasks, cell and layer: mean, sd, min of ps/ccgp/shattering, null means, n."""
    measured = rows.filter(pl.col("layer").is_in(LAYERS) & pl.col("task").is_in(["latent", "random"]))
    keys = ["task", "n_tasks", "d", "width", "weight_decay", "activation", "depth", "layer"]
    aggs = []
    for m in METRIC_NAMES:
        aggs += [
            pl.col(m).mean().alias(f"{m}_mean"),
            pl.col(m).std().alias(f"{m}_sd"),
            pl.col(m).min().alias(f"{m}_min"),
        ]
    aggs += [pl.col(f"{m}_null_{n}").mean().alias(f"{m}_null_{n}_mean") for m in METRIC_NAMES for n in NULLS]
    return _layer_order(measured.group_by(keys).agg(pl.len().alias("n"), *aggs), *keys[:-1])


def vs_p_table(rows: pl.DataFrame) -> pl.DataFrame:
    """The random-task variant per P (n_tasks) and layer, pooled over cells and seeds: metrics,
    shuffled-null means, the PS of the targets and the fraction of tasks that copy a latent."""
    random = rows.filter((pl.col("task") == "random") & pl.col("layer").is_in(LAYERS))
    aggs = []
    for m in METRIC_NAMES:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_sd")]
    aggs += [pl.col(f"{m}_null_shuffle").mean().alias(f"{m}_null_shuffle_mean") for m in ("ps", "ccgp")]
    for column in ("target_ps", "latent_copies"):
        if column not in random.columns:
            random = random.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    aggs += [
        pl.col("target_ps").mean().alias("target_ps_mean"),
        (pl.col("latent_copies") / pl.col("n_tasks")).mean().alias("latent_copy_fraction"),
    ]
    table = random.group_by("n_tasks", "layer").agg(pl.len().alias("n"), *aggs)
    return _layer_order(table, "n_tasks").with_columns(
        pl.col("n_tasks").cast(pl.Int64), pl.col("n").cast(pl.Int64)
    )


MULTITASK_SCHEMA = {"latents": pl.String, "n_tasks": pl.Int64, "layer": pl.String, "n_seeds": pl.Int64}


def multitask_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Johnston & Fusi's protocol per latents, P and layer, over seeds (and cells): mean and sd of
    classifier_gen, regression_gen and ps, the shuffled-null means, target_ps, the fraction of
    tasks that copy a latent, and the trained networks' training accuracy."""
    if "task" not in rows.columns or rows.filter(pl.col("task") == "multitask").is_empty():
        return pl.DataFrame(schema=MULTITASK_SCHEMA)
    multi = rows.filter(pl.col("task") == "multitask")
    aggs = []
    for m in MULTITASK_METRICS:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_sd")]
    aggs += [
        pl.col(f"{m}_null_shuffle").mean().alias(f"{m}_null_shuffle_mean") for m in MULTITASK_METRICS[:2]
    ]
    aggs += [
        pl.col("target_ps").mean().alias("target_ps_mean"),
        (pl.col("latent_copies") / pl.col("n_tasks")).mean().alias("latent_copy_fraction"),
        pl.col("train_accuracy").mean().alias("train_accuracy_mean"),
    ]
    table = multi.group_by("latents", "n_tasks", "layer").agg(pl.len().alias("n_seeds"), *aggs)
    return _layer_order(table, "latents", "n_tasks").with_columns(
        pl.col("n_tasks").cast(pl.Int64), pl.col("n_seeds").cast(pl.Int64)
    )


SEQUENCE_METRICS = ("ps", "ps_task", "ps_observation", "ccgp", "ccgp_task", "ccgp_observation", "shattering")
SEQUENCE_SCHEMA = {
    "model": pl.String,
    "metric": pl.String,
    "mean": pl.Float64,
    "sd": pl.Float64,
    "n_seeds": pl.Int64,
    "null_shuffle_mean": pl.Float64,
    "null_geometry_mean": pl.Float64,
}


def sequence_table(records: list[dict]) -> pl.DataFrame:
    """Per model and metric: mean, sd over seeds, n_seeds, and the means of both nulls."""
    rows = []
    for model in sorted({r["model"] for r in records}):
        mine = [r for r in records if r["model"] == model]
        for metric in SEQUENCE_METRICS:
            values = np.array([r[metric] for r in mine], dtype=np.float64)
            rows.append(
                {
                    "model": model,
                    "metric": metric,
                    "mean": float(np.mean(values)),
                    "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                    "n_seeds": len(values),
                }
                | {f"null_{n}_mean": float(np.mean([r[f"{metric}_null_{n}"] for r in mine])) for n in NULLS}
            )
    return pl.DataFrame(rows, schema=SEQUENCE_SCHEMA)
