"""The reproduction's RO-Crate validates at the Workflow Run Crate profile and says what it must.

Validation is by ``roc-validator`` at ``workflow-run-crate-0.5`` (its REQUIRED checks, the
profile's MUSTs and those of the profiles it inherits: RO-Crate 1.1, Process Run Crate, Workflow
RO-Crate).  The validator resolves the crate's ``@context`` over HTTP; offline, it reads only its
HTTP cache, so the test puts there the RO-Crate 1.1 context that the pinned ``rocrate`` library
ships, and validates offline.
"""

import importlib.resources
import io
import json
import subprocess

import pytest

from taskabs.hashing import sha256_file
from taskabs.pipeline.audit import CHECKS, OK
from taskabs.pipeline.audit.records import Check
from taskabs.pipeline.rocrate import CRATE_FILE, Run, audit_outcome, build_crate, write

CONTEXT_URL = "https://w3id.org/ro/crate/1.1/context"


def seed_context(cache_path: str) -> None:
    """Put the RO-Crate 1.1 context shipped by ``rocrate`` into the validator's HTTP cache."""
    import requests
    import urllib3
    from requests_cache import CachedSession

    body = importlib.resources.files("rocrate").joinpath("data/ro-crate.jsonld").read_bytes()
    assert json.loads(body)["@id"] == CONTEXT_URL  # the context the crate names
    response = requests.Response()
    response.status_code, response._content, response.url, response.encoding = 200, body, CONTEXT_URL, "utf-8"
    response.headers["Content-Type"] = "application/ld+json"
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(body), status=200, preload_content=False, request_url=CONTEXT_URL
    )
    response.request = requests.Request("GET", CONTEXT_URL).prepare()
    CachedSession(cache_name=cache_path, backend="sqlite", expire_after=-1).cache.save_response(response)


def validate(crate_dir, cache_path) -> list[str]:
    """The validator's REQUIRED issues at the Workflow Run Crate profile (empty: valid)."""
    from rocrate_validator import models, services

    seed_context(str(cache_path))
    settings = models.ValidationSettings(
        rocrate_uri=str(crate_dir),
        profile_identifier="workflow-run-crate-0.5",
        requirement_severity=models.Severity.REQUIRED,
        offline=True,
        cache_path=str(cache_path),
    )
    result = services.validate(settings)
    issues = [f"{issue.check.identifier}: {issue.message}" for issue in result.get_issues()]
    assert result.passed() == (not issues)
    return issues


def small_tree(root):
    """A project with a workflow, a config, one data file, two results and a scorecard."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    files = {
        "Snakefile": "rule all:\n",
        "config/config.yaml": "seed: 0\n",
        "data/raw/sequences.npz": "raw",
        "results/sequence/gbi_lstm/seed0/metrics.json": '{"loss": 0.1}\n',
        "results/scorecard.json": json.dumps(
            {"gbi.seq.forgetting": {"value": 0.07, "verdict": "reproduced"}}
        ),
        "results/scorecard.csv": "claim,statement,verdict,mlflow_runs\n"
        "gbi.seq.forgetting,GBI-LSTM forgets less,reproduced,run-train run-data\n",
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    runs = {
        "run-data": Run("run-data", "FINISHED", 1_700_000_000_000, 1_700_000_001_000, {"rule": "generate"}),
        "run-train": Run(
            "run-train",
            "FINISHED",
            1_700_000_002_000,
            1_700_000_003_000,
            {"rule": "train", "mlflow.user": "ci", "input.data.path": "data/raw/sequences.npz"},
        ),
        "run-score": Run(
            "run-score", "FINISHED", 1_700_000_004_000, 1_700_000_005_000, {"rule": "scorecard"}
        ),
    }
    made_by = {
        "data/raw/sequences.npz": "run-data",
        "results/sequence/gbi_lstm/seed0/metrics.json": "run-train",
        "results/scorecard.json": "run-score",
        "results/scorecard.csv": "run-score",
    }
    rows = [
        {"file": path, "rule": runs[run].tags["rule"], "run_id": run} | dict.fromkeys(CHECKS, OK)
        for path, run in made_by.items()
    ]
    return rows, runs


def entities(root) -> dict[str, dict]:
    graph = json.loads((root / CRATE_FILE).read_text())["@graph"]
    return {e["@id"]: e for e in graph}


def as_list(value):
    return value if isinstance(value, list) else [value]


def test_crate_validates_and_records_files_runs_verdicts_and_audit(tmp_path):
    pytest.importorskip("rocrate_validator")
    rows, runs = small_tree(tmp_path)
    rows[1]["code"] = Check(False, "code changed since run")
    crate = build_crate(tmp_path, ["config/config.yaml"], audit_rows=rows, config={"seed": 0}, runs=runs)
    write(crate, tmp_path)

    assert validate(tmp_path / "results", tmp_path / "http-cache") == []
    found = entities(tmp_path)
    for path in ("data/raw/sequences.npz", "results/scorecard.json"):
        entity = found["../" + path if path.startswith("data/") else path.removeprefix("results/")]
        assert entity["sha256"] == sha256_file(tmp_path / path)
    train = found["#run-run-train"]
    assert train["identifier"] == "run-train" and train["instrument"] == {"@id": "#rule-train"}
    assert train["object"] == {"@id": "../data/raw/sequences.npz"}
    assert train["result"] == {"@id": "sequence/gbi_lstm/seed0/metrics.json"}
    main = found["./"]["mainEntity"]["@id"]
    reproduction = next(e for e in found.values() if as_list(e.get("instrument", {})) == [{"@id": main}])
    assert {"@id": "#resolved-config"} in reproduction["object"]
    assert json.loads(found["#resolved-config"]["value"]) == {"seed": 0}
    verdict = found["#claim-gbi.seq.forgetting"]
    assert verdict["value"] == "reproduced"
    assert {"@id": "#run-run-train"} in verdict["isBasedOn"]
    assert found["#audit-outcome"]["value"] == "fail" and found["#audit-code"]["value"] == 1
    assert found["#audit-files"]["value"] == len(rows)


def test_the_validator_rejects_a_crate_without_its_workflow_run(tmp_path):
    pytest.importorskip("rocrate_validator")
    rows, runs = small_tree(tmp_path)
    crate = build_crate(tmp_path, ["config/config.yaml"], audit_rows=rows, config={}, runs=runs)
    crate.delete(crate.get("#reproduction"))  # the CreateAction of the main workflow, a MUST
    write(crate, tmp_path)
    issues = validate(tmp_path / "results", tmp_path / "http-cache")
    assert any("mainEntity" in issue for issue in issues), issues


def test_the_audit_outcome_leaves_the_dvc_check_out():
    rows = [
        {"file": "results/a.csv"} | dict.fromkeys(CHECKS, OK) | {"dvc": Check(False, "not in dvc.lock")},
        {"file": "results/b.csv"} | dict.fromkeys(CHECKS, OK) | {"record": Check(False, "metrics differ")},
    ]
    outcome = audit_outcome(rows)
    assert "dvc" not in outcome["checks"]
    assert not outcome["passed"] and outcome["failed"]["record"] == 1
    assert outcome["mismatches"] == [("results/b.csv", "record", "metrics differ")]
