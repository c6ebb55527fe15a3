"""Held-out selection for the image experiment: every choice is made on the validation split.

``prepare_images`` writes three in-distribution splits, each ``.npz`` carrying its own name
(``split``: "train", "validation" or "test") and the rows it took from its source (``index``, into
``pool``). The validation split is carved, stratified, from the training data. Anything the
evaluation chooses (today: the softmax temperatures of the confidences and of the exploratory
entropy score) is chosen by a function here, and each such function takes a :class:`Split` and
refuses any split that is not the validation split. The test split is read by the final evaluation
only. Hyperparameters of the models and of iterative GBI are fixed in the config, not selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taskabs import ood
from taskabs.calibration import fit_temperature

SPLITS = ("train", "validation", "test")


class SelectionOnWrongSplit(ValueError):
    """A selection function was handed a split other than validation (e.g. the test split)."""


@dataclass(frozen=True)
class Split:
    """One in-distribution split: uint8 images (N, ...), int labels (N,), and its name."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.name not in SPLITS:
            raise ValueError(f"split name must be one of {SPLITS}, got {self.name!r}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")


def load_split(path: str | Path) -> Split:
    """A split as written by ``prepare_images``; its name comes from the file, not the caller."""
    with np.load(path) as arrays:
        return Split(str(arrays["split"]), arrays["images"], arrays["labels"])


def require_validation(split: Split) -> None:
    """Raise :class:`SelectionOnWrongSplit` unless ``split`` is the validation split."""
    if not isinstance(split, Split) or split.name != "validation":
        name = getattr(split, "name", type(split).__name__)
        raise SelectionOnWrongSplit(f"selection may only see the validation split, got {name!r}")


def select_temperatures(validation: Split, g: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Softmax temperatures, each fitted by the NLL of the validation labels.

    ``g`` (N, C) is the one-step gradient and ``logits`` (N, C) the classifier's output on the
    validation images, in their order. Returns ``gbi`` (for softmax(-g / T)), ``gbi_centred_unit``
    (for softmax(-u / T), u the centred unit gradient: the exploratory entropy score) and
    ``classifier`` (for softmax(logits / T)).
    """
    require_validation(validation)
    labels = validation.labels
    if len(g) != len(labels) or len(logits) != len(labels):
        raise ValueError(f"outputs for {len(g)} / {len(logits)} images, validation has {len(labels)}")
    return {
        "gbi": fit_temperature(-np.asarray(g, dtype=np.float64), labels),
        "gbi_centred_unit": fit_temperature(-ood.centred_unit_gradient(g), labels),
        "classifier": fit_temperature(np.asarray(logits, dtype=np.float64), labels),
    }
