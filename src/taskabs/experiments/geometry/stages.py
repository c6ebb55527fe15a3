"""When do abstract representations emerge? (SCIENCE.md §2) -- stage functions of the geometry experiment.

Stages: ``sweep_cell`` trains the networks of one architecture cell (rows of
:func:`taskabs.experiments.geometry.network.train_and_measure`), ``sequence_geometry`` measures
the same geometry in the hidden state of the toy-sequence models (GBI-LSTM vs LSTM), ``tabulate``
turns both into tables and verdicts on the theory's claims, ``plot`` draws them.

Documented choices:

- **Input embedding.**  The networks see x = ReLU(A φ(y) + b) + ε where φ(y) holds the latents and,
  weighted by ``input_mixing``, all their products (``network.parity_features``).
  SCIENCE.md specifies x = ReLU(A y + b) + noise, which is ``input_mixing = 0``; that input is
  already fairly abstract (PS ≈ 0.6, CCGP ≈ 1: every unit is monotone in every latent), so the
  claim "training makes the representation abstract" could not be told apart from "the input
  was".  The default ``input_mixing = 1`` gives every condition an independent random pattern
  (input PS ≈ 0, CCGP ≈ 0.5), so any abstraction found in the last hidden layer was built by
  training.  ``geometry.network.input_mixing: 0`` runs the literal SCIENCE.md form.
- **Cells and seeds.**  One job is one cell (d, activation, depth, width, weight_decay).  For every
  seed it trains one latent-task network (outputs = the d latents; PS also measured at
  ``eval_steps`` during training) and, if ``depth`` is in ``random_tasks_depths``, one network per
  P in ``random_tasks`` on P random-hyperplane tasks.  A network's seed fixes its embedding,
  data, tasks and initial weights, so networks with the same seed share their input (a paired
  comparison across activations, depths and P).
- **Sequence models.**  Hidden state h_t of the trained LSTM on the test streams, with z the true
  one-hot task (GBI-LSTM) or the uniform z (LSTM), as in training.  Two binary factors per trial:
  *task* (the current trial's task; task 0 → −1, any other task → +1, i.e. task 0 vs the rest
  when K > 2) and *observation* (whether the previous observation x_{t−1}, which h_t has just
  read, lies above (+1) or below (−1) the mean of the task that generated it; for D > 1 the sign
  of the summed deviation).  The first trial of each stream is dropped (it has no previous
  observation).  Metrics: PS per factor and their mean, CCGP per factor and mean, shattering over
  the three balanced dichotomies of the four conditions (task, observation and their XOR), each
  against the shuffled-condition and random-geometry nulls (means over ``sequence_null_draws``
  draws for PS, ``sequence_null_decoding_draws`` for the decoders, which cost 30x more).  With
  two factors each PS is the cosine of a single pair of coding vectors, and each random-geometry
  CCGP draw is close to 0 or 1, so single null draws are wide: compare the models with each
  other and with the null means.  The observation factor is defined relative to the task's own
  mean, so a code of the raw observation is parallel across tasks (high PS) but its decoder's
  threshold does not transfer from one task to the other (CCGP near 0.5); a code of the
  deviation from the task's mean gives both.
- **Verdicts** (``tabulate``), on per-cell means over seeds (a cell = one architecture):
  (a) trained last-layer PS and CCGP >= 0.9 in every latent-task cell; partly if either metric
  passes everywhere or at least half the cells pass both.
  (b) trained minus max(input, untrained) for PS and CCGP, minimum over latent cells, >= 0.3;
  partly if all differences are positive.
  (c) random tasks, pooled over cells and seeds per P: PS and CCGP each "grow with P" if the
  Spearman correlation of the per-P mean with P is >= 0.5 and the largest P beats the smallest by
  more than 2 standard errors; both grow → reproduced, one → partly; no random-task rows → "not run".
  (d) trained minus null mean for PS and CCGP (shuffled and random-geometry nulls) and shattering
  (shuffled null only: random points in general position are shattered, so the random-geometry
  null keeps shattering high by design), minimum over latent cells, > 0; partly if at least half
  of the comparisons are positive.
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
from scipy import stats

from taskabs import plots
from taskabs.artifacts import write_json, write_table
from taskabs.experiments.geometry.network import ACTIVATIONS, NetworkSpec, train_and_measure
from taskabs.geometry import (
    METRICS,
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
    "sweep_cell",
    "sequence_factors",
    "factor_geometry",
    "sequence_geometry",
    "summary_table",
    "vs_p_table",
    "verdicts_table",
    "sequence_table",
    "tabulate",
    "plot",
]

CELL = ("d", "activation", "depth", "width", "weight_decay")  # the sweep's wildcards
CELL_TYPES = {"d": int, "activation": str, "depth": int, "width": int, "weight_decay": float}
# Set by the cell, the seed list or the task sweep: not overridable through ``network``.
RESERVED = frozenset(CELL) | {"seed", "task", "n_tasks", "steps"}
LAYERS = ("input", "untrained", "trained")
METRIC_NAMES = tuple(METRICS)  # ps, ccgp, shattering
NULLS = ("shuffle", "geometry")
FACTORS = ("task", "observation")
PASS = 0.9  # claim (a)
CLEAR_MARGIN = 0.3  # claim (b)
MIN_SPEARMAN = 0.5  # claim (c)
VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "not run")


# ------------------------------------------------------------------------------------ helpers
def _paths(value) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]


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


def sweep_cell(job: Job) -> dict:
    """Train and measure every network of one cell; output ``rows`` (parquet), one per layer/step.

    Columns: every ``NetworkSpec`` field (the cell's wildcards d, activation, depth, width,
    weight_decay; seed, task, n_tasks, ...), layer in {input, untrained, trained,
    during_training}, step, ps, ccgp, shattering, ``<metric>_null_<shuffle|geometry>``,
    task_loss, task_accuracy, train_loss.
    """
    cell = parse_cell(job.wildcards)
    specs = cell_specs(cell, job.config)
    rows: list[dict] = []
    started = time.process_time()
    for spec, eval_steps in specs:
        rows += train_and_measure(spec, eval_steps=eval_steps, device=job.device, threads=job.threads)
    cpu = time.process_time() - started
    frame = pl.DataFrame(rows, infer_schema_length=None)
    write_table(frame, job.output["rows"])
    trained = frame.filter(pl.col("layer") == "trained")
    latent, random = trained.filter(pl.col("task") == "latent"), trained.filter(pl.col("task") == "random")
    metrics = {
        "n_networks": float(len(specs)),
        "cpu_seconds": cpu,
        "cpu_seconds_per_network": cpu / len(specs),
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
        "cell %s: %d networks in %.1f s CPU; latent trained PS %.3f",
        cell,
        len(specs),
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
def _read_rows(paths) -> pl.DataFrame:
    frames = [pl.read_parquet(p) for p in _paths(paths)]
    if not frames:
        raise ValueError("tabulate needs at least one rows file")
    return pl.concat(frames, how="diagonal_relaxed")


def summary_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Per task type, n_tasks, cell and layer: mean, sd, min of ps/ccgp/shattering, null means, n."""
    measured = rows.filter(pl.col("layer").is_in(LAYERS))
    keys = ["task", "n_tasks", "d", "width", "weight_decay", "activation", "depth", "layer"]
    aggs = []
    for m in METRIC_NAMES:
        aggs += [
            pl.col(m).mean().alias(f"{m}_mean"),
            pl.col(m).std().alias(f"{m}_sd"),
            pl.col(m).min().alias(f"{m}_min"),
        ]
    aggs += [pl.col(f"{m}_null_{n}").mean().alias(f"{m}_null_{n}_mean") for m in METRIC_NAMES for n in NULLS]
    return (
        measured.group_by(keys)
        .agg(pl.len().alias("n"), *aggs)
        .with_columns(pl.col("layer").replace_strict({l: i for i, l in enumerate(LAYERS)}).alias("_rank"))
        .sort(["task", "n_tasks", "d", "width", "weight_decay", "activation", "depth", "_rank"])
        .drop("_rank")
    )


