"""Which library function runs for which Snakemake rule (grep a rule name to find its code)."""

from __future__ import annotations

from typing import Callable

from taskabs.experiments import (
    gdln,
    geometry,
    images,
    images_summary,
    language,
    language_summary,
    sequence,
    sequence_summary,
)
from taskabs import scorecard
from taskabs.jobs import Job

STAGES: dict[str, Callable[[Job], dict | None]] = {
    "generate_sequences": sequence.generate,
    "train_sequence": sequence.train,
    "infer_sequence": sequence.infer,
    "recompose_sequence": sequence.recompose,
    "evaluate_sequence": sequence.evaluate,
    "tabulate_sequence": sequence_summary.tabulate,
    "plot_sequence": sequence_summary.plot,
    "simulate_gdln": gdln.simulate,
    "plot_gdln": gdln.plot,
    "fetch_images": images.fetch,
    "prepare_images": images.prepare,
    "train_image_generative": images.train_generative,
    "train_image_classifier": images.train_classifier,
    "infer_images": images.infer,
    "recompose_images": images.recompose,
    "tabulate_images": images_summary.tabulate,
    "plot_images": images_summary.plot,
    "sweep_geometry": geometry.sweep_cell,
    "sequence_geometry": geometry.sequence_geometry,
    "tabulate_geometry": geometry.tabulate,
    "plot_geometry": geometry.plot,
    "gather_corpora": language.gather,
    "prepare_corpora": language.prepare,
    "train_language": language.train,
    "infer_language": language.infer,
    "recompose_language": language.recompose,
    "language_geometry": language.geometry,
    "tabulate_language": language_summary.tabulate,
    "plot_language": language_summary.plot,
    "scorecard": scorecard.build,
}
