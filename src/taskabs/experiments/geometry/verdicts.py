"""The geometry experiment's verdicts, one row per scorecard claim id (docs/experiments/geometry.md).

Verdicts use ``taskabs.claims``' vocabulary; a claim that holds only in part is NOT_REPRODUCED
with details starting "partly:". Columns: id, claim, measured, low, high, n, target, verdict,
details (low/high: 95% t-interval over seeds of the number in ``measured``, NaN when undefined).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats

from taskabs.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    Interval,
    difference,
    exceeds,
)
from taskabs.experiments.geometry.tables import LAYERS

__all__ = ["CLAIMS", "PASS", "CLEAR_MARGIN", "MIN_SPEARMAN", "verdicts_table"]

PASS = 0.9  # abstract.latent_tasks
CLEAR_MARGIN = 0.3  # abstract.above_input
MIN_SPEARMAN = 0.5  # abstract.grows_with_p (both protocols)
CELL_KEYS = ["d", "width", "weight_decay", "activation", "depth"]
CLAIMS = {
    "abstract.latent_tasks": "trained last-layer PS and CCGP >= 0.9 for every activation and depth "
    "(latent tasks)",
    "abstract.above_input": "trained abstraction clearly above the input and the untrained network",
    "abstract.grows_with_p": "classifier and regression generalisation grow with the number P of random "
    "hyperplane tasks (Johnston & Fusi's protocol)",
    "abstract.grows_with_p.sign_mse": "variant, our earlier protocol (binary latents, w ~ N(0, I), MSE to "
    "+-1): PS and CCGP grow with P",
    "abstract.nulls": "null models (shuffled conditions, random geometry) lie below the trained values",
}


def _row(measured, interval: Interval | None, target: str, verdict: str, details: str) -> dict:
    if interval is None or not interval.defined:
        low = high = math.nan
    else:
        low, high = interval.low, interval.high
    n = interval.n if interval is not None else None
    return {
        "measured": measured,
        "low": low,
        "high": high,
        "n": n,
        "target": target,
        "verdict": verdict,
        "details": details,
    }


def _summary_interval(row: dict, metric: str) -> Interval:
    sd = row[f"{metric}_sd"]
    return Interval.from_summary(row[f"{metric}_mean"], sd, int(row["n"]))


def _cell_name(row: dict) -> str:
    cell = f"d={row['d']}, width {row['width']}, wd {row['weight_decay']}"
    return f"{row['activation']} depth {row['depth']} ({cell})"


def _latent_tasks(latent: pl.DataFrame) -> dict:
    trained = latent.filter(pl.col("layer") == "trained")
    ps, cc = trained["ps_mean"].to_numpy(), trained["ccgp_mean"].to_numpy()
    both = (ps >= PASS) & (cc >= PASS)
    metric = "ps" if ps.min() <= cc.min() else "ccgp"
    worst = trained.row(int(np.argmin(trained[f"{metric}_mean"].to_numpy())), named=True)
    details = (
        f"min PS {ps.min():.3f}, min CCGP {cc.min():.3f} (worst: {metric.upper()} of {_cell_name(worst)}, "
        f"interval over its seeds); {int(both.sum())}/{len(both)} cells pass both"
    )
    if both.all():
        verdict = REPRODUCED
    else:
        verdict = NOT_REPRODUCED
        if (ps >= PASS).all() or (cc >= PASS).all() or both.mean() >= 0.5:
            details = "partly: " + details
    return _row(
        float(min(ps.min(), cc.min())),
        _summary_interval(worst, metric),
        f"PS >= {PASS} and CCGP >= {PASS} in every cell (cell means over seeds)",
        verdict,
        details,
    )


def _above_input(latent: pl.DataFrame) -> dict:
    layer = {l: latent.filter(pl.col("layer") == l) for l in LAYERS}
    joined = (
        layer["trained"]
        .join(layer["input"], on=CELL_KEYS, suffix="_input")
        .join(layer["untrained"], on=CELL_KEYS, suffix="_untrained")
    )
    worst, lowest, intervals = None, math.inf, {}
    for m in ("ps", "ccgp"):
        for row in joined.iter_rows(named=True):
            base = "input" if row[f"{m}_mean_input"] >= row[f"{m}_mean_untrained"] else "untrained"
            gap = difference(
                _summary_interval(row, m),
                Interval.from_summary(row[f"{m}_mean_{base}"], row[f"{m}_sd_{base}"], int(row[f"n_{base}"])),
            )
            intervals.setdefault(m, []).append(gap.mean)
            if gap.mean < lowest:
                worst, lowest = (m, _cell_name(row), gap), gap.mean
    details = (
        f"min PS gain {min(intervals['ps']):.3f}, min CCGP gain {min(intervals['ccgp']):.3f} over "
        f"{len(joined)} cells (worst: {worst[0].upper()} of {worst[1]})"
    )
    if lowest >= CLEAR_MARGIN:
        verdict = REPRODUCED
    else:
        verdict = NOT_REPRODUCED
        details = ("partly: every gain is positive; " if lowest > 0 else "") + details
    return _row(
        float(lowest),
        worst[2],
        f"trained - max(input, untrained) >= {CLEAR_MARGIN} for PS and CCGP in every cell",
        verdict,
        details,
    )


def _nulls(latent: pl.DataFrame) -> dict:
    trained = latent.filter(pl.col("layer") == "trained")
    pairs = [("ps", "shuffle"), ("ps", "geometry"), ("ccgp", "shuffle"), ("ccgp", "geometry")]
    pairs.append(("shattering", "shuffle"))
    diffs = {
        f"{m} vs {n}": trained[f"{m}_mean"].to_numpy() - trained[f"{m}_null_{n}_mean"].to_numpy()
        for m, n in pairs
    }
    every = np.concatenate(list(diffs.values()))
    every = every[np.isfinite(every)]
    lowest = float(every.min()) if every.size else math.nan
    details = ", ".join(f"min {k} {v.min():.3f}" for k, v in diffs.items())
    if every.size and lowest > 0:
        verdict = REPRODUCED
    else:
        verdict = NOT_REPRODUCED
        if every.size and (every > 0).mean() >= 0.5:
            details = f"partly: {(every > 0).mean():.0%} of the comparisons are positive; " + details
    return _row(
        lowest,
        None,
        "trained - null mean > 0 in every cell (PS, CCGP: both nulls; shattering: shuffled)",
        verdict,
        details,
    )


def _paired_growth(trained: pl.DataFrame, metric: str) -> tuple[Interval, float, float]:
    """Per-seed metric(P_max) - metric(P_min) (networks of one seed share their input), the
    Spearman rho of the per-P mean with P, and the mean at P_max."""
    ps = sorted(trained["n_tasks"].unique().to_list())
    by_p = trained.group_by("n_tasks").agg(pl.col(metric).mean()).sort("n_tasks")
    mean = by_p[metric].to_numpy()
    rho = float(stats.spearmanr(ps, mean).statistic) if len(ps) >= 2 and np.ptp(mean) > 0 else 0.0
    keys = [k for k in ("seed", *CELL_KEYS) if k in trained.columns]
    low = trained.filter(pl.col("n_tasks") == ps[0]).select(*keys, pl.col(metric).alias("lo"))
    high = trained.filter(pl.col("n_tasks") == ps[-1]).select(*keys, pl.col(metric).alias("hi"))
    pairs = high.join(low, on=keys)
    return Interval.of((pairs["hi"] - pairs["lo"]).to_list()), rho, float(mean[-1])


def _grows(trained: pl.DataFrame, metrics: dict[str, str], target: str) -> dict:
    """REPRODUCED if every metric grows (paired interval of P_max - P_min above 0 and Spearman >=
    MIN_SPEARMAN), NOT_REPRODUCED ("partly:" if some do), INCONCLUSIVE if an interval is undefined
    or straddles 0 while rho passes."""
    if trained.is_empty() or trained["n_tasks"].n_unique() < 2:
        return _row(None, None, target, NOT_RUN, "fewer than two values of P were trained")
    results = {label: _paired_growth(trained, m) for m, label in metrics.items()}
    parts, states = [], []
    for label, (gain, rho, top) in results.items():
        decided = exceeds(gain, 0.0)
        state = "grows" if decided == REPRODUCED and rho >= MIN_SPEARMAN else "fails"
        if decided == INCONCLUSIVE and rho >= MIN_SPEARMAN:
            state = "undecided"
        states.append(state)
        parts.append(f"{label}: P_max - P_min {gain.text()}, rho {rho:.2f}, {top:.3f} at P_max, {state}")
    details = "; ".join(parts)
    if all(s == "grows" for s in states):
        verdict = REPRODUCED
    elif "fails" not in states:
        verdict = INCONCLUSIVE
    else:
        verdict = NOT_REPRODUCED
        if "grows" in states:
            details = "partly: " + details
    first = next(iter(results.values()))[0]
    return _row(first.mean, first, target, verdict, details)


def _grows_multitask(multitask: pl.DataFrame) -> dict:
    target = (
        f"per latents kind: classifier and regression generalisation at P_max - P_min > 0 (95% interval "
        f"over seeds, paired) and Spearman(mean, P) >= {MIN_SPEARMAN}"
    )
    trained = multitask.filter(pl.col("layer") == "trained") if not multitask.is_empty() else multitask
    if trained.is_empty():
        return _row(None, None, target, NOT_RUN, "no Johnston & Fusi networks were trained")
    rows = {
        kind: _grows(
            trained.filter(pl.col("latents") == kind),
            {"classifier_gen": "classifier gen.", "regression_gen": "regression gen."},
            target,
        )
        for kind in sorted(trained["latents"].unique().to_list())
    }
    order = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN)
    verdict = max((r["verdict"] for r in rows.values()), key=order.index)
    details = " | ".join(f"{kind} latents: {r['details']}" for kind, r in rows.items())
    if verdict == NOT_REPRODUCED and any(r["verdict"] == REPRODUCED for r in rows.values()):
        details = "partly: " + details
    main = rows.get("continuous", next(iter(rows.values())))  # the paper's latents when run
    return main | {"target": target, "verdict": verdict, "details": details}


def verdicts_table(
    summary: pl.DataFrame, vs_p_rows: pl.DataFrame, multitask_rows: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One row per claim id of ``CLAIMS``, from the summary table, the random-task variant's rows
    and the Johnston & Fusi arm's rows (per network, as ``sweep_cell`` writes them)."""
    latent = summary.filter(pl.col("task") == "latent")
    if latent.is_empty():
        missing = _row(None, None, "", NOT_RUN, "no latent-task rows")
        outcomes = {k: missing for k in ("abstract.latent_tasks", "abstract.above_input", "abstract.nulls")}
    else:
        outcomes = {
            "abstract.latent_tasks": _latent_tasks(latent),
            "abstract.above_input": _above_input(latent),
            "abstract.nulls": _nulls(latent),
        }
    variant = vs_p_rows.filter((pl.col("task") == "random") & (pl.col("layer") == "trained"))
    outcomes["abstract.grows_with_p.sign_mse"] = _grows(
        variant,
        {"ps": "PS", "ccgp": "CCGP"},
        f"PS and CCGP at P_max - P_min > 0 (paired interval over seeds) and Spearman >= {MIN_SPEARMAN}",
    )
    empty = pl.DataFrame(schema={"task": pl.String, "layer": pl.String})
    outcomes["abstract.grows_with_p"] = _grows_multitask(
        multitask_rows.filter(pl.col("task") == "multitask") if multitask_rows is not None else empty
    )
    return pl.DataFrame(
        [{"id": k, "claim": text, **outcomes[k]} for k, text in CLAIMS.items()],
        schema_overrides={"measured": pl.Float64, "low": pl.Float64, "high": pl.Float64, "n": pl.Int64},
    )