def vs_p_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Random-hyperplane tasks, per P (n_tasks) and layer, pooled over cells and seeds."""
    random = rows.filter((pl.col("task") == "random") & pl.col("layer").is_in(LAYERS))
    aggs = []
    for m in METRIC_NAMES:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_sd")]
    aggs += [pl.col(f"{m}_null_shuffle").mean().alias(f"{m}_null_shuffle_mean") for m in ("ps", "ccgp")]
    return (
        random.group_by("n_tasks", "layer")
        .agg(pl.len().alias("n"), *aggs)
        .with_columns(pl.col("layer").replace_strict({l: i for i, l in enumerate(LAYERS)}).alias("_rank"))
        .sort("n_tasks", "_rank")
        .drop("_rank")
        .with_columns(pl.col("n_tasks").cast(pl.Int64), pl.col("n").cast(pl.Int64))
    )


def _cell_name(row: dict) -> str:
    return (
        f"{row['activation']} depth {row['depth']} "
        f"(d={row['d']}, width {row['width']}, wd {row['weight_decay']})"
    )


def _claim_a(latent: pl.DataFrame) -> dict:
    trained = latent.filter(pl.col("layer") == "trained")
    ps, cc = trained["ps_mean"].to_numpy(), trained["ccgp_mean"].to_numpy()
    worst_ps, worst_cc = (
        trained.row(int(np.argmin(ps)), named=True),
        trained.row(int(np.argmin(cc)), named=True),
    )
    both = (ps >= PASS) & (cc >= PASS)
    if both.all():
        verdict = "reproduced"
    elif (ps >= PASS).all() or (cc >= PASS).all() or both.mean() >= 0.5:
        verdict = "partly reproduced"
    else:
        verdict = "not reproduced"
    return {
        "measured": float(min(ps.min(), cc.min())),
        "target": f"PS >= {PASS} and CCGP >= {PASS} in every cell",
        "verdict": verdict,
        "details": f"min PS {ps.min():.3f} ({_cell_name(worst_ps)}), min CCGP {cc.min():.3f} "
        f"({_cell_name(worst_cc)}); {int(both.sum())}/{len(both)} cells pass both",
    }


def _claim_b(latent: pl.DataFrame) -> dict:
    keys = ["d", "width", "weight_decay", "activation", "depth"]
    layer = {l: latent.filter(pl.col("layer") == l).select(*keys, "ps_mean", "ccgp_mean") for l in LAYERS}
    joined = (
        layer["trained"]
        .join(layer["input"], on=keys, suffix="_input")
        .join(layer["untrained"], on=keys, suffix="_untrained")
    )
    diffs = {}
    for m in ("ps", "ccgp"):
        baseline = np.maximum(joined[f"{m}_mean_input"].to_numpy(), joined[f"{m}_mean_untrained"].to_numpy())
        diffs[m] = joined[f"{m}_mean"].to_numpy() - baseline
    lowest = min(diffs["ps"].min(), diffs["ccgp"].min())
    verdict = (
        "reproduced" if lowest >= CLEAR_MARGIN else "partly reproduced" if lowest > 0 else "not reproduced"
    )
    return {
        "measured": float(lowest),
        "target": f"trained - max(input, untrained) >= {CLEAR_MARGIN} for PS and CCGP",
        "verdict": verdict,
        "details": f"min PS gain {diffs['ps'].min():.3f}, min CCGP gain {diffs['ccgp'].min():.3f} "
        f"over {len(joined)} cells",
    }


def _grows(vs_p: pl.DataFrame, metric: str) -> tuple[bool, float, float, float]:
    """(grows, Spearman rho of mean vs P, mean(P_max) - mean(P_min), its standard error)."""
    trained = vs_p.filter(pl.col("layer") == "trained").sort("n_tasks")
    p, mean = trained["n_tasks"].to_numpy(), trained[f"{metric}_mean"].to_numpy()
    sd, n = trained[f"{metric}_sd"].fill_null(0.0).to_numpy(), trained["n"].to_numpy()
    rho = float(stats.spearmanr(p, mean).statistic) if len(p) >= 2 and np.ptp(mean) > 0 else 0.0
    gain = float(mean[-1] - mean[0])
    se = float(math.sqrt(sd[-1] ** 2 / n[-1] + sd[0] ** 2 / n[0]))
    return bool(rho >= MIN_SPEARMAN and gain > 2 * se), rho, gain, se


def _claim_c(vs_p: pl.DataFrame) -> dict:
    target = f"Spearman(mean, P) >= {MIN_SPEARMAN} and mean at largest P > smallest + 2 SE, for PS and CCGP"
    if vs_p.filter(pl.col("layer") == "trained")["n_tasks"].n_unique() < 2:
        return {
            "measured": None,
            "target": target,
            "verdict": "not run",
            "details": "fewer than two values of P were trained",
        }
    result = {m: _grows(vs_p, m) for m in ("ps", "ccgp")}
    n_grow = sum(r[0] for r in result.values())
    verdict = ("reproduced", "partly reproduced", "not reproduced")[2 - n_grow]
    details = "; ".join(
        f"{m.upper()}: rho {r[1]:.2f}, largest - smallest P {r[2]:+.3f} (SE {r[3]:.3f}), "
        f"{'grows' if r[0] else 'does not grow'}"
        for m, r in result.items()
    )
    return {
        "measured": float(min(r[1] for r in result.values())),
        "target": target,
        "verdict": verdict,
        "details": details,
    }


def _claim_d(latent: pl.DataFrame) -> dict:
    trained = latent.filter(pl.col("layer") == "trained")
    pairs = [
        ("ps", "shuffle"),
        ("ps", "geometry"),
        ("ccgp", "shuffle"),
        ("ccgp", "geometry"),
        ("shattering", "shuffle"),
    ]
    diffs = {
        f"{m} vs {n}": trained[f"{m}_mean"].to_numpy() - trained[f"{m}_null_{n}_mean"].to_numpy()
        for m, n in pairs
    }
    every = np.concatenate(list(diffs.values()))
    every = every[np.isfinite(every)]
    lowest = float(every.min()) if every.size else float("nan")
    verdict = (
        "reproduced"
        if every.size and lowest > 0
        else "partly reproduced"
        if every.size and (every > 0).mean() >= 0.5
        else "not reproduced"
    )
    return {
        "measured": lowest,
        "target": "trained - null mean > 0 in every cell (PS, CCGP: both nulls; shattering: shuffled)",
        "verdict": verdict,
        "details": ", ".join(f"min {k} {v.min():.3f}" for k, v in diffs.items()),
    }


CLAIMS = {
    "a": "trained last-layer PS and CCGP >= 0.9 for every activation and depth (latent tasks)",
    "b": "trained abstraction clearly above the input and the untrained network (latent tasks)",
    "c": "abstraction (PS and CCGP) grows with the number P of random-hyperplane tasks",
    "d": "null models (shuffled conditions, random geometry) lie below the trained values",
}


def verdicts_table(summary: pl.DataFrame, vs_p: pl.DataFrame) -> pl.DataFrame:
    """One row per claim (a)-(d): id, claim, measured, target, verdict, details."""
    latent = summary.filter(pl.col("task") == "latent")
    if latent.is_empty():
        outcomes = {
            k: {"measured": None, "target": "", "verdict": "not run", "details": "no latent-task rows"}
            for k in "abd"
        }
    else:
        outcomes = {"a": _claim_a(latent), "b": _claim_b(latent), "d": _claim_d(latent)}
    outcomes["c"] = _claim_c(vs_p)
    return pl.DataFrame(
        [{"id": k, "claim": CLAIMS[k], **outcomes[k]} for k in sorted(CLAIMS)],
        schema_overrides={"measured": pl.Float64},
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


def tabulate(job: Job) -> dict:
    """Summary, PS/CCGP vs P, verdicts on claims (a)-(d), and the sequence models' geometry."""
    rows = _read_rows(job.input["rows"])
    summary, vs_p = summary_table(rows), vs_p_table(rows)
    verdicts = verdicts_table(summary, vs_p)
    records = [json.loads(Path(p).read_text()) for p in _paths(job.input.get("sequence", []))]
    write_table(summary, job.output["summary"])
    write_table(vs_p, job.output["vs_p"])
    write_table(verdicts, job.output["verdicts"])
    write_table(sequence_table(records), job.output["sequence"])
    networks = rows.filter(pl.col("layer") == "trained")
    metrics = {"n_networks": float(len(networks))}
    metrics |= {
        f"claim_{r['id']}_measured": r["measured"]
        for r in verdicts.iter_rows(named=True)
        if _finite(r["measured"])
    }
    metrics |= {f"claims_{v.replace(' ', '_')}": float((verdicts["verdict"] == v).sum()) for v in VERDICTS}
    return metrics


