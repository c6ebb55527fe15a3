"""When do abstract representations emerge? (docs/science.md §2, §4) -- the geometry stages.

``sweep_cell`` trains the networks of one architecture cell: latent-task networks, the
random-task variant (``network.train_and_measure``) and Johnston & Fusi's multitask protocol
(``multitask.train_multitask``); ``sequence_geometry`` measures the toy-sequence models' hidden
state; ``tabulate`` writes the tables and the verdicts (``verdicts``, one row per scorecard claim
id); ``plot`` draws them (``figures``).  Design choices: docs/experiments/geometry.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from taskabs.artifacts import write_json, write_table
from taskabs.claims import VERDICTS
from taskabs.experiments.geometry import figures
from taskabs.experiments.geometry.multitask import MultitaskSpec, train_multitask
from taskabs.experiments.geometry.network import ACTIVATIONS, NetworkSpec, train_and_measure
from taskabs.experiments.geometry.tables import (
    LAYERS,
    multitask_table,
    paths,
    read_rows,
    sequence_table,
    summary_table,
    vs_p_table,
)
from taskabs.experiments.geometry.verdicts import verdicts_table
from taskabs.geometry import (
    ccgp_scores,
    condition_means,
    parallelism_scores,
    random_geometry,
    shattering_dimensionality,
    shuffle_conditions,
)
from taskabs.models.sequence import load_model, spec_from, task_input
from taskabs.tables import read_table

if TYPE_CHECKING:  # stages see a Job; importing the job machinery would put it in their code hash
    from taskabs.pipeline.jobs import Job

log = logging.getLogger(__name__)

__all__ = [
    "CELL",
    "LAYERS",
    "parse_cell",
    "cell_specs",
    "multitask_specs",
    "sweep_cell",
    "sequence_factors",
    "factor_geometry",
    "sequence_geometry",
    "summary_table",
    "vs_p_table",
    "multitask_table",
    "verdicts_table",
    "sequence_table",
    "tabulate",
    "plot",
]

CELL = ("d", "activation", "depth", "width", "weight_decay")  # the sweep's wildcards
CELL_TYPES = {"d": int, "activation": str, "depth": int, "width": int, "weight_decay": float}
# Set by the cell, the seed list or the task sweep: not overridable through ``network``.
RESERVED = frozenset(CELL) | {"seed", "task", "n_tasks", "steps"}
NULLS = ("shuffle", "geometry")
FACTORS = ("task", "observation")


# ------------------------------------------------------------------------------------ helpers
def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


# ------------------------------------------------------------------------------------- sweep
def parse_cell(wildcards: dict[str, str]) -> dict:
    """The cell's wildcards (strings) as typed values: d, activation, depth, width, weight_decay."""
    missing = [k for k in CELL if k not in wildcards]
    if missing:
        raise KeyError(f"sweep_cell needs wildcards {list(CELL)}; missing {missing}")
    cell = {k: CELL_TYPES[k](wildcards[k]) for k in CELL}
    if cell["activation"] not in ACTIVATIONS:
        raise ValueError(f"unknown activation {cell['activation']!r}; expected one of {sorted(ACTIVATIONS)}")
    return cell


def cell_specs(cell: dict, config: dict) -> list[tuple[NetworkSpec, tuple[int, ...]]]:
    """The networks of one cell, with the steps at which PS is tracked during training.

    Per seed: the latent-task network (``n_tasks`` = d, its number of outputs; tracked at
    ``eval_steps``), then, if the cell's depth is in ``random_tasks_depths``, one random-task
    network per P in ``random_tasks`` (not tracked).
    """
    overrides = dict(config.get("network") or {})
    fields = {f.name for f in dataclasses.fields(NetworkSpec)}
    bad = sorted(set(overrides) - (fields - RESERVED))
    if bad:
        raise ValueError(f"geometry.network cannot set {bad}: allowed keys are {sorted(fields - RESERVED)}")
    steps = int(config["steps"])
    eval_steps = tuple(sorted({int(s) for s in config["eval_steps"]}))
    if any(not 0 <= s <= steps for s in eval_steps):
        raise ValueError(f"geometry.eval_steps must lie in [0, steps={steps}], got {list(eval_steps)}")
    base = NetworkSpec(**overrides, **cell, steps=steps)
    random = cell["depth"] in {int(x) for x in config["random_tasks_depths"]}
    specs = []
    for seed in config["seeds"]:
        specs.append(
            (dataclasses.replace(base, seed=int(seed), task="latent", n_tasks=cell["d"]), eval_steps)
        )
        if random:
            specs += [
                (dataclasses.replace(base, seed=int(seed), task="random", n_tasks=int(p)), ())
                for p in config["random_tasks"]
            ]
    return specs


