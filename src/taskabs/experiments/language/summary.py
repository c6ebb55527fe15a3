"""Tables (polars) and figures (matplotlib) of the language-model experiment, across seeds.

See docs/experiments/language.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from taskabs import plots
from taskabs.artifacts import write_table
from taskabs.experiments.language.claims import LM_WINDOW, TARGET_ACCURACY
from taskabs.tables import mean_sd, read_table

if TYPE_CHECKING:  # stages see a Job; importing the job machinery would put it in their code hash
    from taskabs.pipeline.jobs import Job

METHODS = ("one_step", "iterative", "exhaustive")
METHOD_LABELS = {
    "one_step": "one-step GBI",
    "iterative": "iterative GBI",
    "exhaustive": "exhaustive likelihood",
}


def _paths(job: Job, name: str) -> list[Path]:
    paths = job.input[name]
    return [paths] if isinstance(paths, Path) else list(paths)


def inference_table(rows: list[dict]) -> pl.DataFrame:
    """Per window length and method: accuracy mean, sd and seeds; agreement of one-step with exhaustive."""
    long = []
    for row in rows:
        for key, value in row.items():
            if key.startswith(("accuracy_", "agreement_")):
                measure, width = key.rsplit("_w", 1)
                long.append(
                    {
                        "seed": row["seed"],
                        "window_length": int(width),
                        "method": measure.removeprefix("accuracy_"),
                        "value": float(value),
                    }
                )
    return (
        pl.DataFrame(long)
        .group_by("window_length", "method")
        .agg(
            pl.col("value").mean().alias("mean"), pl.col("value").std().alias("sd"), pl.len().alias("n_seeds")
        )
        .sort("window_length", "method")
    )


def recomposition_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Per model and corpus: losses (nats/char) before and after fitting z, and the fitted z, over seeds."""
    frame = frame.with_columns(gain=(pl.col("loss_uniform") - pl.col("loss_free_z")) / pl.col("loss_uniform"))
    columns = [
        "loss_uniform",
        "loss_best_one_hot",
        "loss_free_z",
        "loss_mixture_z",
        "gain",
        *[c for c in frame.columns if c.startswith(("z_", "mixture_"))],
    ]
    return mean_sd(frame, ["model", "held_out", "corpus"], columns)


def tabulate(job: Job) -> dict:
    inference = inference_table([json.loads(p.read_text()) for p in _paths(job, "inference")])
    write_table(inference, job.output["inference"])

    recomposition = recomposition_table(pl.concat([pl.read_csv(p) for p in _paths(job, "recomposition")]))
    write_table(recomposition, job.output["recomposition"])

    geometry = pl.DataFrame([json.loads(p.read_text()) for p in _paths(job, "geometry")]).drop("corpora")
    measures = [c for c in geometry.columns if c not in ("model", "seed", "window", "n_samples")]
    write_table(mean_sd(geometry, ["model"], measures), job.output["geometry"])

    curves = pl.concat(
        [pl.read_csv(p).with_columns(model=pl.lit(Path(p).parts[-3])) for p in _paths(job, "curves")]
    )
    wide = (
        curves.group_by("step", "model")
        .agg(pl.col("loss").mean())
        .pivot(on="model", index="step", values="loss")
        .sort("step")
    )
    models = sorted(c for c in wide.columns if c != "step")  # group_by order varies run to run
    wide = wide.select("step", *models).rename({m: f"{m}_loss_mean" for m in models})
    write_table(wide, job.output["curves"])

    at_target = inference.filter(pl.col("window_length") == LM_WINDOW)
    metrics = {f"accuracy_{r['method']}_w{LM_WINDOW}": r["mean"] for r in at_target.iter_rows(named=True)}
    held = recomposition.filter(pl.col("held_out"))
    metrics |= {f"held_out_gain_{r['model']}": r["gain_mean"] for r in held.iter_rows(named=True)}
    return metrics


