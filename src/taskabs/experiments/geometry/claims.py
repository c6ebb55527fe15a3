"""The abstraction-theory claims (Wang, Johnston & Fusi; docs/science.md §2 and §4), judged by the
geometry experiment's verdict table (one row per claim, matched by id)."""

from __future__ import annotations

import polars as pl

from taskabs.claims import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, Outcome, Setting, Tables

ABSTRACT = "Abstraction theory (Wang, Johnston & Fusi)"
PAPER_SETTING = Setting(
    "latents y in {-1,+1}^d, random nonlinear embedding",
    "MLP trained to convergence on latent-aligned tasks",
    "last-hidden-layer PS and CCGP",
)
PAPER_RANDOM_TASKS = Setting(
    "5 continuous latents, non-abstract 500-d input",
    "multitask ReLU net, P unit-norm random hyperplane tasks, sigmoid + BCE",
    "classifier and regression generalisation vs P",
)


def our_setting(config: dict) -> Setting:
    return PAPER_SETTING


def our_random_setting(config: dict) -> Setting:
    d = config.get("d", ["?"])
    return Setting(
        f"{d} binary latents, random nonlinear embedding",
        f"MLP, P random-hyperplane tasks, loss {config.get('loss', 'mse')}",
        "last-hidden-layer PS and CCGP vs P",
    )


def _from_verdicts(row_id: str):
    """The verdict table's row ``row_id``; its 'partly reproduced' is not reproduced, with details."""

    def evaluate(tables: Tables) -> Outcome:
        row = tables["geometry_verdicts"].filter(pl.col("id") == row_id).row(0, named=True)
        verdict = {"reproduced": REPRODUCED, "not run": NOT_RUN}.get(row["verdict"], NOT_REPRODUCED)
        value = row["measured"]
        shown = f"{value:.3g} (target {row['target']})" if value is not None else ""
        details = "" if verdict in (REPRODUCED, NOT_RUN) else f"{row['verdict']}: {row['details']}"
        return Outcome(shown, value, verdict, details=details)

    return evaluate


def _claim(id, statement, paper_value, row_id, *, setting=PAPER_SETTING, ours=our_setting):
    return Claim(
        id=id,
        experiment="geometry",
        paper=ABSTRACT,
        statement=statement,
        paper_value=paper_value,
        paper_setting=setting,
        our_setting=ours,
        tables=("geometry_verdicts",),
        evaluate=_from_verdicts(row_id),
    )


CLAIMS = [
    _claim(
        "abstract.latent_tasks", "last-layer PS and CCGP >= 0.9 for every activation and depth", "near 1", "a"
    ),
    _claim(
        "abstract.above_input",
        "trained PS and CCGP clearly above the input and the untrained net",
        "well above",
        "b",
    ),
    _claim(
        "abstract.grows_with_p",
        "with random-hyperplane tasks, abstraction grows with P",
        "grows",
        "c",
        setting=PAPER_RANDOM_TASKS,
        ours=our_random_setting,
    ),
    _claim("abstract.nulls", "trained geometry is above the null models", "above", "d"),
]