def multitask_specs(cell: dict, config: dict) -> list[MultitaskSpec]:
    """Johnston & Fusi's networks of one cell (``config["multitask"]``): one per latents kind, P
    and seed, if the cell's activation and depth are listed there; activation, depth and width
    come from the cell, every other field from ``multitask.network`` (or MultitaskSpec's default)."""
    mt = config.get("multitask") or {}
    if cell["activation"] not in mt.get("activations", ["relu"]) or cell["depth"] not in mt.get(
        "depths", [1]
    ):
        return []
    overrides = dict(mt.get("network") or {})
    fields = {f.name for f in dataclasses.fields(MultitaskSpec)}
    fixed = {"latents", "n_tasks", "seed", "activation", "depth", "width"}
    bad = sorted(set(overrides) - (fields - fixed))
    if bad:
        raise ValueError(f"geometry.multitask.network cannot set {bad}: allowed {sorted(fields - fixed)}")
    base = MultitaskSpec(**overrides, activation=cell["activation"], depth=cell["depth"], width=cell["width"])
    return [
        dataclasses.replace(base, latents=kind, n_tasks=int(p), seed=int(seed))
        for kind in mt.get("latents", ["binary"])
        for p in mt.get("tasks", [1, 2, 4, 8, 16, 25])
        for seed in mt.get("seeds", [0, 1, 2, 3, 4])
    ]


def sweep_cell(job: Job) -> dict:
    """Train and measure every network of one cell; output ``rows`` (parquet), one per layer/step.

    Latent and random-task rows: every ``NetworkSpec`` field (the cell's wildcards d, activation,
    depth, width, weight_decay; seed, task, n_tasks, ...), layer in {input, untrained, trained,
    during_training}, step, ps, ccgp, shattering, ``<metric>_null_<shuffle|geometry>``,
    task_loss, task_accuracy, train_loss, target_ps, latent_copies.  Johnston & Fusi rows (task
    "multitask"): see ``multitask.train_multitask``.
    """
    cell = parse_cell(job.wildcards)
    specs = cell_specs(cell, job.config)
    multi = multitask_specs(cell, job.config)
    rows: list[dict] = []
    started = time.process_time()
    for spec, eval_steps in specs:
        rows += train_and_measure(spec, eval_steps=eval_steps, device=job.device, threads=job.threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads or 1)
    try:
        for spec in multi:
            rows += train_multitask(spec, device=job.device)
    finally:
        torch.set_num_threads(previous)
    cpu = time.process_time() - started
    frame = pl.DataFrame(rows, infer_schema_length=None)
    write_table(frame, job.output["rows"])
    trained = frame.filter(pl.col("layer") == "trained")
    latent, random = trained.filter(pl.col("task") == "latent"), trained.filter(pl.col("task") == "random")
    metrics = {
        "n_networks": float(len(specs) + len(multi)),
        "n_multitask_networks": float(len(multi)),
        "cpu_seconds": cpu,
        "cpu_seconds_per_network": cpu / (len(specs) + len(multi)),
        "latent_trained_ps_mean": float(latent["ps"].mean()),
        "latent_trained_ccgp_mean": float(latent["ccgp"].mean()),
        "latent_trained_ps_min": float(latent["ps"].min()),
    }
    if len(random):
        metrics |= {
            "random_trained_ps_mean": float(random["ps"].mean()),
            "random_trained_ccgp_mean": float(random["ccgp"].mean()),
        }
    log.info(
        "cell %s: %d networks (+%d Johnston & Fusi) in %.1f s CPU; latent trained PS %.3f",
        cell,
        len(specs),
        len(multi),
        cpu,
        metrics["latent_trained_ps_mean"],
    )
    return metrics


