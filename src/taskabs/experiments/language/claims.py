"""The language-model claims of the GBI paper (Hummos et al. 2024, docs/science.md §1): z-optimisation
on a held-out corpus, plus our own targets for corpus inference (stated as targets, not paper values)."""

from __future__ import annotations

import polars as pl

from taskabs.claims import (
    NOT_RUN,
    Claim,
    Interval,
    Outcome,
    Setting,
    Tables,
    below,
    difference,
    exceeds,
    interval_outcome,
    summary_interval,
)

GBI = "GBI (Hummos et al. 2024)"
LM_WINDOW = 64  # characters: the window length the corpus-inference targets are stated for
TARGET_ACCURACY = 0.9  # corpus accuracy of iterative GBI at LM_WINDOW characters (our target)
ONE_STEP_GAP = 0.05  # most accuracy one-step GBI may lose to the exhaustive likelihood (our target)
PAPER_SETTING = Setting(
    "BabyLM corpora", "character LSTM LM with z = corpus; z optimised on a held-out corpus", "held-out loss"
)
TARGET_SETTING = Setting("our corpora", "character LSTM LM with z = corpus", "corpus accuracy (our target)")


def our_setting(config: dict) -> Setting:
    source = config.get("data", {}).get("source", "debian")
    data = "BabyLM corpora" if source == "babylm" else "Debian-packaged corpora (code, quotations, man pages)"
    return Setting(
        data, "character LSTM LM with z = corpus; z optimised on a held-out corpus", "held-out loss"
    )


def our_target_setting(config: dict) -> Setting:
    return TARGET_SETTING


def _window(tables: Tables) -> pl.DataFrame | Outcome:
    """The inference rows at LM_WINDOW, or a 'not run' outcome naming the lengths that were run."""
    table = tables["language_inference"]
    rows = table.filter(pl.col("window_length") == LM_WINDOW)
    if rows.is_empty():
        lengths = sorted(table["window_length"].unique())
        return Outcome(
            f"no {LM_WINDOW}-character windows (language.inference.window_lengths: {lengths})", None, NOT_RUN
        )
    return rows


def _accuracy(method: str, target: float):
    def evaluate(tables: Tables) -> Outcome:
        rows = _window(tables)
        if isinstance(rows, Outcome):
            return rows
        ours = summary_interval(rows, method=method)
        return interval_outcome(ours, exceeds(ours, target))

    return evaluate


def _one_step_gap(tables: Tables) -> Outcome:
    """Points of accuracy one-step GBI loses to the exhaustive likelihood at LM_WINDOW characters."""
    rows = _window(tables)
    if isinstance(rows, Outcome):
        return rows
    gap = difference(summary_interval(rows, method="exhaustive"), summary_interval(rows, method="one_step"))
    return interval_outcome(gap, below(gap, ONE_STEP_GAP), prefix="exhaustive - one-step: ")


def _recomposition(tables: Tables) -> Outcome:
    """Relative loss decrease on the held-out corpus from fitting z: GBI-LSTM minus LSTM, above 0."""
    held = tables["language_recomposition"].filter(pl.col("held_out"))
    gain = {
        r["model"]: Interval.from_summary(r["gain_mean"], r["gain_sd"], int(r.get("n_seeds") or 0))
        for r in held.iter_rows(named=True)
    }
    margin = difference(gain["gbi_lstm"], gain["lstm"])
    return interval_outcome(
        margin,
        exceeds(margin, 0.0),
        prefix=f"held-out loss lowered by {gain['gbi_lstm'].mean:.1%} (GBI-LSTM) vs "
        f"{gain['lstm'].mean:.1%} (LSTM); difference ",
    )


def _claim(id, statement, value, tables, evaluate, *, setting, ours):
    return Claim(id, "language", GBI, statement, value, setting, ours, tables, evaluate)


CLAIMS = [
    _claim(
        "gbi.lm.corpus_inference",
        f"iterative GBI infers the corpus of a {LM_WINDOW}-character window",
        f">= {TARGET_ACCURACY:.2f} (our target)",
        ("language_inference",),
        _accuracy("iterative", TARGET_ACCURACY),
        setting=TARGET_SETTING,
        ours=our_target_setting,
    ),
    _claim(
        "gbi.lm.one_step",
        f"one-step GBI within {100 * ONE_STEP_GAP:g} points of the exhaustive likelihood "
        f"({LM_WINDOW} characters)",
        f"<= {100 * ONE_STEP_GAP:g} points (our target)",
        ("language_inference",),
        _one_step_gap,
        setting=TARGET_SETTING,
        ours=our_target_setting,
    ),
    _claim(
        "gbi.lm.recomposition",
        "optimising z lowers a held-out corpus's loss; not so the plain LSTM's inputs",
        "qualitative",
        ("language_recomposition",),
        _recomposition,
        setting=PAPER_SETTING,
        ours=our_setting,
    ),
]
