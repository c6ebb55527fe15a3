"""Figures of the geometry experiment (docs/experiments/geometry.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from taskabs import plots
from taskabs.experiments.geometry.network import ACTIVATIONS
from taskabs.experiments.geometry.tables import LAYERS
from taskabs.experiments.geometry.verdicts import PASS

__all__ = ["plot_by_architecture", "plot_vs_p", "plot_multitask", "plot_vs_step", "plot_sequence"]

LAYER_STYLE = {"input": ("0.6", "s"), "untrained": ("#ff7f0e", "^"), "trained": ("#1f77b4", "o")}
ACTIVATION_COLOURS = dict(zip(ACTIVATIONS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")))
METRIC_LABELS = {"ps": "Parallelism Score", "ccgp": "CCGP", "shattering": "shattering dim."}


def plot_by_architecture(summary: pl.DataFrame, path: Path) -> None:
    latent = summary.filter(pl.col("task") == "latent")
    keys = ["d", "width", "weight_decay", "activation", "depth"]
    order = {a: i for i, a in enumerate(ACTIVATIONS)}
    cells = (
        latent.select(keys)
        .unique()
        .with_columns(pl.col("activation").replace_strict(order, default=len(order)).alias("_rank"))
        .sort(["d", "width", "weight_decay", "depth", "_rank"])
        .drop("_rank")
    )
    several = cells.select("d", "width", "weight_decay").n_unique() > 1
    labels = [
        f"{c['activation']}\nL{c['depth']}"
        + (f"\nd{c['d']} w{c['width']} λ{c['weight_decay']}" if several else "")
        for c in cells.iter_rows(named=True)
    ]
    fig, axes = plots.plt.subplots(
        2, 1, figsize=(max(4.0, 0.5 * len(cells) + 1.5), 6.4), constrained_layout=True
    )
    x = np.arange(len(cells))
    for ax, metric in zip(axes, ("ps", "ccgp")):
        for i, layer in enumerate(LAYERS):
            rows = cells.join(
                latent.filter(pl.col("layer") == layer), on=keys, how="left", maintain_order="left"
            )
            colour, marker = LAYER_STYLE[layer]
            ax.errorbar(
                x + (i - 1) * 0.22,
                rows[f"{metric}_mean"].to_numpy(),
                yerr=rows[f"{metric}_sd"].fill_null(0).to_numpy(),
                fmt=marker,
                color=colour,
                ms=4,
                capsize=2,
                label=layer,
            )
        ax.axhline(PASS, color="k", ls=":", lw=0.8, label=f"abstract.latent_tasks: {PASS}")
        if metric == "ccgp":
            ax.axhline(0.5, color="0.5", ls="--", lw=0.8, label="chance")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set(
            ylabel=METRIC_LABELS[metric],
            title=f"{METRIC_LABELS[metric]} of the last hidden layer, latent tasks (mean ± sd over seeds)",
        )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots.save(fig, path)


def plot_vs_p(vs_p: pl.DataFrame, path: Path) -> None:
    fig, axes = plots.figure(2)
    for ax, metric in zip(axes, ("ps", "ccgp")):
        for layer in LAYERS:
            rows = vs_p.filter(pl.col("layer") == layer).sort("n_tasks")
            if rows.is_empty():
                continue
            colour, marker = LAYER_STYLE[layer]
            p, m = rows["n_tasks"].to_numpy(), rows[f"{metric}_mean"].to_numpy()
            s = rows[f"{metric}_sd"].fill_null(0).to_numpy()
            ax.plot(p, m, marker=marker, color=colour, label=layer)
            ax.fill_between(p, m - s, m + s, color=colour, alpha=0.15)
        trained = vs_p.filter(pl.col("layer") == "trained").sort("n_tasks")
        if not trained.is_empty():
            ax.plot(
                trained["n_tasks"],
                trained[f"{metric}_null_shuffle_mean"],
                "k:",
                label="shuffled null (trained)",
            )
            if metric == "ps" and "target_ps_mean" in trained.columns:
                ax.plot(trained["n_tasks"], trained["target_ps_mean"], "k--", lw=1, label="PS of the targets")
            if metric == "ccgp" and "latent_copy_fraction" in trained.columns:
                ax.plot(
                    trained["n_tasks"],
                    trained["latent_copy_fraction"],
                    "g-.",
                    lw=1,
                    label="tasks copying a latent",
                )
        ax.set(
            xscale="log",
            xlabel="random-hyperplane tasks P (variant: binary latents, MSE)",
            ylabel=METRIC_LABELS[metric],
            title=f"{METRIC_LABELS[metric]} vs P (mean ± sd)",
        )
        if not trained.is_empty():
            ax.set_xticks(trained["n_tasks"].to_list(), [str(p) for p in trained["n_tasks"].to_list()])
            ax.minorticks_off()
    if vs_p.is_empty():
        axes[0].text(0.5, 0.5, "no random-task networks", ha="center", transform=axes[0].transAxes)
    axes[0].legend(fontsize=8)
    plots.save(fig, path)


KIND_STYLE = {"binary": "-", "continuous": "--"}


def plot_multitask(table: pl.DataFrame, path: Path) -> None:
    """Johnston & Fusi's protocol: classifier and regression generalisation, and PS (exploratory)
    with the PS of the targets, against P; one line style per kind of latents."""
    fig, axes = plots.figure(3, width=3.8)
    panels = (
        ("classifier_gen", "classifier generalisation", 0.5),
        ("regression_gen", "regression generalisation (R²)", 0.0),
        ("ps", "PS (exploratory)", 0.0),
    )
    for ax, (metric, label, chance) in zip(axes, panels):
        for kind in sorted(set(table["latents"].to_list())) if not table.is_empty() else []:
            for layer in LAYERS:
                rows = table.filter((pl.col("latents") == kind) & (pl.col("layer") == layer)).sort("n_tasks")
                colour, marker = LAYER_STYLE[layer]
                p, m = rows["n_tasks"].to_numpy(), rows[f"{metric}_mean"].to_numpy()
                s = rows[f"{metric}_sd"].fill_null(0).to_numpy()
                ax.plot(
                    p, m, KIND_STYLE.get(kind, "-"), marker=marker, color=colour, label=f"{layer} ({kind})"
                )
                ax.fill_between(p, m - s, m + s, color=colour, alpha=0.1)
            trained = table.filter((pl.col("latents") == kind) & (pl.col("layer") == "trained")).sort(
                "n_tasks"
            )
            if metric == "ps":
                ax.plot(
                    trained["n_tasks"],
                    trained["target_ps_mean"],
                    "k" + KIND_STYLE.get(kind, "-"),
                    lw=1,
                    label=f"PS of the targets ({kind})",
                )
            else:
                ax.plot(
                    trained["n_tasks"],
                    trained[f"{metric}_null_shuffle_mean"],
                    "k:",
                    lw=1,
                    label=f"shuffled null ({kind})",
                )
        ax.axhline(chance, color="0.6", lw=0.6)
        ax.set(xscale="log", xlabel="random-hyperplane tasks P", ylabel=label, title=f"{label} vs P")
        if metric == "regression_gen":
            ax.set_ylim(bottom=max(-1.0, ax.get_ylim()[0]))
    if table.is_empty():
        axes[0].text(0.5, 0.5, "no Johnston & Fusi networks", ha="center", transform=axes[0].transAxes)
    else:
        axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots.save(fig, path)


def plot_vs_step(rows: pl.DataFrame, path: Path) -> None:
    during = rows.filter((pl.col("task") == "latent") & (pl.col("layer") == "during_training"))
    curves = (
        during.group_by("depth", "activation", "step")
        .agg(pl.col("ps").mean())
        .sort("depth", "activation", "step")
    )
    depths = sorted(curves["depth"].unique().to_list()) or [None]
    fig, axes = plots.figure(len(depths), width=3.6)
    for ax, depth in zip(axes, depths):
        for activation, colour in ACTIVATION_COLOURS.items():
            c = curves.filter((pl.col("depth") == depth) & (pl.col("activation") == activation))
            if not c.is_empty():
                ax.plot(c["step"], c["ps"], marker=".", color=colour, label=activation)
        ax.set(
            xlabel="training step",
            ylabel="PS (last hidden layer)",
            ylim=(-0.1, 1.05),
            title=f"depth {depth}, latent tasks (seed mean)",
        )
        ax.legend(fontsize=8)
    plots.save(fig, path)


def plot_sequence(table: pl.DataFrame, path: Path) -> None:
    metrics = ("ps_task", "ps_observation", "ccgp_task", "ccgp_observation", "shattering")
    fig, (ax,) = plots.figure(width=7.5)
    models = [m for m in plots.LABELS if m in set(table["model"].to_list())]
    x = np.arange(len(metrics))
    for i, model in enumerate(models):
        rows = pl.DataFrame({"metric": metrics}).join(
            table.filter(pl.col("model") == model), on="metric", how="left", maintain_order="left"
        )
        offset = (i - (len(models) - 1) / 2) * 0.38
        ax.bar(
            x + offset,
            rows["mean"].to_numpy(),
            0.36,
            yerr=rows["sd"].fill_null(0).to_numpy(),
            color=plots.COLOURS[model],
            label=plots.LABELS[model],
            capsize=2,
        )
        ax.scatter(
            x + offset,
            rows["null_shuffle_mean"].to_numpy(),
            marker="_",
            s=200,
            color="k",
            zorder=3,
            label="shuffled null" if i == 0 else None,
        )
    ax.set_xticks(x, ["PS task", "PS observation", "CCGP task", "CCGP observation", "shattering"], fontsize=8)
    ax.set(ylabel="score", title="Sequence models: hidden-state geometry (mean ± sd)")
    if not models:
        ax.text(0.5, 0.5, "no sequence models", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots.save(fig, path)
