"""Stage functions of the representation-geometry experiment (taskabs.experiments.geometry.stages), end to
end on tiny settings: sweep cells, sequence-model geometry, tables with verdicts, figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from taskabs.claims import INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, REPRODUCED, VERDICTS
from taskabs.experiments.geometry import stages as geometry
from taskabs.experiments.sequence import stages as sequence
from taskabs.models import sequence as sequence_models
from taskabs.pipeline.jobs import Job, seed_everything

# Tiny networks (~0.05 s each): few steps, small input; the claim's direction already shows.
SWEEP = {
    "seeds": [0, 1],
    "random_tasks": [1, 8],
    "random_tasks_depths": [1],
    "steps": 60,
    "eval_steps": [0, 30, 60],
    "network": {"input_dim": 32, "n_null_ps": 2},
    "multitask": {"tasks": [1, 8], "seeds": [0, 1], "network": {"steps": 60, "n_splits": 3, "input_dim": 32}},
}
CELLS = [("relu", 1), ("tanh", 2)]
SEQUENCE = {
    "data": {
        "means": [[0.2], [0.8]],
        "novel_means": [[0.5]],
        "sigma": 0.1,
        "block_min": 5,
        "block_max": 10,
        "train_streams": 8,
        "train_length": 3000,
        "test_streams": 4,
        "test_length": 80,
        "probe_streams": 2,
        "probe_length": 5,
        "seed": 3,
    },
    "model": {"hidden": 16},
    "train": {"chunk": 10, "lr": 0.01, "checkpoint_every": 1000},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: extra intra-op threads only contend on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cell_job(tmp: Path, activation: str, depth: int, config: dict = SWEEP) -> Job:
    return Job(
        rule="geometry_cell",
        input={},
        output={"rows": tmp / f"rows_{activation}_{depth}.parquet"},
        config=config,
        wildcards={
            "d": "3",
            "activation": activation,
            "depth": str(depth),
            "width": "24",
            "weight_decay": "0.05",
        },
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[list[Path], list[dict]]:
    tmp = tmp_path_factory.mktemp("sweep")
    jobs = [cell_job(tmp, a, d) for a, d in CELLS]
    metrics = [geometry.sweep_cell(job) for job in jobs]
    return [job.output["rows"] for job in jobs], metrics


@pytest.fixture(scope="module")
def sequence_runs(tmp_path_factory) -> list[Path]:
    """A tiny sequence dataset, a GBI-LSTM and an LSTM trained 300 steps each, their geometry."""
    tmp = tmp_path_factory.mktemp("sequence")
    sequence.generate(
        Job(
            rule="generate_sequences",
            input={},
            config=SEQUENCE,
            output={k: tmp / f"{k}.npz" for k in ("train", "test", "probes")},
        )
    )
    paths = []
    for model in sequence_models.MODELS:
        seed_everything(0, 1)
        wildcards = {"model": model, "seed": "0"}
        sequence.train(
            Job(
                rule="train_sequence",
                input={"train": tmp / "train.npz"},
                config=SEQUENCE,
                output={"model": tmp / f"{model}.pt", "curve": tmp / f"{model}.csv"},
                wildcards=wildcards,
                params={"checkpoint": str(tmp / f"{model}.ckpt")},
            )
        )
        job = Job(
            rule="sequence_geometry",
            input={"model": tmp / f"{model}.pt", "test": tmp / "test.npz"},
            output={"metrics": tmp / f"{model}_geometry.json"},
            wildcards=wildcards,
            config={"sequence_null_draws": 10, "sequence_null_decoding_draws": 1},
        )
        geometry.sequence_geometry(job)
        paths.append(job.output["metrics"])
    return paths


# ------------------------------------------------------------------------------------- sweep
def test_cell_specs_follow_the_config():
    cell = geometry.parse_cell(
        {"d": "3", "activation": "gelu", "depth": "1", "width": "50", "weight_decay": "0.01"}
    )
    assert cell == {"d": 3, "activation": "gelu", "depth": 1, "width": 50, "weight_decay": 0.01}
    specs = geometry.cell_specs(cell, SWEEP)
    assert [(s.seed, s.task, s.n_tasks) for s, _ in specs] == [
        (0, "latent", 3),
        (0, "random", 1),
        (0, "random", 8),
        (1, "latent", 3),
        (1, "random", 1),
        (1, "random", 8),
    ]
    assert all(s.width == 50 and s.steps == 60 and s.input_dim == 32 for s, _ in specs)
    assert [ev for _, ev in specs if _.task == "latent"] == [(0, 30, 60)] * 2
    # random tasks only at the listed depths
    assert len(geometry.cell_specs({**cell, "depth": 2}, SWEEP)) == 2
    # Johnston & Fusi's protocol only in the listed activations and depths (default relu, depth 1)
    assert geometry.multitask_specs(cell, SWEEP) == []
    multi = geometry.multitask_specs({**cell, "activation": "relu"}, SWEEP)
    assert [(s.latents, s.n_tasks, s.seed) for s in multi] == [
        ("binary", 1, 0),
        ("binary", 1, 1),
        ("binary", 8, 0),
        ("binary", 8, 1),
    ]
    assert all(s.width == 50 and s.steps == 60 and s.d == 5 for s in multi)
    with pytest.raises(ValueError, match="cannot set"):
        geometry.multitask_specs({**cell, "activation": "relu"}, {"multitask": {"network": {"depth": 2}}})
    with pytest.raises(ValueError, match="cannot set"):
        geometry.cell_specs(cell, {**SWEEP, "network": {"width": 10}})
    with pytest.raises(ValueError, match="eval_steps"):
        geometry.cell_specs(cell, {**SWEEP, "eval_steps": [0, 61]})
    with pytest.raises(ValueError, match="activation"):
        geometry.parse_cell(
            {"d": "3", "activation": "swish", "depth": "1", "width": "50", "weight_decay": "0"}
        )


def test_sweep_cell_writes_every_network_with_the_cell_as_columns(swept):
    paths, metrics = swept
    # relu depth 1: 2 seeds x (latent + P in {1, 8}) + Johnston & Fusi 2 P x 2 seeds; tanh depth 2: 2 seeds
    assert [m["n_networks"] for m in metrics] == [10.0, 2.0]
    everything = pl.read_parquet(paths[0])
    multitask = everything.filter(pl.col("task") == "multitask")
    assert multitask.select("activation", "depth", "width", "d").unique().rows() == [("relu", 1, 24, 5)]
    assert multitask.filter(pl.col("layer") == "trained")["train_accuracy"].min() > 0.5
    rows = everything.filter(pl.col("task") != "multitask")
    assert set(rows["layer"]) == {"input", "untrained", "trained", "during_training"}
    cell = rows.select("d", "activation", "depth", "width", "weight_decay").unique().rows()
    assert cell == [(3, "relu", 1, 24, 0.05)]
    trained = rows.filter(pl.col("layer") == "trained")
    assert sorted(trained.select("seed", "task", "n_tasks").rows()) == [
        (0, "latent", 3),
        (0, "random", 1),
        (0, "random", 8),
        (1, "latent", 3),
        (1, "random", 1),
        (1, "random", 8),
    ]
    during = rows.filter(pl.col("layer") == "during_training")
    assert set(during["task"]) == {"latent"} and sorted(set(during["step"])) == [0, 30, 60]
    latent = trained.filter(pl.col("task") == "latent")
    untrained = rows.filter((pl.col("layer") == "untrained") & (pl.col("task") == "latent"))
    # even 60 steps make the latents far more parallel and decodable across conditions
    assert latent["ps"].min() > untrained["ps"].max() + 0.2
    assert latent["ccgp"].min() >= 0.9
    assert metrics[0]["latent_trained_ps_mean"] == pytest.approx(latent["ps"].mean())


# ---------------------------------------------------------------------------------- sequence
def test_sequence_factors_by_hand():
    x = np.array([[[0.1], [0.9], [0.3], [0.7]]])  # one stream, 4 trials
    tasks = np.array([[0, 1, 1, 0]])
    labels = geometry.sequence_factors(x, tasks, np.array([[0.2], [0.8]]))
    # trial t: task of t; previous observation x_{t-1} vs the mean of task_{t-1}
    assert labels.tolist() == [[1, -1], [1, 1], [-1, -1]]


def test_factor_geometry_of_a_factorised_code_against_its_nulls():
    rng = np.random.default_rng(0)
    labels = np.where(rng.random((400, 2)) > 0.5, 1, -1)
    activity = labels @ rng.normal(size=(2, 20)) + 0.3 * rng.normal(size=(400, 20))
    out = geometry.factor_geometry(activity, labels, n_null_ps=20, n_null_decoding=2, rng=rng)
    assert out["ps_task"] > 0.95 and out["ps_observation"] > 0.95 and out["ccgp"] == 1.0
    assert abs(out["ps_null_shuffle"]) < 0.3 and abs(out["ccgp_null_shuffle"] - 0.5) < 0.1
    assert out["n_samples"] == 400 and sum(out[f"n_condition_{c}"] for c in range(4)) == 400


def test_sequence_geometry_of_trained_models_is_finite(sequence_runs):
    for path in sequence_runs:
        result = json.loads(path.read_text())
        assert result["n_samples"] == 4 * 79  # first trial of each stream dropped
        for key in ("ps", "ps_task", "ps_observation", "ccgp", "ccgp_task", "ccgp_observation", "shattering"):
            assert math.isfinite(result[key]) and -1 <= result[key] <= 1, key
            assert math.isfinite(result[f"{key}_null_shuffle"]), key
    gbi = json.loads(sequence_runs[0].read_text())
    assert gbi["model"] == "gbi_lstm"
    # the GBI-LSTM is given the task: its hidden state codes it along one direction
    assert gbi["ps_task"] > 0.9 and gbi["ccgp_task"] > gbi["ccgp_task_null_shuffle"] + 0.3


# ---------------------------------------------------------------------------------- verdicts
def fake_rows(
    *, trained_ps: float, trained_ccgp: float, random_ps: dict[int, float], random_ccgp: dict[int, float]
) -> pl.DataFrame:
    """Rows shaped like sweep_cell's: 2 cells x 3 seeds latent, and random tasks per P."""
    rng = np.random.default_rng(0)
    rows = []
    base = {"d": 3, "width": 100, "weight_decay": 0.05, "step": 0}
    nulls = {
        "ps_null_shuffle": 0.0,
        "ps_null_geometry": 0.0,
        "ccgp_null_shuffle": 0.5,
        "ccgp_null_geometry": 0.5,
        "shattering_null_shuffle": 0.5,
        "shattering_null_geometry": 1.0,
    }
    for activation, depth in (("relu", 1), ("tanh", 2)):
        for seed in range(3):
            jitter = 0.005 * rng.standard_normal()
            for layer, ps, cc in (
                ("input", 0.0, 0.5),
                ("untrained", 0.05, 0.55),
                ("trained", trained_ps + jitter, trained_ccgp),
            ):
                rows.append(
                    base
                    | nulls
                    | {
                        "task": "latent",
                        "n_tasks": 3,
                        "activation": activation,
                        "depth": depth,
                        "seed": seed,
                        "layer": layer,
                        "ps": ps,
                        "ccgp": cc,
                        "shattering": 0.9,
                    }
                )
            for p in random_ps:
                for layer, ps, cc in (
                    ("input", 0.0, 0.5),
                    ("untrained", 0.0, 0.5),
                    ("trained", random_ps[p] + jitter, random_ccgp[p] + jitter),
                ):
                    rows.append(
                        base
                        | nulls
                        | {
                            "task": "random",
                            "n_tasks": p,
                            "activation": activation,
                            "depth": depth,
                            "seed": seed,
                            "layer": layer,
                            "ps": ps,
                            "ccgp": cc,
                            "shattering": 0.9,
                        }
                    )
    return pl.DataFrame(rows)


