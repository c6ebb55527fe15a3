"""The scorecard's judgement: intervals decide verdicts, unlike settings are never compared,
claims of disabled experiments are not run, and every claim has one home."""

import importlib
import math
from pathlib import Path

import polars as pl
import pytest
from scipy import stats

import taskabs
from taskabs.claims import (
    VERDICTS,
    Claim,
    Interval,
    Outcome,
    Setting,
    interval_outcome,
    judge,
    versus_paper,
)
from taskabs.pipeline.scorecard import CLAIM_MODULES, CLAIMS, evaluate_claims, inputs


@pytest.mark.parametrize(
    "interval, paper, higher, expected",
    [
        (Interval(0.90, 0.88, 0.92, 5), 0.89, True, "reproduced"),  # paper inside the interval
        (Interval(0.95, 0.93, 0.97, 5), 0.89, True, "better"),
        (Interval(0.80, 0.78, 0.82, 5), 0.89, True, "worse"),
        (Interval(0.20, 0.19, 0.21, 5), 0.24, False, "better"),  # lower is better (an error)
        (Interval(0.30, math.nan, math.nan, 1), 0.30, True, "inconclusive"),  # one seed: no interval
    ],
)
def test_versus_paper_uses_the_interval(interval, paper, higher, expected):
    assert versus_paper(interval, paper, higher_is_better=higher) == expected


def test_interval_is_the_t_interval_over_seeds():
    values = [0.81, 0.84, 0.86, 0.83, 0.88]
    ours = Interval.of(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values))
    assert ours.low == pytest.approx(low) and ours.high == pytest.approx(high)
    assert not Interval.of([0.5]).defined


def _value_claim(paper_setting: Setting) -> Claim:
    return Claim(
        id="x.value",
        experiment="x",
        paper="P",
        statement="s",
        paper_value="0.5",
        paper_setting=paper_setting,
        our_setting=lambda config: Setting("ours", "protocol", "metric"),
        tables=("t",),
        evaluate=lambda tables: interval_outcome(Interval(0.9, 0.85, 0.95, 5), "better"),
        kind="value",
    )


def test_a_value_under_another_setting_is_not_comparable_and_names_the_difference():
    row = judge(_value_claim(Setting("paper data", "protocol", "metric")), {"t": pl.DataFrame()}, {})
    assert row["verdict"] == "not comparable" and not row["comparable"]
    assert "data: paper 'paper data', ours 'ours'" in row["differences"]
    same = judge(_value_claim(Setting("ours", "protocol", "metric")), {"t": pl.DataFrame()}, {})
    assert same["verdict"] == "better" and same["comparable"] and same["differences"] == ""


def test_claims_without_their_tables_or_with_their_experiment_disabled_are_not_run():
    rows = evaluate_claims({})
    assert {r["verdict"] for r in rows} == {"not run"}
    assert len(rows) == len(CLAIMS) == len({r["claim"] for r in rows})
    config = {c.experiment: {"enabled": False} for c in CLAIMS}
    assert {r["verdict"] for r in evaluate_claims({}, config)} == {"not run"}


def test_every_experiment_with_claims_is_in_the_scorecard():
    root = Path(taskabs.__file__).parent / "experiments"
    with_claims = {p.parent.name for p in root.glob("*/claims.py")}
    assert {m.__name__.split(".")[-2] for m in CLAIM_MODULES} == with_claims
    for name in with_claims:
        module = importlib.import_module(f"taskabs.experiments.{name}.claims")
        assert all(c.experiment == name for c in module.CLAIMS)


def test_scorecard_inputs_are_derived_from_the_enabled_claims():
    config = {c.experiment: {"enabled": c.experiment == "language", "data": {}} for c in CLAIMS}
    assert inputs(config) == {
        "language_inference": "results/tables/language_inference.csv",
        "language_recomposition": "results/tables/language_recomposition.csv",
    }


def sequence_summary(gbi: float, lstm: float, sd: float = 0.01) -> pl.DataFrame:
    metrics = [
        "steps_to_threshold",
        "forgetting_mse_second_to_last",
        "shared_unit_ratio",
        "corr_one_step_window",
    ]
    rows = [
        {"metric": m, "model": model, "mean": value, "sd": sd, "n_seeds": 5}
        for m in metrics
        for model, value in (("gbi_lstm", gbi), ("lstm", lstm))
    ]
    return pl.DataFrame(rows)


def test_sequence_claims_follow_the_direction_and_need_a_clear_interval():
    good = {r["claim"]: r for r in evaluate_claims({"sequence_summary": sequence_summary(0.95, 1.5)})}
    assert good["gbi.seq.forgetting"]["verdict"] == "reproduced"
    assert good["gbi.seq.gradient_likelihood"]["verdict"] == "reproduced"
    assert math.isclose(good["gbi.seq.forgetting"]["value"], 0.95)
    bad = {r["claim"]: r for r in evaluate_claims({"sequence_summary": sequence_summary(1.5, 0.95)})}
    assert bad["gbi.seq.forgetting"]["verdict"] == "not reproduced"
    assert bad["gbi.seq.learning_speed"]["verdict"] == "not reproduced"
    noisy = {
        r["claim"]: r for r in evaluate_claims({"sequence_summary": sequence_summary(0.95, 1.0, sd=0.5)})
    }
    assert noisy["gbi.seq.forgetting"]["verdict"] == "inconclusive"  # the difference's interval spans 0


def language_tables(iterative, one_step, gbi_gain, lstm_gain, *, window=64, sd=0.005):
    inference = pl.DataFrame(
        [
            {"window_length": window, "method": m, "mean": v, "sd": 0.01, "n_seeds": 5}
            for m, v in (("iterative", iterative), ("one_step", one_step), ("exhaustive", 0.93))
        ]
    )
    recomposition = pl.DataFrame(
        [
            {"model": m, "held_out": True, "corpus": "c", "gain_mean": g, "gain_sd": sd, "n_seeds": 5}
            for m, g in (("gbi_lstm", gbi_gain), ("lstm", lstm_gain))
        ]
    )
    return {"language_inference": inference, "language_recomposition": recomposition}


def test_language_claims_check_the_targets_and_the_margin_over_seeds():
    good = {r["claim"]: r for r in evaluate_claims(language_tables(0.95, 0.92, 0.025, 0.001))}
    names = ("gbi.lm.corpus_inference", "gbi.lm.one_step", "gbi.lm.recomposition")
    assert [good[c]["verdict"] for c in names] == ["reproduced"] * 3
    bad = {r["claim"]: r for r in evaluate_claims(language_tables(0.85, 0.85, 0.004, 0.03))}
    assert [bad[c]["verdict"] for c in names] == ["not reproduced"] * 3
    short = {r["claim"]: r for r in evaluate_claims(language_tables(0.92, 0.91, 0.02, 0.0, window=16))}
    assert short["gbi.lm.corpus_inference"]["verdict"] == "not run"
    assert "window_lengths: [16]" in short["gbi.lm.one_step"]["ours"]


def test_outcomes_speak_the_one_vocabulary():
    with pytest.raises(ValueError, match="partly"):
        Outcome("", None, "partly reproduced")
    assert len(set(VERDICTS)) == len(VERDICTS)
