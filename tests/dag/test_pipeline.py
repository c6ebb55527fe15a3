"""End to end: the smoke DAG with the real Snakemake, MLflow and DVC, in a fresh copy of the project."""

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from conftest import BIN, copy_project, run, snakemake, tool_env
from taskabs import hashing
from taskabs.hashing import sha256_file as file_sha256
from taskabs.pipeline import provenance

pytestmark = pytest.mark.slow

FIGURES = [
    "sequence_learning_curves",
    "sequence_switch_accuracy",
    "sequence_gradient_vs_posterior",
    "sequence_recomposition",
    "sequence_forgetting",
    "gdln_xor",
    "gdln_routing",
    "gdln_race",
    "gdln_zero_shot",
    "images_accuracy",
    "images_roc",
    "images_calibration",
    "images_recomposition",
    "geometry_by_architecture",
    "geometry_vs_p",
    "geometry_vs_step",
    "geometry_sequence",
    "language_inference",
    "language_recomposition",
]
TABLES = [
    "sequence_summary",
    "sequence_recomposition",
    "sequence_learning_curves",
    "sequence_switch_accuracy",
    "gdln_checks",
    "images_accuracy",
    "images_ood",
    "images_calibration",
    "images_recomposition",
    "geometry_verdicts",
    "geometry_summary",
    "geometry_vs_p",
    "geometry_sequence",
    "language_inference",
    "language_recomposition",
    "language_geometry",
    "language_corpora",
    "language_learning_curves",
]
JOBS_PER_RUN = {
    "generate_sequences": 1,
    "train_sequence": 2,
    "infer_sequence": 2,
    "recompose_sequence": 2,
    "evaluate_sequence": 2,
    "tabulate_sequence": 1,
    "plot_sequence": 1,
    "simulate_gdln": 4,
    "plot_gdln": 1,
    "scorecard": 1,
    "fetch_images": 1,
    "prepare_images": 1,
    "train_image_generative": 1,
    "train_image_classifier": 1,
    "infer_images": 1,
    "recompose_images": 1,
    "tabulate_images": 1,
    "plot_images": 1,
    "sweep_geometry": 2,
    "sequence_geometry": 2,
    "tabulate_geometry": 1,
    "plot_geometry": 1,
    "gather_corpora": 1,
    "prepare_corpora": 1,
    "train_language": 2,
    "infer_language": 1,
    "recompose_language": 2,
    "language_geometry": 2,
    "tabulate_language": 1,
    "plot_language": 1,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("pipeline"))
    # first run, up to the sequence models: both training jobs are SIGKILLed after 12 of their 20
    # steps (checkpoint at 10); the second run must resume them and finish everything else
    targets = [f"results/sequence/{m}/seed0/model.pt" for m in ("gbi_lstm", "lstm")]
    killed = snakemake(root, *targets, check=False, TASKABS_KILL_AT_STEP="12")
    assert killed.returncode != 0
    assert "train_sequence" in killed.stdout + killed.stderr
    snakemake(root)
    return root


