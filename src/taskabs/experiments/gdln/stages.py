"""Gated deep linear networks (SCIENCE.md §3): theory against simulation, as pipeline stages.

``simulate`` runs one experiment of :mod:`taskabs.experiments.gdln.runs` at the configured scale;
``plot`` draws its figures and checks the reduction against the simulation with the targets below.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from taskabs import plots
from taskabs.artifacts import write_json, write_npz, write_table
from taskabs.claims import NOT_REPRODUCED, REPRODUCED
from taskabs.experiments.gdln import runs

if TYPE_CHECKING:  # stages see a Job; importing the job machinery would put it in their code hash
    from taskabs.pipeline.jobs import Job

RUNNERS = {
    "xor": runs.xor_experiment,
    "routing": runs.routing_experiment,
    "race": runs.race_experiment,
    "zero_shot": runs.zero_shot_experiment,
}

# (claim id, experiment, summary key, comparison, target, what is checked): the checks behind the
# race.* claims of the scorecard (experiments/gdln/claims.py), matched by id.
CHECKS = [
    (
        "race.routing.ode",
        "routing",
        "max_rel_dev",
        "<=",
        0.05,
        "reduced ODE tracks the simulated singular values (max rel. deviation)",
    ),
    (
        "race.routing.steady_state",
        "routing",
        "ratio_rel_err",
        "<=",
        0.02,
        "routing steady state B2 = sqrt(M) B1 (rel. error)",
    ),
    (
        "race.race.steady_state",
        "race",
        "ratio_rel_err",
        "<=",
        0.02,
        "race steady state B2 = P^(1/4) B1 (rel. error)",
    ),
    (
        "race.zero_shot.routes",
        "zero_shot",
        "first_k_over_m_untrained_within_5pct",
        "<=",
        0.5,
        "untrained routes reach the trained accuracy before half the routes are trained (K/M)",
    ),
    (
        "race.zero_shot.init",
        "zero_shot",
        "untrained_gap_large_init",
        ">=",
        0.2,
        "large initialisation does not generalise (trained - untrained accuracy at gain 10)",
    ),
]
# Timings vary run to run: they go to MLflow (the stage's metrics), never into result files.
TIMINGS = ("cpu_seconds",)


def simulate(job: Job) -> dict:
    name = job.wildcards["experiment"]
    if name not in RUNNERS:
        raise ValueError(f"unknown GDLN experiment {name!r}; expected one of {sorted(RUNNERS)}")
    result = RUNNERS[name](
        scale=job.config["scale"], seed=job.seed, device=str(job.device), n_threads=job.threads
    )
    summary = {k: v for k, v in result.summary.items() if k not in TIMINGS}
    timings = {k: float(result.summary[k]) for k in TIMINGS if k in result.summary}
    if name == "zero_shot":
        large = max(result.rows, key=lambda r: r["gain"])  # only swept at one K
        summary["untrained_gap_large_init"] = large["trained_acc"] - large["untrained_acc"]
    rows = pl.DataFrame(result.rows)
    write_table(rows.drop([c for c in TIMINGS if c in rows.columns]), job.output["rows"])
    write_npz(job.output["arrays"], **result.arrays)
    write_json(job.output["summary"], {"experiment": name, "scale": job.config["scale"], **summary})
    finite = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return finite | timings


def _load(job: Job, name: str):
    return (
        json.loads(job.input[f"{name}_summary"].read_text()),
        pl.read_parquet(job.input[f"{name}_rows"]),
        np.load(job.input[f"{name}_arrays"]),
    )


def checks_table(summaries: dict[str, dict]) -> pl.DataFrame:
    rows = []
    for claim_id, experiment, key, op, target, claim in CHECKS:
        value = summaries.get(experiment, {}).get(key)
        ok = (
            value is not None
            and math.isfinite(value)
            and (value <= target if op == "<=" else value >= target)
        )
        rows.append(
            {
                "claim_id": claim_id,
                "experiment": experiment,
                "claim": claim,
                "measured": value,
                "target": f"{op} {target}",
                "verdict": REPRODUCED if ok else NOT_REPRODUCED,
            }
        )
    return pl.DataFrame(rows)


def plot(job: Job) -> dict:
    summaries = {}
    xor, rows, arrays = _load(job, "xor")
    summaries["xor"] = xor
    fig, (ax,) = plots.figure(width=5)
    for key, label in (
        ("loss_theory", "GDLN theory"),
        ("loss_gdln", "GDLN simulation"),
        ("loss_relu", "ReLU network"),
    ):
        ax.plot(arrays["t"], arrays[key], label=label, linestyle="--" if key == "loss_theory" else "-")
    ax.set(xlabel="time t (= lr × step)", ylabel="loss", title="XoR with gated pathways")
    ax.legend()
    plots.save(fig, job.output["xor"])

    for name in ("routing", "race"):
        summary, rows, arrays = _load(job, name)
        summaries[name] = summary
        prefix = "" if name == "routing" else "shared_"
        fig, axes = plots.figure(3, width=3.6)
        for ax, layer in zip(axes, ("B1", "B2", "B3")):
            sim, ode = arrays[f"{prefix}{layer}_sim"], arrays[f"{prefix}{layer}_ode"]
            for mode in range(sim.shape[1]):
                (line,) = ax.plot(arrays["t"], sim[:, mode], lw=2, alpha=0.5)
                ax.plot(arrays["t"], ode[:, mode], "k--", lw=0.8)
            ax.set(xlabel="time t", ylabel=f"{layer} singular value", title=f"{name}: {layer} (dashed: ODE)")
        plots.save(fig, job.output[name])

    summary, rows, arrays = _load(job, "zero_shot")
    summaries["zero_shot"] = summary
    fig, axes = plots.figure(2, width=4.2)
    small = rows.filter(pl.col("gain") == rows["gain"].min()).sort("k_over_m")
    axes[0].plot(small["k_over_m"], small["trained_acc"], "o-", label="trained routes")
    axes[0].plot(small["k_over_m"], small["untrained_acc"], "s-", label="untrained routes")
    axes[0].set(
        xlabel="fraction of routes trained K/M",
        ylabel="test accuracy",
        title=f"PermIn-PermOut, gain {small['gain'][0]}",
    )
    axes[0].legend()
    k_sweep = rows.filter(pl.col("k") == rows.group_by("k").len().sort("len")["k"][-1]).sort("gain")
    axes[1].plot(k_sweep["gain"], k_sweep["trained_acc"], "o-", label="trained routes")
    axes[1].plot(k_sweep["gain"], k_sweep["untrained_acc"], "s-", label="untrained routes")
    axes[1].set(
        xscale="log",
        xlabel="initialisation gain",
        ylabel="test accuracy",
        title=f"K/M = {k_sweep['k_over_m'][0]:.2f}",
    )
    axes[1].legend()
    plots.save(fig, job.output["zero_shot"])

    table = checks_table(summaries)
    write_table(table, job.output["checks"])
    return {"checks_reproduced": float((table["verdict"] == REPRODUCED).sum())}