# ---------------------------------------------------------------------------------- sequence
def sequence_factors(x: np.ndarray, tasks: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Binary factors of trials 1..T−1 of every stream, (S·(T−1), 2) in {−1, +1}, stream-major.

    Column 0, task: −1 if the trial's task is 0, else +1.  Column 1, observation: +1 if the
    previous observation lies above the mean of its own task (summed over dimensions), else −1.

    Args:
      x: (S, T, D) observations; tasks: (S, T) task indices; means: (K, D) task means.
    """
    x, tasks, means = np.asarray(x, dtype=np.float64), np.asarray(tasks), np.asarray(means, dtype=np.float64)
    if x.ndim != 3 or tasks.shape != x.shape[:2] or x.shape[1] < 2:
        raise ValueError(f"need x (S, T, D) and tasks (S, T) with T >= 2, got {x.shape} and {tasks.shape}")
    deviation = (x[:, :-1] - means[tasks[:, :-1]]).sum(axis=-1)  # (S, T-1)
    task = np.where(tasks[:, 1:] == 0, -1, 1)  # (S, T-1)
    observation = np.where(deviation > 0, 1, -1)
    return np.stack([task.reshape(-1), observation.reshape(-1)], axis=1).astype(np.int64)


def _per_factor(name: str, values: np.ndarray) -> dict[str, float]:
    """{name: mean over factors (NaN ignored), name_<factor>: value}."""
    mean = float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")
    return {name: mean} | {f"{name}_{f}": float(v) for f, v in zip(FACTORS, values)}


def _ps(h: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    return _per_factor("ps", parallelism_scores(condition_means(h, labels)))


def _decoding(h: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    return _per_factor("ccgp", ccgp_scores(h, labels)) | {
        "shattering": shattering_dimensionality(h, labels, rng=rng)
    }


def factor_geometry(
    h: np.ndarray, labels: np.ndarray, *, n_null_ps: int, n_null_decoding: int, rng: np.random.Generator
) -> dict[str, float]:
    """PS and CCGP per factor and their means, shattering, and each one's mean under both nulls.

    h: (N, H) activity; labels: (N, 2) factors in {−1, +1}.  Keys: ps, ps_task, ps_observation,
    ccgp, ccgp_task, ccgp_observation, shattering; ``<key>_null_<shuffle|geometry>``, the mean
    over ``n_null_ps`` draws (PS: condition means only, ~10 ms a draw) or ``n_null_decoding``
    draws (CCGP, shattering: ~0.3 s a draw at N = 5000); n_samples and ``n_condition_<c>``
    (samples per condition, c = 2·[task = +1] + [observation = +1]).
    """
    out: dict[str, float] = {}
    for measure, n_draws in ((_ps, n_null_ps), (_decoding, n_null_decoding)):
        values = measure(h, labels, rng)
        out |= values
        for null in NULLS:
            draws = []
            for _ in range(n_draws):
                if null == "shuffle":
                    draws.append(measure(h, shuffle_conditions(labels, rng=rng), rng))
                else:
                    draws.append(measure(random_geometry(h, labels, rng=rng), labels, rng))
            out |= {
                f"{key}_null_{null}": float(np.mean([d[key] for d in draws])) if draws else float("nan")
                for key in values
            }
    counts = np.bincount(((labels + 1) // 2) @ np.array([2, 1]), minlength=4)
    out |= {"n_samples": int(len(labels))} | {f"n_condition_{c}": int(n) for c, n in enumerate(counts)}
    return out


def sequence_geometry(job: Job) -> dict:
    """Geometry of a sequence model's hidden state against the task and observation factors."""
    model_name = job.wildcards["model"]
    model, state = load_model(job.input["model"])
    spec = spec_from(state["config"])
    data = np.load(job.input["test"])
    x, tasks = data["x"], data["tasks"]
    z = task_input(model_name, torch.from_numpy(tasks), spec.n_tasks)
    with torch.no_grad():
        _, h = model(torch.from_numpy(x), z)  # (S, T, H)
    activity = h[:, 1:].reshape(-1, h.shape[-1]).double().numpy()  # first trial dropped
    labels = sequence_factors(x, tasks, np.asarray(spec.means))
    result = factor_geometry(
        activity,
        labels,
        n_null_ps=int(job.config["sequence_null_draws"]),
        n_null_decoding=int(job.config["sequence_null_decoding_draws"]),
        rng=np.random.default_rng(job.seed),
    )
    if result["n_samples"] == 0 or min(result[f"n_condition_{c}"] for c in range(4)) == 0:
        log.warning(
            "%s seed %s: a factor condition has no samples; some metrics are NaN", model_name, job.seed
        )
    write_json(
        job.output["metrics"],
        {
            "model": model_name,
            "seed": job.seed,
            "n_tasks": spec.n_tasks,
            "hidden": int(h.shape[-1]),
            "factors": list(FACTORS),
            "task_factor": "task 0 (-1) vs task 1 (+1)"
            if spec.n_tasks == 2
            else "task 0 (-1) vs the rest (+1)",
            **result,
        },
    )
    return {
        k: float(v) for k, v in result.items() if _finite(v) and "_null_" not in k and not k.startswith("n_")
    }


# ---------------------------------------------------------------------------------- tabulate
def tabulate(job: Job) -> dict:
    """Summary, the random-task variant vs P, Johnston & Fusi's protocol vs P, the verdicts (one
    row per scorecard claim id) and the sequence models' geometry."""
    rows = read_rows(job.input["rows"])
    summary, vs_p = summary_table(rows), vs_p_table(rows)
    verdicts = verdicts_table(summary, rows, rows)
    records = [json.loads(Path(p).read_text()) for p in paths(job.input.get("sequence", []))]
    write_table(summary, job.output["summary"])
    write_table(vs_p, job.output["vs_p"])
    write_table(multitask_table(rows), job.output["multitask"])
    write_table(verdicts, job.output["verdicts"])
    write_table(sequence_table(records), job.output["sequence"])
    networks = rows.filter(pl.col("layer") == "trained")
    metrics = {"n_networks": float(len(networks))}
    metrics |= {
        f"{r['id']}_measured": r["measured"] for r in verdicts.iter_rows(named=True) if _finite(r["measured"])
    }
    metrics |= {f"claims_{v.replace(' ', '_')}": float((verdicts["verdict"] == v).sum()) for v in VERDICTS}
    return metrics


def plot(job: Job) -> dict:
    """Figures: by_architecture, vs_p, multitask, vs_step, sequence (.png)."""
    figures.plot_by_architecture(read_table(job.input["summary"]), job.output["by_architecture"])
    figures.plot_vs_p(read_table(job.input["vs_p"]), job.output["vs_p"])
    figures.plot_multitask(read_table(job.input["multitask"]), job.output["multitask"])
    figures.plot_vs_step(read_rows(job.input["rows"]), job.output["vs_step"])
    figures.plot_sequence(read_table(job.input["sequence"]), job.output["sequence"])
    return {}
