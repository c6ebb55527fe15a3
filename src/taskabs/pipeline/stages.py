"""Which library function runs for which Snakemake rule (grep a rule name to find its code).

Entries are ``"module:function"`` and imported only when their rule runs: a job then imports one
experiment module, not all of them (each costs about a second of CPU per job).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

STAGES: dict[str, str] = {
    "generate_sequences": "taskabs.experiments.sequence.stages:generate",
    "train_sequence": "taskabs.experiments.sequence.stages:train",
    "infer_sequence": "taskabs.experiments.sequence.stages:infer",
    "recompose_sequence": "taskabs.experiments.sequence.stages:recompose",
    "evaluate_sequence": "taskabs.experiments.sequence.stages:evaluate",
    "tabulate_sequence": "taskabs.experiments.sequence.summary:tabulate",
    "plot_sequence": "taskabs.experiments.sequence.summary:plot",
    "simulate_gdln": "taskabs.experiments.gdln.stages:simulate",
    "plot_gdln": "taskabs.experiments.gdln.stages:plot",
    "fetch_images": "taskabs.experiments.images.stages:fetch",
    "prepare_images": "taskabs.experiments.images.stages:prepare",
    "train_image_generative": "taskabs.experiments.images.stages:train_generative",
    "train_image_classifier": "taskabs.experiments.images.stages:train_classifier",
    "infer_images": "taskabs.experiments.images.stages:infer",
    "recompose_images": "taskabs.experiments.images.stages:recompose",
    "tabulate_images": "taskabs.experiments.images.summary:tabulate",
    "plot_images": "taskabs.experiments.images.summary:plot",
    "sweep_geometry": "taskabs.experiments.geometry.stages:sweep_cell",
    "sequence_geometry": "taskabs.experiments.geometry.stages:sequence_geometry",
    "tabulate_geometry": "taskabs.experiments.geometry.stages:tabulate",
    "plot_geometry": "taskabs.experiments.geometry.stages:plot",
    "gather_corpora": "taskabs.experiments.language.stages:gather",
    "prepare_corpora": "taskabs.experiments.language.stages:prepare",
    "train_language": "taskabs.experiments.language.stages:train",
    "infer_language": "taskabs.experiments.language.stages:infer",
    "recompose_language": "taskabs.experiments.language.stages:recompose",
    "language_geometry": "taskabs.experiments.language.stages:geometry",
    "tabulate_language": "taskabs.experiments.language.summary:tabulate",
    "plot_language": "taskabs.experiments.language.summary:plot",
    "scorecard": "taskabs.pipeline.scorecard:build",
}


def _entry(rule: str) -> tuple[str, str]:
    if rule not in STAGES:
        raise KeyError(f"rule {rule!r} has no stage in taskabs.pipeline.stages.STAGES")
    module, function = STAGES[rule].split(":")
    return module, function


def stage_module(rule: str) -> str:
    """The module a rule's stage lives in (what its code hash is computed from)."""
    return _entry(rule)[0]


def stage(rule: str) -> Callable:
    """The function a rule runs; KeyError naming the rule if it has none."""
    module, function = _entry(rule)
    return getattr(importlib.import_module(module), function)