@pytest.fixture(scope="module")
def runs(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("task-abstraction")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def test_smoke_dag_produces_every_table_and_figure(project):
    for name in FIGURES:
        assert (project / f"results/figures/{name}.png").stat().st_size > 5000
    for name in TABLES:
        assert len(pl.read_csv(project / f"results/tables/{name}.csv")) > 0
    summary = pl.read_csv(project / "results/tables/sequence_summary.csv")
    for metric in (
        "accuracy_one_step",
        "accuracy_iterative",
        "accuracy_exhaustive",
        "accuracy_exact_posterior",
        "corr_one_step_exact",
        "forgetting_mse_second_to_last",
        "shared_unit_ratio",
    ):
        rows = summary.filter(pl.col("metric") == metric)
        assert sorted(rows["model"]) == ["gbi_lstm", "lstm"], metric
        assert all(math.isfinite(v) for v in rows["mean"]), metric
    # the Bayesian filter is near-perfect on this well-separated process: a check of the data path
    exact = summary.filter(pl.col("metric") == "accuracy_exact_posterior")["mean"]
    assert exact.min() > 0.9


def test_scorecard_lists_every_claim_with_a_verdict_and_its_runs(project, runs):
    from taskabs.pipeline.scorecard import CLAIMS

    client, all_runs = runs
    card = pl.read_csv(project / "results/scorecard.csv")
    assert card["claim"].to_list() == [c.id for c in CLAIMS]
    from taskabs.claims import VERDICTS

    assert set(card["verdict"]) <= set(VERDICTS)
    # a value is only judged against the paper's when the settings match
    judged = card.filter(pl.col("verdict").is_in(["better", "worse"]))
    assert judged["comparable"].all(), judged.select("claim", "differences")
    known = {r.info.run_id for r in all_runs}
    for row in card.filter(pl.col("verdict") != "not run").iter_rows(named=True):
        assert row["mlflow_runs"] and set(row["mlflow_runs"].split()) <= known, row["claim"]
    metrics = json.loads((project / "results/scorecard.json").read_text())
    assert set(metrics) == set(card["claim"])


def test_every_job_is_an_mlflow_run_nested_under_its_invocation(project, runs):
    client, all_runs = runs
    parents = [r for r in all_runs if r.data.tags.get("rule") == "pipeline"]
    assert sorted(r.info.status for r in parents) == ["FAILED", "FINISHED"]
    finished = next(r for r in parents if r.info.status == "FINISHED")
    children = [
        r for r in all_runs if r.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents}
    ]
    # across both invocations every job finished exactly once; only the killed training jobs failed
    done, failed = {}, {}
    for r in children:
        counts = done if r.info.status == "FINISHED" else failed
        counts[r.data.tags["rule"]] = counts.get(r.data.tags["rule"], 0) + 1
    assert done == JOBS_PER_RUN
    assert failed == {"train_sequence": 2}
    assert any(r.data.tags["mlflow.parentRunId"] == finished.info.run_id for r in children)
    children = [r for r in children if r.info.status == "FINISHED"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    for r in children:
        tags = r.data.tags
        assert r.info.status == "FINISHED"
        assert tags["git_commit"] == head and tags["git_dirty"] == "false"
        assert len(tags["config_hash"]) == 64 and (
            len(tags["data_hash"]) == 32 or tags["data_hash"] == "none"
        )
        assert tags["device"] == "cpu" and tags["host"] and tags["seed"] in ("0", "1", "2")
        assert json.loads(tags["wildcards"]) is not None
        assert r.data.params, "the job's resolved config is logged as params"
        # MLflow's own conventions: standard source tags, inputs as datasets, config as a file
        assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.git.commit"] == head
        input_md5s = {v for k, v in tags.items() if k.startswith("input.") and k.endswith(".md5")}
        assert input_md5s == {d.dataset.digest for d in r.inputs.dataset_inputs}, tags["rule"]
        assert {"wall_seconds", "cpu_seconds_job", "max_rss_mb"} <= set(r.data.metrics)
        for key, value in tags.items():
            if key.startswith("output.") and key.endswith(".sha256"):
                path = project / tags[key.replace(".sha256", ".path")]
                assert provenance.path_hash_rows({"p": path})["p"] == value, path  # a file or a folder
    first = children[0].info.run_id
    config_file = Path(client.download_artifacts(first, "config.json", str(project / ".tmp")))
    assert hashing.config_hash(json.loads(config_file.read_text())) == children[0].data.tags["config_hash"]


def test_killed_training_resumed_from_its_checkpoint(runs):
    client, all_runs = runs
    train = [
        r for r in all_runs if r.data.tags.get("rule") == "train_sequence" and r.info.status == "FINISHED"
    ]
    assert len(train) == 2
    for r in train:
        assert r.data.metrics["resumed_from_step"] == 10
        assert len(client.get_metric_history(r.info.run_id, "train_loss")) == 20


def test_report_builds_with_every_figure(project):
    snakemake(project, "--report", "results/report.html")
    html = (project / "results/report.html").read_text(errors="replace")
    for name in FIGURES:
        assert name in html


def test_second_run_has_nothing_to_do(project):
    result = snakemake(project)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_dvc_round_trip_restores_results_without_reruns(project):
    dvc = str(BIN / "dvc")
    run([dvc, "commit", "--force", "--quiet"], project)
    assert "up to date" in run([dvc, "status"], project).stdout
    run([dvc, "push", "--quiet"], project)
    before = file_sha256(project / "results/tables/sequence_summary.csv")
    for name in ("data", "results", ".snakemake"):  # as in a fresh clone: no files, no Snakemake metadata
        subprocess.run(["rm", "-rf", str(project / name)], check=True)
    subprocess.run(["rm", "-rf", str(project / ".dvc/cache")], check=True)
    run([dvc, "pull", "--quiet"], project)
    snakemake(project, "--touch", "--forceall")  # as `make pull` does: Snakemake's metadata back,
    run([str(BIN / "taskabs"), "settle-times", "data", "results", "logs"], project)  # then one file time
    assert file_sha256(project / "results/tables/sequence_summary.csv") == before
    result = snakemake(project, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr
    assert "up to date" in run([dvc, "status"], project).stdout
    # the scorecard is DVC metrics and the curves are DVC plots, for `dvc metrics/plots diff`
    metrics = json.loads(run([dvc, "metrics", "show", "--json"], project).stdout)
    assert "gbi.seq.forgetting" in json.dumps(metrics)
    plots = json.loads(run([dvc, "plots", "show", "--json"], project).stdout)["data"]
    assert {"learning_curves", "inference_after_switch"} <= set(plots)


def test_an_upstream_change_reruns_everything_downstream_in_one_invocation(project):
    """Editing the data's config re-runs generation and every job that reads what it makes, at once."""
    overlay = project / "config" / "longer.yaml"
    overlay.write_text("sequence: {data: {train_length: 600}}\n")
    try:
        dry = run(
            [
                str(BIN / "snakemake"),
                "-n",
                "--workflow-profile",
                "profiles/default",
                "--configfile",
                "config/smoke.yaml",
                "config/longer.yaml",
            ],
            project,
        )
    finally:
        overlay.unlink()
    stats = (dry.stdout + dry.stderr).split("Job stats:")[1].split("total")[0]
    for rule in (
        "generate_sequences",
        "train_sequence",
        "infer_sequence",
        "recompose_sequence",
        "evaluate_sequence",
        "sequence_geometry",
        "tabulate_sequence",
        "plot_sequence",
        "scorecard",
    ):
        assert rule in stats, (rule, stats)
    assert "train_language" not in stats and "simulate_gdln" not in stats  # only what depends on it


def test_audit_passes_on_the_whole_smoke_dag(project):
    # after the DVC round trip: every result traced to a finished run, code, data, config, hashes
    result = run([str(BIN / "taskabs"), "audit", "--configfile", "config/smoke.yaml"], project, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "MISMATCH" not in result.stdout


def test_snakemake_killed_with_sigkill_reruns_without_manual_cleanup(project):
    proc = subprocess.Popen(
        [
            str(BIN / "snakemake"),
            "--workflow-profile",
            "profiles/default",
            "--configfile",
            "config/smoke.yaml",
            "--forcerun",
            "plot_sequence",
        ],
        cwd=project,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    locks = project / ".snakemake/locks"
    deadline = time.time() + 60
    while time.time() < deadline and not (locks.is_dir() and any(locks.iterdir())):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(locks.iterdir()), "the killed run left its lock behind"
    run([str(BIN / "taskabs"), "unlock-stale"], project)
    snakemake(project)
    assert "Nothing to be done" in snakemake(project, "-n").stdout


def test_mlflow_ui_serves_the_runs(project, runs):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{project}/mlflow.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=project,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                assert time.time() < deadline, "mlflow ui did not start"
                time.sleep(0.5)
        client, all_runs = runs
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            method="POST",
            headers={"Content-Type": "application/json"},
            data=json.dumps(
                {"experiment_ids": [all_runs[0].info.experiment_id], "max_results": 1000}
            ).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            served = json.load(response)["runs"]
        assert {r["info"]["run_id"] for r in served} == {r.info.run_id for r in all_runs}
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
