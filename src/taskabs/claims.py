"""Claims of the papers and how ours are judged: one vocabulary, comparability as data, intervals.

A :class:`Claim` states what a paper found, its number (the one home of that number), and the
:class:`Setting` (data, protocol, metric) under which it was found. Its ``evaluate`` reads our
tables and returns an :class:`Outcome`. A verdict against the paper's number ("better", "worse",
"reproduced") is only given when our setting matches the paper's; otherwise the claim is judged
only on what transfers (a direction, a gap, a ranking), and a row comparing numbers says
"not comparable" with the differences named. Intervals are 95% t-intervals over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

Tables = dict[str, pl.DataFrame]

# The project's one verdict vocabulary (scorecard, experiment verdict tables, report).
REPRODUCED = "reproduced"  # the claim holds in our setting (a value: the paper's is inside our interval)
NOT_REPRODUCED = "not reproduced"  # it does not (the interval excludes it, or it fails a floor)
BETTER = "better"  # a value in a matching setting, the interval beyond the paper's in the good direction
WORSE = "worse"  # ... in the bad direction
NOT_COMPARABLE = "not comparable"  # a value whose data, protocol or metric differ from the paper's
INCONCLUSIVE = "inconclusive"  # too few seeds, or an interval too wide to decide
NOT_RUN = "not run"  # the experiment is disabled or its table is missing
VERDICTS = (REPRODUCED, NOT_REPRODUCED, BETTER, WORSE, NOT_COMPARABLE, INCONCLUSIVE, NOT_RUN)


@dataclass(frozen=True)
class Setting:
    """Under what a number was obtained; two settings match when all three fields are equal."""

    data: str
    protocol: str
    metric: str

    def differences(self, other: Setting) -> list[str]:
        return [
            f"{name}: paper {getattr(self, name)!r}, ours {getattr(other, name)!r}"
            for name in ("data", "protocol", "metric")
            if getattr(self, name) != getattr(other, name)
        ]


@dataclass(frozen=True)
class Interval:
    """Mean and 95% t-interval over ``n`` seeds (``low``/``high`` NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def from_summary(cls, mean: float, sd: float | None, n: int) -> Interval:
        """From a table's mean, sd and n_seeds columns."""
        if n < 2 or sd is None or not math.isfinite(sd):
            return cls(float(mean), math.nan, math.nan, int(n))
        from scipy.stats import t as student_t  # here: the workflow imports claims to plan, scipy costs ~1 s

        half = student_t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        return cls(float(mean), float(mean - half), float(mean + half), int(n))

    @classmethod
    def of(cls, values) -> Interval:
        """From per-seed values.

        >>> Interval.of([1.0, 2.0, 3.0]).text()
        '2 [-0.484, 4.48] (n=3)'
        """
        values = [float(v) for v in values]
        n = len(values)
        mean = sum(values) / n if n else math.nan
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        return cls.from_summary(mean, sd, n)

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, fmt: str = ".3g") -> str:
        if not self.defined:
            return f"{self.mean:{fmt}} (n={self.n}, no interval)"
        return f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}] (n={self.n})"


def difference(a: Interval, b: Interval) -> Interval:
    """a - b with half-widths added in quadrature (independent seeds)."""
    if not (a.defined and b.defined):
        return Interval(a.mean - b.mean, float("nan"), float("nan"), min(a.n, b.n))
    half = ((a.high - a.mean) ** 2 + (b.high - b.mean) ** 2) ** 0.5
    return Interval(a.mean - b.mean, a.mean - b.mean - half, a.mean - b.mean + half, min(a.n, b.n))


def versus_paper(ours: Interval, paper: float, *, higher_is_better: bool) -> str:
    """A value against the paper's, in a matching setting: the interval must decide.

    >>> versus_paper(Interval(0.95, 0.93, 0.97, 5), 0.89, higher_is_better=True)
    'better'
    >>> versus_paper(Interval(0.90, 0.85, 0.95, 5), 0.89, higher_is_better=True)
    'reproduced'
    """
    if not ours.defined:
        return INCONCLUSIVE
    if ours.low <= paper <= ours.high:
        return REPRODUCED
    above = ours.low > paper
    return BETTER if above == higher_is_better else WORSE


