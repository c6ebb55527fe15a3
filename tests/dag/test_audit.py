"""taskabs audit: each check on synthetic records, then end to end on a real run that we tamper with.

The end-to-end part runs part of the smoke DAG once (every job up to ``evaluate_sequence``: data,
training, evaluation), records it in DVC, and then tampers with one thing at a time (a metrics file,
a data file, the config, the code, the tracking database), restoring it afterwards: the audit must
name exactly the files and checks each tampering breaks, and nothing else.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from conftest import BIN, copy_project, run, snakemake
from taskabs import hashing
from taskabs.pipeline import audit, cli, provenance
from taskabs.pipeline.audit import DvcRecord, Producer, Resolution, RunRecord

CONFIG = "config/smoke.yaml"
# The end-to-end run: the sequence experiment up to evaluation, and the GDLN simulations (two
# experiments whose stages reach different modules: the per-stage code check tells them apart).
UNTIL = ["evaluate_sequence", "simulate_gdln"]


# ---------------------------------------------------------------------------------------------
# Checks on synthetic records (fast)


def record(run_id: str, *, status: str = "FINISHED", start: int = 0, **tags: str) -> RunRecord:
    return RunRecord(run_id, status, start, {k.replace("__", "."): v for k, v in tags.items()})


def test_producing_run_is_the_newest_finished_run_whose_hash_matches_the_file():
    old = record("old", start=1, output__a__path="results/a.json", output__a__sha256="s-old")
    new = record("new", start=2, output__a__path="results/a.json", output__a__sha256="s-new")
    failed = record("failed", status="FAILED", start=3, output__a__path="results/a.json")
    index = audit.index_outputs([old, new, failed])
    # after `dvc checkout` of an older result the older run is its producer
    assert audit.producing_run("results/a.json", index, "s-old").run.run_id == "old"
    assert audit.producing_run("results/a.json", index, "s-new").run.run_id == "new"
    # a tampered file: the newest FINISHED run, whose hash then does not match
    tampered = audit.producing_run("results/a.json", index, "s-edited")
    assert tampered.run.run_id == "new"
    assert not audit.check_artifact(tampered, "results/a.json", "s-edited").ok
    only_failed = audit.index_outputs([failed])
    assert audit.check_run(audit.producing_run("results/a.json", only_failed, "x")).detail.endswith(
        "not FINISHED"
    )
    assert audit.producing_run("results/b.json", index, "x") is None
    assert not audit.check_run(None).ok


def test_a_file_inside_a_directory_output_belongs_to_the_run_that_declared_the_directory():
    run_ = record("d", output__images__path="results/images")
    producer = audit.producing_run("results/images/sub/x.png", audit.index_outputs([run_]), "x")
    assert producer.path == "results/images" and producer.output == "images"
    verdict = audit.check_artifact(producer, "results/images/sub/x.png", "x")
    assert verdict.ok and verdict.detail.startswith("n/a")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_data_check_recomputes_the_data_hash_from_dvc_lock_and_the_files_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # jobs run in the project directory and record relative paths
    rel = [
        str(p.relative_to(tmp_path))
        for p in (write(tmp_path / "data/x.npz", b"x"), write(tmp_path / "results/m.pt", b"m"))
    ]
    md5 = {r: hashing.md5_file(r) for r in rel}
    tags = {
        "data_hash": provenance.data_hash([Path(r) for r in rel]),  # as jobs.py records it
        "input.train.path": rel[0],
        "input.train.md5": md5[rel[0]],
        "input.model.path": rel[1],
        "input.model.md5": md5[rel[1]],
    }
    dvc = DvcRecord(dict(md5), ["data", "results"])
    assert audit.check_data(RunRecord("r", "FINISHED", 0, tags), dvc, tmp_path) == audit.OK

    relocked = DvcRecord({**md5, rel[0]: "f" * 32}, ["data", "results"])  # dvc commit of other bytes
    verdict = audit.check_data(RunRecord("r", "FINISHED", 0, tags), relocked, tmp_path)
    assert not verdict.ok and "dvc.lock records ffffffff" in verdict.detail

    write(tmp_path / rel[0], b"edited")  # edited on disk, not (yet) recorded by DVC
    verdict = audit.check_data(RunRecord("r", "FINISHED", 0, tags), dvc, tmp_path)
    assert not verdict.ok and f"{rel[0]} changed on disk since dvc.lock" in verdict.detail

    unlocked = DvcRecord({}, ["data", "results"], {"data": "manifest abc.dir not in the DVC cache"})
    assert (
        "not in the DVC cache"
        in audit.check_data(RunRecord("r", "FINISHED", 0, tags), unlocked, tmp_path).detail
    )
    assert audit.check_data(
        RunRecord("r", "FINISHED", 0, {"data_hash": "none"}), dvc, tmp_path
    ).detail.startswith("n/a")


def test_config_check_verifies_the_record_and_names_the_keys_that_changed():
    config = {"train": {"steps": 20, "lr": 0.01}}
    config_json = hashing.canonical_json(config)
    run_ = record(
        "r",
        rule="train",
        config_json=config_json,
        config_hash=hashing.config_hash(config),
        output__model__path="results/m.pt",
    )
    producer = Producer(run_, "model", "results/m.pt")
    same = Resolution({}, {"results/m.pt": ("train", {"train": {"lr": 0.01, "steps": 20}})})
    assert audit.check_config(run_, producer, same) == audit.OK  # key order does not matter
    changed = Resolution({}, {"results/m.pt": ("train", {"train": {"steps": 30, "lr": 0.01}})})
    assert (
        audit.check_config(run_, producer, changed).detail
        == "config changed since run: train.steps: 20 -> 30"
    )
    assert "no job of the current config" in audit.check_config(run_, producer, Resolution({}, {})).detail
    forged = RunRecord("r", "FINISHED", 0, {**run_.tags, "config_json": config_json.replace("20", "25")})
    assert "does not hash to config_hash" in audit.check_config(forged, producer, same).detail


def test_the_report_is_listed_as_made_by_snakemake_and_checked_against_dvc_only(tmp_path):
    report = write(tmp_path / "results/report.html", b"<html></html>")
    dvc = DvcRecord({"results/report.html": hashing.md5_file(report)}, ["results"])
    row = audit.audit_file("results/report.html", tmp_path, {}, dvc, Resolution({}, {}), audit.Git(tmp_path))
    assert row["rule"] == "(snakemake --report)" and all(row[c].ok for c in audit.CHECKS)
    assert row["dvc"] == audit.OK
    write(report, b"<html>edited</html>")
    row = audit.audit_file("results/report.html", tmp_path, {}, dvc, Resolution({}, {}), audit.Git(tmp_path))
    assert audit.mismatches([row]) == [("results/report.html", "dvc", row["dvc"].detail)]


def test_cli_passes_every_configfile_and_the_root(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        audit, "main", lambda root, configfiles: seen.update(root=root, files=configfiles) or 1
    )
    assert cli.main(["audit", "--configfile", "a.yaml", "--configfile", "b.yaml", "--root", "proj"]) == 1
    assert seen == {"root": "proj", "files": ["a.yaml", "b.yaml"]}
    cli.main(["audit"])
    assert seen["files"] == ["config/config.yaml"] and seen["root"] == "."


# ---------------------------------------------------------------------------------------------
# End to end: a real run, tampered with one thing at a time


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("audit"))
    snakemake(root, "--until", *UNTIL)  # data, training, evaluation: every kind of check
    run([str(BIN / "dvc"), "commit", "--force", "--quiet"], root)
    return root


@pytest.fixture(autouse=True)
def local_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def audit_of(root: Path) -> tuple[int, str, set[tuple[str, str]]]:
    """(exit code, printed output, {(file, check)} of the mismatches it names)."""
    out = io.StringIO()
    code = audit.main(root, [CONFIG], out=out, until=UNTIL)
    text = out.getvalue()
    named = {
        (line.split()[1], line.split()[2].strip("[]:"))
        for line in text.splitlines()
        if line.startswith("MISMATCH ")
    }
    return code, text, named


@contextlib.contextmanager
def restored(root: Path, *paths: str):
    """Put the given files back as they were afterwards."""
    saved = {p: (root / p).read_bytes() for p in paths}
    try:
        yield
    finally:
        for p, data in saved.items():
            (root / p).write_bytes(data)


def finished_runs(root: Path) -> list[RunRecord]:
    """FINISHED runs that declared outputs, read straight from the tracking database."""
    db = sqlite3.connect(root / "mlflow.db")
    tags: dict[str, dict[str, str]] = {}
    for run_id, key, value in db.execute(
        "SELECT t.run_uuid, t.key, t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
        "WHERE r.status = 'FINISHED' AND r.lifecycle_stage = 'active'"
    ):
        tags.setdefault(run_id, {})[key] = value
    db.close()
    return [
        RunRecord(i, "FINISHED", 0, t)
        for i, t in sorted(tags.items())
        if any(k.startswith("output.") for k in t)
    ]


def results_of(runs: list[RunRecord]) -> list[str]:
    """The files the runs made (the audit checks data/ and results/ alike)."""
    return sorted(p for r in runs for p in r.outputs().values() if p.startswith(("results/", "data/")))


def readers_of(root: Path, path: str) -> list[RunRecord]:
    return [r for r in finished_runs(root) if any(p == path for p, _ in r.inputs().values())]


@pytest.mark.slow
def test_clean_tree_passes_from_the_console_script(project, tmp_path):
    made = results_of(finished_runs(project))
    assert made, "the smoke run recorded no outputs"
    result = run(
        [str(BIN / "taskabs"), "audit", "--configfile", CONFIG, "--root", str(project), "--until", *UNTIL],
        tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in made:
        assert path in result.stdout
    assert "MISMATCH" not in result.stdout and "check out" in result.stdout


@pytest.mark.slow
def test_a_tampered_metrics_file_fails_its_artifact_and_dvc_checks(project):
    metrics = next(p for p in results_of(finished_runs(project)) if p.endswith(".json"))
    with restored(project, metrics):
        values = json.loads((project / metrics).read_text())
        key = next(k for k, v in values.items() if isinstance(v, (int, float)))
        values[key] += 1  # a plausible edit: one number changed
        (project / metrics).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
        code, text, named = audit_of(project)
    [maker] = [r for r in finished_runs(project) if metrics in results_of([r])]
    expected = {(metrics, "artifact"), (metrics, "dvc")}
    expected |= {(p, "record") for p in results_of([maker])}  # MLflow's metric != the file's
    expected |= {(p, "data") for r in readers_of(project, metrics) for p in results_of([r])}
    assert code == 1 and named == expected, text
    assert f"MISMATCH {metrics} [artifact]: sha256 on disk" in text


@pytest.mark.slow
def test_a_tampered_data_file_fails_the_data_check_of_every_result_made_from_it(project):
    data = next(p for r in finished_runs(project) for p, _ in r.inputs().values() if p.startswith("data/"))
    expected = {(p, "data") for r in readers_of(project, data) for p in results_of([r])}
    assert expected
    with restored(project, data, "dvc.lock"):
        with (project / data).open("ab") as f:
            f.write(b"\0")
        code, text, named = audit_of(project)  # edited on disk, DVC not told
        assert code == 1 and named == expected | {(data, "artifact"), (data, "dvc")}, text
        assert f"{data} changed on disk since dvc.lock" in text
        run([str(BIN / "dvc"), "commit", "--force", "--quiet"], project)  # ... and recorded by DVC
        code, text, named = audit_of(project)
        assert code == 1 and named == expected | {(data, "artifact")}, text
        assert f"{data}: run read md5" in text and "dvc.lock records" in text


@pytest.mark.slow
def test_a_changed_config_value_fails_the_config_check_of_exactly_the_jobs_that_read_it(project):
    readers = [r for r in finished_runs(project) if "learning_smooth_steps" in r.tags["config_json"]]
    assert readers
    with restored(project, CONFIG):
        config = yaml.safe_load((project / CONFIG).read_text())
        config.setdefault("sequence", {}).setdefault("evaluation", {})["learning_smooth_steps"] = 3
        (project / CONFIG).write_text(yaml.safe_dump(config))
        code, text, named = audit_of(project)
    assert code == 1 and named == {(p, "config") for p in results_of(readers)}, text
    assert "config changed since run: evaluation.learning_smooth_steps: 10 -> 3" in text


@pytest.mark.slow
def test_a_code_change_since_the_run_fails_the_code_check(project):
    source = "src/taskabs/__init__.py"
    with restored(project, source):
        with (project / source).open("a") as f:
            f.write("# changed after the run\n")
        code, text, named = audit_of(project)
    assert code == 1 and named == {(p, "code") for p in results_of(finished_runs(project))}, text
    assert "code changed since run" in text and source in text


@pytest.mark.slow
def test_a_tampered_tracking_database_fails_the_check_of_each_forged_record(project):
    runs = [r for r in finished_runs(project) if results_of([r])]
    with_inputs = [r for r in runs if r.inputs()]
    assert len(runs) >= 3 and with_inputs
    forged = with_inputs[0]
    deleted, failed = [r for r in runs if r.run_id != forged.run_id][:2]
    name, output = sorted(forged.outputs().items())[0]
    input_key = sorted(forged.inputs())[0]
    edits = [
        ("UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_uuid = ?", (deleted.run_id,)),
        ("UPDATE runs SET status = 'FAILED' WHERE run_uuid = ?", (failed.run_id,)),
        ("UPDATE tags SET value = ? WHERE run_uuid = ? AND key = 'git_commit'", ("f" * 40, failed.run_id)),
        ("UPDATE tags SET value = value || ' ' WHERE run_uuid = ? AND key = 'config_json'", (forged.run_id,)),
        (
            "UPDATE tags SET value = ? WHERE run_uuid = ? AND key = ?",
            ("0" * 64, forged.run_id, f"output.{name}.sha256"),
        ),
        (
            "UPDATE tags SET value = ? WHERE run_uuid = ? AND key = ?",
            ("0" * 32, forged.run_id, f"input.{input_key}.md5"),
        ),
    ]
    backup = project / "mlflow.db.bak"
    shutil.copy2(project / "mlflow.db", backup)
    try:
        db = sqlite3.connect(project / "mlflow.db")
        for sql, args in edits:
            assert db.execute(sql, args).rowcount == 1, sql
        db.commit()
        db.close()
        code, text, named = audit_of(project)
    finally:  # in place: this process's MLflow store keeps its connection to the file open
        shutil.copyfile(backup, project / "mlflow.db")
        backup.unlink()
    expected = {(p, "run") for p in results_of([deleted])}
    expected |= {(p, check) for p in results_of([failed]) for check in ("run", "code")}
    expected |= {(p, check) for p in results_of([forged]) for check in ("config", "data")}
    expected |= {(output, "artifact")}
    assert code == 1 and named == expected, text
    assert "no MLflow run records this file" in text and "is FAILED, not FINISHED" in text
    assert f"commit {'f' * 10} is not in this repository" in text
    assert "config_json does not hash to config_hash" in text


# ---------------------------------------------------------------------------------------------
# Tampering the audit must catch, and changes it must not cry wolf over


def git(root: Path, *args: str) -> None:
    run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], root)


def stage_readers(root: Path, module_file: str) -> list[RunRecord]:
    """FINISHED runs whose stage reached ``module_file`` (from their code_modules tag)."""
    return [r for r in finished_runs(root) if module_file in json.loads(r.tags["code_modules"])]


@pytest.mark.slow
@pytest.mark.parametrize("module", ["src/taskabs/gdln/network.py", "src/taskabs/models/sequence.py"])
def test_a_comment_only_commit_to_one_module_flags_only_the_stages_that_import_it(project, module):
    runs = finished_runs(project)
    readers = stage_readers(project, module)
    assert readers and len(readers) < len([r for r in runs if results_of([r])]), "need a strict subset"
    with restored(project, module):
        with (project / module).open("a") as f:
            f.write("# a comment, committed after the run\n")
        git(project, "commit", "-q", "-am", "comment only")
        try:
            code, text, named = audit_of(project)
        finally:
            (project / module).write_bytes(
                (project / module).read_bytes().replace(b"# a comment, committed after the run\n", b"")
            )
            git(project, "commit", "-q", "-am", "revert the comment")
    assert code == 1 and named == {(p, "code") for p in results_of(readers)}, text
    assert f"code changed since run: {module} (edited)" in text
    code, text, named = audit_of(project)  # the module is back as it was: nothing to report
    assert code == 0, text


@pytest.mark.slow
def test_a_deleted_result_is_reported_missing(project):
    evaluation = next(
        p for p in results_of(finished_runs(project)) if p.startswith("results/") and readers_of(project, p)
    )  # a result other jobs read: their data checks see it gone too
    readers = readers_of(project, evaluation)
    with restored(project, evaluation):
        (project / evaluation).unlink()
        code, text, named = audit_of(project)
    expected = {(evaluation, "exists")} | {(p, "data") for r in readers for p in results_of([r])}
    assert code == 1 and named == expected, text
    assert f"MISMATCH {evaluation} [exists]: missing:" in text


def sql_edit(root: Path, sql: str, *args) -> None:
    db = sqlite3.connect(root / "mlflow.db")
    assert db.execute(sql, args).rowcount >= 1, sql
    db.commit()
    db.close()


@contextlib.contextmanager
def database_restored(root: Path):
    backup = root / "mlflow.db.bak"
    shutil.copy2(root / "mlflow.db", backup)
    try:
        yield
    finally:  # in place: this process's MLflow store keeps its connection to the file open
        shutil.copyfile(backup, root / "mlflow.db")
        backup.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["metric edited", "metric deleted", "param edited", "param deleted"])
def test_mlflow_metrics_and_params_are_compared_with_the_files_and_config(project, edit):
    maker = next(
        r
        for r in finished_runs(project)
        if r.tags.get("rule") == "evaluate_sequence" and json.loads(r.tags["metric_keys"])
    )
    metric = json.loads(maker.tags["metric_keys"])[0]
    param = "evaluation.learning_smooth_steps"
    sql = {
        "metric edited": ("UPDATE metrics SET value = value + 1 WHERE run_uuid = ? AND key = ?", metric),
        "metric deleted": ("DELETE FROM metrics WHERE run_uuid = ? AND key = ?", metric),
        "param edited": ("UPDATE params SET value = '3' WHERE run_uuid = ? AND key = ?", param),
        "param deleted": ("DELETE FROM params WHERE run_uuid = ? AND key = ?", param),
    }[edit]
    with database_restored(project):
        sql_edit(project, sql[0], maker.run_id, sql[1])
        if edit.startswith("metric"):
            sql_edit(
                project, "DELETE FROM latest_metrics WHERE run_uuid = ? AND key = ?", maker.run_id, metric
            )
            if edit == "metric edited":  # MLflow's latest value follows the edit
                sql_edit(
                    project,
                    "INSERT INTO latest_metrics SELECT key, value, timestamp, step, is_nan, run_uuid "
                    "FROM metrics WHERE run_uuid = ? AND key = ?",
                    maker.run_id,
                    metric,
                )
        code, text, named = audit_of(project)
    assert code == 1 and named == {(p, "record") for p in results_of([maker])}, text
    assert (metric if edit.startswith("metric") else param) in text


@pytest.mark.slow
def test_a_dvc_lock_directory_entry_without_its_manifest_is_reported_not_a_crash(project):
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    md5 = next(
        o["md5"] for stage in lock["stages"].values() for o in stage["outs"] if o["md5"].endswith(".dir")
    )
    manifest = project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    hidden = manifest.with_name(manifest.name + ".hidden")
    manifest.rename(hidden)
    try:
        code, text, named = audit_of(project)
    finally:
        hidden.rename(manifest)
    assert code == 1 and "not in the DVC cache" in text, text
    assert "Traceback" not in text


@pytest.mark.slow
def test_a_bit_flipped_model_stops_the_job_that_reads_it_and_verify_repairs_it(project):
    model = next(p for p in results_of(finished_runs(project)) if p.endswith("model.pt"))
    with restored(project, model):
        data = bytearray((project / model).read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit: torch.load still reads it
        (project / model).write_bytes(bytes(data))
        verdict = run([str(BIN / "taskabs"), "verify", "--configfile", CONFIG], project, check=False)
        assert verdict.returncode == 1 and f"CORRUPT {model}" in verdict.stdout, verdict.stdout
        assert "nothing was versioned" in verdict.stdout
        job = snakemake(project, "--until", *UNTIL, "--forcerun", "evaluate_sequence", check=False)
        assert job.returncode != 0
        assert f"input {model} of rule evaluate_sequence fails its check" in job.stdout + job.stderr
    # the repair: set it aside, re-run; the model is made again and everything checks out
    with restored(project, model):
        data = bytearray((project / model).read_bytes())
        data[len(data) // 2] ^= 0x01
        (project / model).write_bytes(bytes(data))
        repaired = run([str(BIN / "taskabs"), "verify", "--repair", "--configfile", CONFIG], project)
        assert "set aside" in repaired.stdout and not (project / model).exists()
        snakemake(project, "--until", *UNTIL)
        run([str(BIN / "taskabs"), "verify", "--configfile", CONFIG], project)
        run([str(BIN / "dvc"), "commit", "--force", "--quiet"], project)
        code, text, named = audit_of(project)
        assert code == 0, text
        saved = (project / model).read_bytes()
    (project / model).write_bytes(saved)  # keep the re-made model (its run is the newest)


@pytest.mark.slow
def test_a_deleted_intermediate_is_remade_with_the_same_bytes_and_the_audit_passes(project):
    """What `make reproduce` does: `taskabs verify --repair` sets aside what was made from a deleted
    model (Snakemake alone would not re-make an intermediate whose consumers are up to date), then
    Snakemake re-makes the model and those outputs, byte for byte (seeded, deterministic kernels)."""
    model = next(p for p in results_of(finished_runs(project)) if p.endswith("lstm/seed0/model.pt"))
    downstream = sorted({p for r in readers_of(project, model) for p in results_of([r])})
    assert downstream, "nothing in the run reads the model"
    before = {p: hashing.sha256_file(project / p) for p in [model, *downstream]}
    (project / model).unlink()
    alone = snakemake(project, *downstream, "--dry-run")  # the outputs as targets: the full DAG's view
    assert "Nothing to be done" in alone.stdout + alone.stderr
    repaired = run([str(BIN / "taskabs"), "verify", "--repair", "--configfile", CONFIG], project)
    assert f"MISSING {model}" in repaired.stdout and "set aside" in repaired.stdout
    snakemake(project, *downstream)
    assert {p: hashing.sha256_file(project / p) for p in before} == before
    code, text, named = audit_of(project)
    assert code == 0, text
