import math

import polars as pl
import pytest

from taskabs.scorecard import CLAIMS, evaluate_claims, versus_paper


@pytest.mark.parametrize("mean, sd, paper, higher, expected", [
    (0.90, 0.01, 0.89, True, "reproduced"),     # within 2 sd
    (0.95, 0.01, 0.89, True, "better"),
    (0.80, 0.01, 0.89, True, "worse"),
    (0.20, 0.01, 0.24, False, "better"),        # lower is better (an error)
    (0.30, None, 0.30, True, "reproduced"),     # single seed: tolerance only
    (0.86, float("nan"), 0.8546, True, "reproduced"),
])
def test_versus_paper(mean, sd, paper, higher, expected):
    assert versus_paper(mean, sd, paper, higher_is_better=higher) == expected


def sequence_summary(gbi: float, lstm: float) -> pl.DataFrame:
    metrics = ["steps_to_threshold", "forgetting_mse_second_to_last", "shared_unit_ratio", "corr_one_step_window"]
    rows = [{"metric": m, "model": model, "mean": value, "sd": 0.01, "n_seeds": 3}
            for m in metrics for model, value in (("gbi_lstm", gbi), ("lstm", lstm))]
    return pl.DataFrame(rows)


def test_claims_without_their_tables_are_not_run():
    rows = evaluate_claims({})
    assert {r["verdict"] for r in rows} == {"not run"}
    assert len(rows) == len(CLAIMS) and len({r["claim"] for r in rows}) == len(CLAIMS)


def test_sequence_claims_follow_the_direction_of_the_comparison():
    good = {r["claim"]: r for r in evaluate_claims({"sequence_summary": sequence_summary(0.95, 1.5)})}
    assert good["gbi.seq.forgetting"]["verdict"] == "reproduced"
    assert good["gbi.seq.gradient_likelihood"]["verdict"] == "reproduced"
    bad = {r["claim"]: r for r in evaluate_claims({"sequence_summary": sequence_summary(1.5, 0.95)})}
    assert bad["gbi.seq.forgetting"]["verdict"] == "worse"
    assert bad["gbi.seq.learning_speed"]["verdict"] == "worse"
    assert math.isclose(good["gbi.seq.forgetting"]["value"], 0.95)