def exceeds(ours: Interval, threshold: float) -> str:
    """A one-sided claim 'ours > threshold': reproduced when the whole interval is above it."""
    if not ours.defined:
        return INCONCLUSIVE
    if ours.low > threshold:
        return REPRODUCED
    return NOT_REPRODUCED if ours.high < threshold else INCONCLUSIVE


def below(ours: Interval, threshold: float) -> str:
    """A one-sided claim 'ours < threshold': reproduced when the whole interval is below it."""
    if not ours.defined:
        return INCONCLUSIVE
    if ours.high < threshold:
        return REPRODUCED
    return NOT_REPRODUCED if ours.low > threshold else INCONCLUSIVE


@dataclass(frozen=True)
class Outcome:
    ours: str  # as shown: "0.903 [0.89, 0.92] (n=5)"
    value: float | None
    verdict: str
    low: float | None = None
    high: float | None = None
    floors: str = ""  # the trivial baselines it was judged against, as shown
    details: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


def interval_outcome(ours: Interval, verdict: str, *, prefix: str = "", **extra) -> Outcome:
    low, high = (ours.low, ours.high) if ours.defined else (None, None)
    return Outcome(prefix + ours.text(), ours.mean, verdict, low, high, **extra)


@dataclass(frozen=True)
class Claim:
    """One claim of a paper and the evaluation of ours.

    ``kind`` is "value" when the paper's number itself is compared (then the settings must
    match), or "qualitative" when only a direction, gap or ranking is judged (the settings are
    still shown). ``applies(experiment_config)`` says whether this configuration answers it.
    """

    id: str
    experiment: str  # config key of the experiment whose tables answer it
    paper: str
    statement: str
    paper_value: str  # as the paper states it
    paper_setting: Setting
    our_setting: Callable[[dict], Setting]
    tables: tuple[str, ...]  # results/tables/<name>.csv it reads; any missing -> not run
    evaluate: Callable[[Tables], Outcome]
    kind: str = "qualitative"
    applies: Callable[[dict], bool] = field(default=lambda config: True)

    def __post_init__(self) -> None:
        if self.kind not in ("value", "qualitative"):
            raise ValueError(f"claim {self.id}: kind must be 'value' or 'qualitative'")


def judge(claim: Claim, tables: Tables, experiment_config: dict | None) -> dict:
    """The scorecard row of one claim: settings, comparability, outcome."""
    enabled = bool((experiment_config or {}).get("enabled", True))
    ours = claim.our_setting(experiment_config or {}) if enabled else None
    differences = claim.paper_setting.differences(ours) if ours else []
    row = {
        "claim": claim.id,
        "paper": claim.paper,
        "statement": claim.statement,
        "kind": claim.kind,
        "paper_value": claim.paper_value,
        "paper_setting": _setting_text(claim.paper_setting),
        "our_setting": _setting_text(ours) if ours else "",
        "comparable": bool(ours) and not differences,
        "differences": "; ".join(differences),
    }
    runnable = enabled and claim.applies(experiment_config) and all(t in tables for t in claim.tables)
    outcome = claim.evaluate(tables) if runnable else Outcome("", None, NOT_RUN)
    verdict = outcome.verdict
    if claim.kind == "value" and differences and verdict in (REPRODUCED, BETTER, WORSE):
        verdict = NOT_COMPARABLE
    return row | {
        "ours": outcome.ours,
        "value": outcome.value,
        "low": outcome.low,
        "high": outcome.high,
        "floors": outcome.floors,
        "verdict": verdict,
        "details": outcome.details,
    }


def _setting_text(setting: Setting) -> str:
    return f"{setting.data} | {setting.protocol} | {setting.metric}"


def summary_interval(frame: pl.DataFrame, **where) -> Interval:
    """The interval of the one row of a mean/sd/n_seeds table matching ``where`` (column=value)."""
    rows = frame
    for column, value in where.items():
        rows = rows.filter(pl.col(column) == value)
    if rows.height != 1:
        raise KeyError(f"expected one row where {where}, found {rows.height}")
    row = rows.row(0, named=True)
    return Interval.from_summary(row["mean"], row["sd"], int(row["n_seeds"]))
