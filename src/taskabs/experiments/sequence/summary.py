"""Tables (polars) and figures (matplotlib) of the toy-sequence experiment, across seeds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from taskabs import plots
from taskabs.artifacts import write_table
from taskabs.tables import json_rows, mean_sd, read_table

if TYPE_CHECKING:  # stages see a Job; importing the job machinery would put it in their code hash
    from taskabs.pipeline.jobs import Job

METHODS = ("one_step", "iterative", "exhaustive", "window_posterior", "exact_posterior")
# every model of the experiment, with the compared pair's style from taskabs.plots
COLOURS = {**plots.COLOURS, "lstm_shuffled_z": "#ff7f0e", "gbi_lstm_gated": "#2ca02c"}
LABELS = {**plots.LABELS, "lstm_shuffled_z": "LSTM, shuffled z", "gbi_lstm_gated": "GBI-LSTM, gated"}


def _inputs(job: Job, name: str) -> list[Path]:
    paths = job.input[name]
    return [paths] if isinstance(paths, Path) else list(paths)


def tabulate(job: Job) -> dict:
    inference = json_rows(_inputs(job, "inference"))
    evaluation = json_rows(_inputs(job, "evaluation"))
    per_seed = inference.join(evaluation, on=["model", "seed"])
    metric_columns = [
        c for c in per_seed.columns if c not in ("model", "seed", "penultimate_task", "last_task")
    ]
    long = per_seed.unpivot(index=["model", "seed"], on=metric_columns, variable_name="metric")
    summary = (
        long.group_by("metric", "model", maintain_order=True)
        .agg(
            pl.col("value").mean().alias("mean"), pl.col("value").std().alias("sd"), pl.len().alias("n_seeds")
        )
        .sort("metric", "model")
    )
    write_table(summary, job.output["summary"])

    recomposition = pl.concat([pl.read_csv(p) for p in _inputs(job, "recomposition")])
    recomposition = mean_sd(
        recomposition,
        ["model", "mean", "novel"],
        [
            "loss_before",
            "loss_after",
            "loss_best_one_hot",
            *[c for c in recomposition.columns if c.startswith("z_")],
        ],
    )
    write_table(recomposition, job.output["recomposition"])

    forgetting = pl.concat([pl.read_csv(p) for p in _inputs(job, "forgetting")])
    forgetting = (
        forgetting.group_by("model", "z", "context", "chosen", maintain_order=True)
        .agg(pl.col("mse").mean().alias("mean"), pl.col("mse").std().alias("sd"), pl.len().alias("n_seeds"))
        .sort("model", "z", "context")
    )
    write_table(forgetting, job.output["forgetting"])

    curves = pl.concat(
        [pl.read_csv(p).with_columns(model=pl.lit(Path(p).parts[-3])) for p in _inputs(job, "curves")]
    )
    # wide (one column per model) so that `dvc plots` can draw both curves from one file
    wide = (
        mean_sd(curves, ["model", "step"], ["loss"])
        .pivot(on="model", index="step", values=["loss_mean", "loss_sd"], separator="/")
        .rename(lambda c: "_".join(reversed(c.split("/"))) if "/" in c else c)
    )
    write_table(wide, job.output["curves"])

    switch = pl.concat([pl.read_parquet(p) for p in _inputs(job, "switch")])
    accuracy = switch.group_by("since_switch").agg(
        *[(pl.col(f"pred_{m}") == pl.col("task")).mean().alias(m) for m in METHODS], pl.len().alias("n")
    )
    write_table(accuracy.sort("since_switch"), job.output["switch"])
    gbi = summary.filter(pl.col("model") == "gbi_lstm")
    return {f"{m}": float(v) for m, v in zip(gbi["metric"], gbi["mean"]) if v is not None}


def plot(job: Job) -> dict:
    curves = read_table(job.input["curves"])
    fig, (ax,) = plots.figure(width=5)
    for model in LABELS:
        if f"{model}_loss_mean" not in curves.columns:
            continue
        m, s = curves[f"{model}_loss_mean"].to_numpy(), curves[f"{model}_loss_sd"].fill_null(0).to_numpy()
        ax.plot(curves["step"], m, color=COLOURS[model], label=LABELS[model])
        ax.fill_between(curves["step"], m - s, m + s, color=COLOURS[model], alpha=0.2)
    ax.set(xlabel="training step", ylabel="MSE", yscale="log", title="Learning curves")
    ax.legend()
    plots.save(fig, job.output["curves"])

    switch = pl.read_csv(job.input["switch"])
    fig, (ax,) = plots.figure(width=5)
    for method in METHODS:
        ax.plot(switch["since_switch"], switch[method], label=method.replace("_", " "), marker=".")
    ax.set(
        xlabel="trials since task switch",
        ylabel="task-inference accuracy",
        xlim=(0, 20),
        title="GBI-LSTM: inference after a switch",
    )
    ax.legend(fontsize=8)
    plots.save(fig, job.output["switch"])

    inference = pl.concat([pl.read_parquet(p) for p in _inputs(job, "inference")])
    grad = (inference["neg_grad_1"] - inference["neg_grad_0"]).to_numpy()
    fig, axes = plots.figure(2)
    for ax, name in zip(axes, ("window", "exact")):
        logp = (inference[f"{name}_logp_1"] - inference[f"{name}_logp_0"]).to_numpy()
        ax.scatter(logp, grad, s=2, alpha=0.3, c=inference["task"].to_numpy(), cmap="coolwarm")
        ax.set(
            xlabel=f"{name} log-posterior ratio (task 1 : task 0)",
            ylabel="one-step −g₁ + g₀",
            title=f"r = {np.corrcoef(logp, grad)[0, 1]:.3f}",
        )
    plots.save(fig, job.output["gradient"])

    recomposition = read_table(job.input["recomposition"])
    fig, axes = plots.figure(2, width=4.2)
    for ax, model in zip(axes, ("gbi_lstm", "lstm")):
        rows = recomposition.filter(pl.col("model") == model)
        x = np.arange(len(rows))
        ax.bar(x - 0.2, rows["loss_before_mean"], 0.4, label="z at max. entropy", color="0.6")
        ax.bar(x + 0.2, rows["loss_after_mean"], 0.4, label="z optimised", color=plots.COLOURS[model])
        ax.set_xticks(x, [f"μ={m}{'*' if n else ''}" for m, n in zip(rows["mean"], rows["novel"])])
        ax.set(ylabel="MSE", title=f"{plots.LABELS[model]} (* novel)")
        ax.legend(fontsize=8)
    plots.save(fig, job.output["recomposition"])

    summary = read_table(job.input["summary"])
    forgetting = read_table(job.input["forgetting_table"])
    fig, axes = plots.figure(2, width=3.8)
    ax = axes[0]
    models = [m for m in LABELS if m in set(forgetting["model"])]
    chosen = int(forgetting.filter(pl.col("chosen"))["context"][0])
    for offset, protocol, hatch in ((-0.2, "z_given", ""), (0.2, "z_inferred", "//")):
        rows = forgetting.filter((pl.col("z") == protocol) & (pl.col("context") == chosen))
        rows = {r["model"]: r for r in rows.iter_rows(named=True)}
        ax.bar(
            [i + offset for i in range(len(models))],
            [rows[m]["mean"] for m in models],
            0.4,
            yerr=[rows[m]["sd"] or 0.0 for m in models],
            color=[COLOURS[m] for m in models],
            hatch=hatch,
            label=protocol.replace("_", " "),
        )
    ax.axhline(0.24, color="0.3", ls=":", lw=1)
    ax.axhline(0.30, color="0.3", ls="--", lw=1)
    ax.set_xticks(range(len(models)), [LABELS[m] for m in models], rotation=20, fontsize=8)
    ax.set(ylabel="MSE, second-to-last block", title=f"forgetting, context {chosen} trial(s)")
    ax.legend(fontsize=7)
    rows = summary.filter(pl.col("metric") == "shared_unit_ratio")
    compared = rows["model"].to_list()
    axes[1].bar(
        range(len(compared)),
        rows["mean"],
        yerr=rows["sd"].fill_null(0),
        color=[COLOURS[m] for m in compared],
    )
    axes[1].set_xticks(range(len(compared)), [LABELS[m] for m in compared])
    axes[1].set(ylabel="shared-unit ratio")
    plots.save(fig, job.output["forgetting"])

    fig, (ax,) = plots.figure(width=5)
    for model in models:
        for protocol, style in (("z_given", "-"), ("z_inferred", ":")):
            rows = forgetting.filter((pl.col("model") == model) & (pl.col("z") == protocol)).sort("context")
            ax.errorbar(
                rows["context"],
                rows["mean"],
                yerr=rows["sd"].fill_null(0),
                color=COLOURS[model],
                ls=style,
                marker=".",
                label=f"{LABELS[model]} ({protocol.replace('_', ' ')})",
            )
    ax.axhspan(0.24, 0.30, color="0.85", zorder=0, label="paper: 0.24 (GBI-LSTM) - 0.30 (LSTM)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="context: trials per window from a zero state",
        ylabel="MSE, second-to-last block",
        title="Forgetting against context length",
    )
    ax.legend(fontsize=6)
    plots.save(fig, job.output["context"])
    return {}
