"""The reproduction scorecard: every claim of the three papers beside ours, and the runs behind it.

The claims live with their experiments (``taskabs.experiments.<key>.claims``) and are judged by
:func:`taskabs.claims.judge` (comparability, intervals, one verdict vocabulary); this stage reads
the experiment tables, judges every claim and attaches the MLflow runs that made each table.
"""

from __future__ import annotations

import polars as pl

from taskabs.claims import Claim, judge
from taskabs.experiments.gdln import claims as gdln_claims
from taskabs.experiments.geometry import claims as geometry_claims
from taskabs.experiments.images import claims as images_claims
from taskabs.experiments.language import claims as language_claims
from taskabs.experiments.sequence import claims as sequence_claims

# In report order; a test checks every experiment package with a claims module is here.
CLAIM_MODULES = (sequence_claims, images_claims, language_claims, geometry_claims, gdln_claims)
CLAIMS: list[Claim] = [claim for module in CLAIM_MODULES for claim in module.CLAIMS]
EXPERIMENTS = tuple(dict.fromkeys(claim.experiment for claim in CLAIMS))


def table_path(name: str) -> str:
    return f"results/tables/{name}.csv"


def inputs(config: dict) -> dict[str, str]:
    """The tables the enabled claims read, by name: the scorecard rule's inputs, derived."""
    return {
        name: table_path(name)
        for claim in CLAIMS
        if config[claim.experiment]["enabled"] and claim.applies(config[claim.experiment])
        for name in claim.tables
    }


def evaluate_claims(tables: dict[str, pl.DataFrame], config: dict | None = None) -> list[dict]:
    """One row per claim; ``config`` maps experiment keys to their config (all enabled if None)."""
    rows = []
    for claim in CLAIMS:
        experiment_config = (config or {}).get(claim.experiment, {"enabled": True})
        rows.append(judge(claim, tables, experiment_config) | {"tables": list(claim.tables)})
    return rows


SCHEMA = {"value": pl.Float64, "low": pl.Float64, "high": pl.Float64}


def build(job) -> dict:
    """Stage: read the experiment tables, judge every claim, attach the runs behind each one."""
    from taskabs.artifacts import write_json, write_table
    from taskabs.pipeline import tracking

    tables = {name: pl.read_csv(path) for name, path in job.input.items()}
    index = tracking.runs_by_output(job.config)
    rows = evaluate_claims(tables, job.config["experiments"])
    for row in rows:
        runs = [
            run
            for name in row.pop("tables")
            if name in job.input
            for run in tracking.runs_behind(str(job.input[name]), index)
        ]
        row["mlflow_runs"] = " ".join(dict.fromkeys(runs))
    frame = pl.DataFrame(rows, schema_overrides=SCHEMA)
    write_table(frame, job.output["table"])
    write_json(
        job.output["metrics"],
        {r["claim"]: {k: r[k] for k in ("value", "low", "high", "verdict", "comparable")} for r in rows},
    )
    counts = frame["verdict"].value_counts()
    return {f"claims_{v.replace(' ', '_')}": float(n) for v, n in counts.iter_rows()} | {
        "claims_total": float(len(rows))
    }