def corpora_table(manifest: dict) -> pl.DataFrame:
    """Origin, licence, version and size of every corpus, from the gather stage's manifest."""

    def version(v):
        return v if isinstance(v, str) or v is None else ", ".join(f"{p} {x}" for p, x in v.items())

    return pl.DataFrame(
        [
            {
                "corpus": name,
                "role": m["role"],
                "origin": m.get("origin"),
                "licence": m.get("licence"),
                "package": version(m.get("package_version")) if m.get("package") else m.get("archive", ""),
                "files": len(m.get("files", [])),
                "chars": m["chars"],
                "sha256": m["sha256"],
            }
            for name, m in manifest.items()
        ],
        schema_overrides={"package": pl.String, "origin": pl.String},
    )


def plot(job: Job) -> dict:
    inference = read_table(job.input["inference"])
    recomposition = read_table(job.input["recomposition"])
    manifest = json.loads((Path(job.input["manifest"]) / "manifest.json").read_text())
    write_table(corpora_table(manifest), job.output["corpora"])
    corpora = [name for name, m in manifest.items() if m["role"] == "train"]

    fig, (ax,) = plots.figure(width=4.6)
    for method in METHODS:
        rows = inference.filter(pl.col("method") == method).sort("window_length")
        ax.errorbar(
            rows["window_length"],
            rows["mean"],
            yerr=rows["sd"].fill_null(0),
            marker="o",
            capsize=3,
            label=METHOD_LABELS[method],
        )
    ax.axhline(1 / len(corpora), color="grey", ls=":", label="chance")
    ax.plot([LM_WINDOW], [TARGET_ACCURACY], "k*", ms=10, label="target")
    ax.set(
        xscale="log",
        xlabel="window (characters)",
        ylabel="corpus accuracy",
        ylim=(0, 1.02),
        title="GBI-LSTM: which corpus is this text from?",
    )
    widths = sorted(inference["window_length"].unique())
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    plots.save(fig, job.output["inference"])

    fig, (losses, weights) = plots.figure(2, width=4.6)
    held = recomposition.filter(pl.col("held_out"))
    names = list(dict.fromkeys(recomposition["corpus"].to_list()))
    x = np.arange(len(names))
    for i, model in enumerate(plots.LABELS):
        rows = recomposition.filter(pl.col("model") == model)
        if rows.is_empty():
            continue
        gain = [rows.filter(pl.col("corpus") == n)["gain_mean"].item() for n in names]
        sd = [rows.filter(pl.col("corpus") == n)["gain_sd"].fill_null(0).item() for n in names]
        losses.bar(
            x + (i - 0.5) * 0.4,
            gain,
            0.4,
            yerr=sd,
            capsize=2,
            color=plots.COLOURS[model],
            label=plots.LABELS[model],
        )
    losses.axhline(0, color="k", lw=0.5)
    losses.set_xticks(
        x,
        [n + ("\n(held out)" if n in held["corpus"].to_list() else "") for n in names],
        fontsize=7,
        rotation=30,
    )
    losses.set(ylabel="relative loss decrease from fitting z", title="z fitted, weights frozen")
    losses.legend(fontsize=7)
    gbi = held.filter(pl.col("model") == "gbi_lstm")
    for j, row in enumerate(gbi.iter_rows(named=True)):
        values = [row[f"mixture_{c}_mean"] for c in corpora]
        weights.bar(
            np.arange(len(corpora)) + j * 0.8 / max(1, gbi.height),
            values,
            0.8 / max(1, gbi.height),
            label=row["corpus"],
        )
    weights.set_xticks(np.arange(len(corpora)), corpora, fontsize=7, rotation=30)
    weights.set(ylabel="mixture weight (z on the simplex)", ylim=(0, 1), title="held-out corpus as a mix")
    weights.legend(fontsize=7)
    plots.save(fig, job.output["recomposition"])
    return {}