# -------------------------------------------------------------------------------------- plots
LAYER_STYLE = {"input": ("0.6", "s"), "untrained": ("#ff7f0e", "^"), "trained": ("#1f77b4", "o")}
ACTIVATION_COLOURS = dict(zip(ACTIVATIONS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")))
METRIC_LABELS = {"ps": "Parallelism Score", "ccgp": "CCGP", "shattering": "shattering dim."}


def _plot_by_architecture(summary: pl.DataFrame, path: Path) -> None:
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
        ax.axhline(PASS, color="k", ls=":", lw=0.8, label=f"claim (a): {PASS}")
        if metric == "ccgp":
            ax.axhline(0.5, color="0.5", ls="--", lw=0.8, label="chance")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set(
            ylabel=METRIC_LABELS[metric],
            title=f"{METRIC_LABELS[metric]} of the last hidden layer, latent tasks (mean ± sd over seeds)",
        )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots.save(fig, path)


def _plot_vs_p(vs_p: pl.DataFrame, path: Path) -> None:
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
        ax.set(
            xscale="log",
            xlabel="random-hyperplane tasks P",
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


def _plot_vs_step(rows: pl.DataFrame, path: Path) -> None:
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


def _plot_sequence(table: pl.DataFrame, path: Path) -> None:
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


def plot(job: Job) -> dict:
    """Figures: by_architecture, vs_p, vs_step, sequence (.png)."""
    _plot_by_architecture(read_table(job.input["summary"]), job.output["by_architecture"])
    _plot_vs_p(read_table(job.input["vs_p"]), job.output["vs_p"])
    _plot_vs_step(_read_rows(job.input["rows"]), job.output["vs_step"])
    _plot_sequence(read_table(job.input["sequence"]), job.output["sequence"])
    return {}
