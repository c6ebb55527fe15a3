"""Which library function runs for which Snakemake rule (grep a rule name to find its code).

Entries are ``"module:function"`` and imported only when their rule runs: a job then imports one
experiment module, not all of them (each costs about a second of CPU per job).
"""

from __future__ import annotations

import importlib
from typing import Callable

STAGES: dict[str, str] = {
    "generate_sequences": "taskabs.experiments.sequence:generate",
    "train_sequence": "taskabs.experiments.sequence:train",
    "infer_sequence": "taskabs.experiments.sequence:infer",
    "recompose_sequence": "taskabs.experiments.sequence:recompose",
    "evaluate_sequence": "taskabs.experiments.sequence:evaluate",
    "tabulate_sequence": "taskabs.experiments.sequence_summary:tabulate",
    "plot_sequence": "taskabs.experiments.sequence_summary:plot",
    "simulate_gdln": "taskabs.experiments.gdln:simulate",
    "plot_gdln": "taskabs.experiments.gdln:plot",
    "fetch_images": "taskabs.experiments.images:fetch",
    "prepare_images": "taskabs.experiments.images:prepare",
    "train_image_generative": "taskabs.experiments.images:train_generative",
    "train_image_classifier": "taskabs.experiments.images:train_classifier",
    "infer_images": "taskabs.experiments.images:infer",
    "recompose_images": "taskabs.experiments.images:recompose",
    "tabulate_images": "taskabs.experiments.images_summary:tabulate",
    "plot_images": "taskabs.experiments.images_summary:plot",
    "sweep_geometry": "taskabs.experiments.geometry:sweep_cell",
    "sequence_geometry": "taskabs.experiments.geometry:sequence_geometry",
    "tabulate_geometry": "taskabs.experiments.geometry:tabulate",
    "plot_geometry": "taskabs.experiments.geometry:plot",
    "gather_corpora": "taskabs.experiments.language:gather",
    "prepare_corpora": "taskabs.experiments.language:prepare",
    "train_language": "taskabs.experiments.language:train",
    "infer_language": "taskabs.experiments.language:infer",
    "recompose_language": "taskabs.experiments.language:recompose",
    "language_geometry": "taskabs.experiments.language:geometry",
    "tabulate_language": "taskabs.experiments.language_summary:tabulate",
    "plot_language": "taskabs.experiments.language_summary:plot",
    "scorecard": "taskabs.scorecard:build",
}


def stage(rule: str) -> Callable:
    """The function a rule runs; KeyError naming the rule if it has none."""
    if rule not in STAGES:
        raise KeyError(f"rule {rule!r} has no stage in taskabs.stages.STAGES")
    module, function = STAGES[rule].split(":")
    return getattr(importlib.import_module(module), function)