def fake_multitask(gain: float, *, seeds: int = 4) -> pl.DataFrame:
    """Johnston & Fusi rows: classifier/regression generalisation rising by ``gain`` from P=1 to 16."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(seeds):
        for i, p in enumerate((1, 4, 16)):
            value = 0.6 + gain * i / 2 + 0.01 * rng.standard_normal()
            rows.append(
                {"task": "multitask", "latents": "binary", "n_tasks": p, "seed": seed, "layer": "trained"}
                | {"classifier_gen": value, "regression_gen": value - 0.5, "d": 5, "width": 100}
                | {"weight_decay": 0.01, "activation": "relu", "depth": 1}
            )
    return pl.DataFrame(rows)


CLAIM_IDS = [
    "abstract.latent_tasks",
    "abstract.above_input",
    "abstract.grows_with_p",
    "abstract.grows_with_p.sign_mse",
    "abstract.nulls",
]


def verdicts_of(rows: pl.DataFrame, multitask: pl.DataFrame | None = None) -> dict[str, str]:
    table = geometry.verdicts_table(geometry.summary_table(rows), rows, multitask)
    assert table["id"].to_list() == CLAIM_IDS and set(table["verdict"]) <= set(VERDICTS)
    return dict(zip(table["id"], table["verdict"]))


def test_verdicts_follow_the_stated_rules():
    growing = {1: 0.2, 4: 0.4, 16: 0.6}
    flat = {1: 0.5, 4: 0.3, 16: 0.5}
    good = fake_rows(trained_ps=0.95, trained_ccgp=1.0, random_ps=growing, random_ccgp=growing)
    assert verdicts_of(good, fake_multitask(0.2)) == dict.fromkeys(CLAIM_IDS, REPRODUCED)
    assert verdicts_of(good, fake_multitask(-0.1))["abstract.grows_with_p"] == NOT_REPRODUCED
    assert verdicts_of(good)["abstract.grows_with_p"] == NOT_RUN  # no Johnston & Fusi networks
    # one seed: no interval, so growth cannot be decided
    assert verdicts_of(good, fake_multitask(0.2, seeds=1))["abstract.grows_with_p"] == INCONCLUSIVE
    # PS flat in P while CCGP grows: the variant holds only in part
    partly = geometry.verdicts_table(
        geometry.summary_table(
            rows := fake_rows(trained_ps=0.95, trained_ccgp=1.0, random_ps=flat, random_ccgp=growing)
        ),
        rows,
    )
    row = partly.filter(pl.col("id") == "abstract.grows_with_p.sign_mse").row(0, named=True)
    assert row["verdict"] == NOT_REPRODUCED and row["details"].startswith("partly:")
    # trained PS 0.3: latent_tasks fails on PS alone (CCGP passes everywhere), above_input not "clear"
    weak = fake_rows(trained_ps=0.3, trained_ccgp=1.0, random_ps=flat, random_ccgp=flat)
    table = geometry.verdicts_table(geometry.summary_table(weak), weak)
    got = {r["id"]: r for r in table.iter_rows(named=True)}
    for claim in ("abstract.latent_tasks", "abstract.above_input"):
        assert got[claim]["verdict"] == NOT_REPRODUCED and got[claim]["details"].startswith("partly:")
    assert got["abstract.grows_with_p.sign_mse"]["verdict"] == NOT_REPRODUCED
    assert got["abstract.nulls"]["verdict"] == REPRODUCED
    # the worst cell's interval over seeds goes with the measured value
    assert got["abstract.latent_tasks"]["low"] < got["abstract.latent_tasks"]["measured"]
    # no random-task networks: the variant cannot be judged
    none = fake_rows(trained_ps=0.95, trained_ccgp=1.0, random_ps={}, random_ccgp={})
    assert verdicts_of(none)["abstract.grows_with_p.sign_mse"] == NOT_RUN


# ---------------------------------------------------------------------------- tables, figures
def test_tabulate_and_plot_end_to_end(swept, sequence_runs, tmp_path):
    paths, _ = swept
    tables = {k: tmp_path / f"{k}.csv" for k in ("summary", "vs_p", "multitask", "verdicts", "sequence")}
    metrics = geometry.tabulate(
        Job(
            rule="tabulate_geometry",
            input={"rows": paths, "sequence": sequence_runs},
            output=tables,
            config={},
        )
    )
    assert metrics["n_networks"] == 8.0 + 4.0  # + Johnston & Fusi: 2 P x 2 seeds in the relu cell

    verdicts = pl.read_csv(tables["verdicts"])
    assert verdicts["id"].to_list() == CLAIM_IDS
    assert set(verdicts["verdict"]) <= set(VERDICTS) and verdicts.columns == [
        "id",
        "claim",
        "measured",
        "low",
        "high",
        "n",
        "target",
        "verdict",
        "details",
    ]
    multitask = pl.read_csv(tables["multitask"])
    assert sorted(set(multitask["n_tasks"])) == [1, 8] and set(multitask["n_seeds"]) == {2}
    assert {"classifier_gen_mean", "regression_gen_mean", "latent_copy_fraction", "target_ps_mean"} <= set(
        multitask.columns
    )
    summary = pl.read_csv(tables["summary"])
    latent_trained = summary.filter((pl.col("task") == "latent") & (pl.col("layer") == "trained"))
    assert latent_trained.height == 2 and latent_trained["n"].to_list() == [2, 2]
    assert {"ps_mean", "ps_sd", "ps_min", "ccgp_mean", "shattering_mean"} <= set(summary.columns)
    vs_p = pl.read_csv(tables["vs_p"])
    assert sorted(set(vs_p["n_tasks"])) == [1, 8] and set(vs_p["layer"]) == {"input", "untrained", "trained"}
    assert vs_p.filter(pl.col("layer") == "trained")["n"].to_list() == [
        2,
        2,
    ]  # one cell with random tasks x 2 seeds
    seq = pl.read_csv(tables["sequence"])
    assert (
        set(seq["model"]) == {"gbi_lstm", "lstm"} and seq.filter(pl.col("metric") == "ccgp_task").height == 2
    )

    figures = {
        k: tmp_path / f"{k}.png" for k in ("by_architecture", "vs_p", "multitask", "vs_step", "sequence")
    }
    geometry.plot(
        Job(
            rule="plot_geometry",
            input={
                "summary": tables["summary"],
                "vs_p": tables["vs_p"],
                "multitask": tables["multitask"],
                "sequence": tables["sequence"],
                "rows": paths,
            },
            output=figures,
            config={},
        )
    )
    for path in figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave no temporaries


def test_tabulate_without_sequence_runs(swept, tmp_path):
    tables = {k: tmp_path / f"{k}.csv" for k in ("summary", "vs_p", "multitask", "verdicts", "sequence")}
    geometry.tabulate(
        Job(rule="tabulate_geometry", input={"rows": swept[0], "sequence": []}, output=tables, config={})
    )
    assert pl.read_csv(tables["sequence"]).is_empty()
    figures = {
        k: tmp_path / f"{k}.png" for k in ("by_architecture", "vs_p", "multitask", "vs_step", "sequence")
    }
    geometry.plot(
        Job(
            rule="plot_geometry",
            input={
                "summary": tables["summary"],
                "vs_p": tables["vs_p"],
                "multitask": tables["multitask"],
                "sequence": tables["sequence"],
                "rows": swept[0],
            },
            output=figures,
            config={},
        )
    )
    assert figures["sequence"].exists()
