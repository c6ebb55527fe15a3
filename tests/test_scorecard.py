import math

import polars as pl
import pytest

from taskabs.pipeline.scorecard import CLAIMS, evaluate_claims, versus_paper


@pytest.mark.parametrize(
    "mean, sd, paper, higher, expected",
    [
        (0.90, 0.01, 0.89, True, "reproduced"),  # within 2 sd
        (0.95, 0.01, 0.89, True, "better"),
        (0.80, 0.01, 0.89, True, "worse"),
        (0.20, 0.01, 0.24, False, "better"),  # lower is better (an error)
        (0.30, None, 0.30, True, "reproduced"),  # single seed: tolerance only
        (0.86, float("nan"), 0.8546, True, "reproduced"),
    ],
)
def test_versus_paper(mean, sd, paper, higher, expected):
    assert versus_paper(mean, sd, paper, higher_is_better=higher) == expected


def sequence_summary(gbi: float, lstm: float) -> pl.DataFrame:
    metrics = [
        "steps_to_threshold",
        "forgetting_mse_second_to_last",
        "shared_unit_ratio",
        "corr_one_step_window",
    ]
    rows = [
        {"metric": m, "model": model, "mean": value, "sd": 0.01, "n_seeds": 3}
        for m in metrics
        for model, value in (("gbi_lstm", gbi), ("lstm", lstm))
    ]
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


def language_tables(
    iterative: float, one_step: float, gbi_gain: float, lstm_gain: float, *, window: int = 64
):
    inference = pl.DataFrame(
        [
            {"window_length": window, "method": m, "mean": v, "sd": 0.01, "n_seeds": 3}
            for m, v in (("iterative", iterative), ("one_step", one_step), ("exhaustive", 0.93))
        ]
    )
    recomposition = pl.DataFrame(
        [
            {"model": m, "held_out": True, "corpus": "c_headers", "gain_mean": g, "gain_sd": 0.005}
            for m, g in (("gbi_lstm", gbi_gain), ("lstm", lstm_gain))
        ]
    )
    return {"language_inference": inference, "language_recomposition": recomposition}


def test_language_claims_check_the_targets_and_the_margin_over_seeds():
    good = {r["claim"]: r for r in evaluate_claims(language_tables(0.92, 0.91, 0.025, 0.001))}
    assert [
        good[c]["verdict"] for c in ("gbi.lm.corpus_inference", "gbi.lm.one_step", "gbi.lm.recomposition")
    ] == ["reproduced"] * 3
    bad = {r["claim"]: r for r in evaluate_claims(language_tables(0.85, 0.85, 0.012, 0.004))}
    assert bad["gbi.lm.corpus_inference"]["verdict"] == "worse"  # below 0.90
    assert bad["gbi.lm.one_step"]["verdict"] == "worse"  # 8 points below the exhaustive likelihood
    assert bad["gbi.lm.recomposition"]["verdict"] == "worse"  # gains within one sd of each other
    short = {r["claim"]: r for r in evaluate_claims(language_tables(0.92, 0.91, 0.02, 0.0, window=16))}
    assert short["gbi.lm.corpus_inference"]["verdict"] == "not run"
    assert "window_lengths: [16]" in short["gbi.lm.one_step"]["ours"]
