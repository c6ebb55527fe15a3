"""The toy-sequence claims of the GBI paper (Hummos et al. 2024, docs/science.md §1), judged on our
tables: directions (GBI-LSTM vs LSTM) with intervals over seeds; the paper's numbers are shown, not
compared, because our evaluation protocol differs (docs/experiments/sequence.md)."""

from __future__ import annotations

import polars as pl

from taskabs.claims import (
    NOT_REPRODUCED,
    REPRODUCED,
    Claim,
    Interval,
    Outcome,
    Setting,
    Tables,
    below,
    difference,
    exceeds,
    summary_interval,
)

GBI = "GBI (Hummos et al. 2024)"
TOY = "toy Gaussian sequences, task means 0.2/0.8, sigma 0.1, blocks of 25-50 trials"
PAPER_TOY = Setting(
    TOY, "GBI-LSTM (z input) vs LSTM, trained online on a blocked curriculum", "next-observation MSE"
)


def our_setting(config: dict) -> Setting:
    data = config.get("data", {})
    means = "/".join(f"{m[0]:g}" for m in data.get("means", [])) or "?"
    return Setting(
        f"toy Gaussian sequences, task means {means}, sigma {data.get('sigma', '?')}, "
        f"blocks of {data.get('block_min', '?')}-{data.get('block_max', '?')} trials",
        "GBI-LSTM (z input) vs LSTM, trained online on a blocked curriculum",
        "next-observation MSE",
    )


def _metric(tables: Tables, metric: str, model: str) -> Interval:
    return summary_interval(tables["sequence_summary"], metric=metric, model=model)


def _less(metric: str, *, label: str):
    """The GBI-LSTM's ``metric`` is lower than the LSTM's: the interval of the difference is below 0."""

    def evaluate(tables: Tables) -> Outcome:
        g, l = _metric(tables, metric, "gbi_lstm"), _metric(tables, metric, "lstm")
        gap = difference(g, l)
        return Outcome(
            f"{label}: GBI-LSTM {g.text()} vs LSTM {l.text()}; difference {gap.text()}",
            g.mean,
            below(gap, 0.0),
            gap.low if gap.defined else None,
            gap.high if gap.defined else None,
        )

    return evaluate


def _at_least(metric: str, threshold: float):
    def evaluate(tables: Tables) -> Outcome:
        m = _metric(tables, metric, "gbi_lstm")
        return Outcome(m.text(), m.mean, exceeds(m, threshold), m.low, m.high)

    return evaluate


def _recomposition(tables: Tables) -> Outcome:
    t = tables["sequence_recomposition"].filter(pl.col("novel"))
    gain = {}
    for model in ("gbi_lstm", "lstm"):
        r = t.filter(pl.col("model") == model)
        gain[model] = float(
            (r["loss_before_mean"] - r["loss_after_mean"]).mean() / r["loss_before_mean"].mean()
        )
    return Outcome(
        f"novel-task loss lowered by {gain['gbi_lstm']:.0%} (GBI-LSTM) vs {gain['lstm']:.0%} (LSTM)",
        gain["gbi_lstm"],
        REPRODUCED if gain["gbi_lstm"] > gain["lstm"] else NOT_REPRODUCED,
    )


def _claim(id, statement, paper_value, tables, evaluate):
    return Claim(id, "sequence", GBI, statement, paper_value, PAPER_TOY, our_setting, tables, evaluate)


CLAIMS = [
    _claim(
        "gbi.seq.learning_speed",
        "GBI-LSTM learns faster than the LSTM (steps to threshold)",
        "faster",
        ("sequence_summary",),
        _less("steps_to_threshold", label="steps"),
    ),
    _claim(
        "gbi.seq.forgetting",
        "GBI-LSTM forgets less: MSE on the second-to-last block",
        "0.24 vs 0.30",
        ("sequence_summary",),
        _less("forgetting_mse_second_to_last", label="MSE"),
    ),
    _claim(
        "gbi.seq.shared_units",
        "GBI-LSTM shares fewer units between tasks",
        "fewer",
        ("sequence_summary",),
        _less("shared_unit_ratio", label="shared-unit ratio"),
    ),
    _claim(
        "gbi.seq.gradient_likelihood",
        "one-step gradients behave like the log-likelihood (correlation >= 0.9)",
        "qualitative",
        ("sequence_summary",),
        _at_least("corr_one_step_window", 0.9),
    ),
    _claim(
        "gbi.seq.recomposition",
        "optimising z fits novel tasks; not so the plain LSTM's inputs",
        "qualitative",
        ("sequence_recomposition",),
        _recomposition,
    ),
]
