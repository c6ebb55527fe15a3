"""A Workflow Run RO-Crate of a reproduction: ``results/ro-crate-metadata.json``.

The crate is what a reader without MLflow or DVC can follow: every file under ``results/`` and
``data/`` with its SHA-256 and size; one ``CreateAction`` per MLflow run that made them (run id,
rule, status, start time, inputs, outputs); the workflow (``Snakefile``, Snakemake version, git
commit); the config files and the resolved config; the scorecard's verdicts with the runs behind
each; and the outcome of the audit, run in-process.  It follows the Workflow Run Crate profile
0.5 (https://w3id.org/ro/wfrun/workflow/0.5, on RO-Crate 1.1), built with the ``rocrate``
library and validated by ``roc-validator`` in the tests.

The crate's root is ``results/``, where the metadata file lives and which DVC versions: data files
and the workflow lie outside it and are referenced as ``../data/...`` and ``../Snakefile``.  It is
written after ``taskabs verify`` and before ``dvc commit``, so the audit's ``dvc`` check (the files
against ``dvc.lock``) is left out of the recorded outcome: the commit that would satisfy it also
records the crate itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import mimetypes
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskabs.hashing import canonical_json, sha256_file

CRATE_DIR = "results"
CRATE_FILE = f"{CRATE_DIR}/ro-crate-metadata.json"
WORKFLOW_RUN_CRATE = "https://w3id.org/ro/wfrun/workflow/0.5"
PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
WORKFLOW_RO_CRATE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
PROFILES = (
    (WORKFLOW_RUN_CRATE, "Workflow Run Crate", "0.5"),
    (PROCESS_RUN_CRATE, "Process Run Crate", "0.5"),
    (WORKFLOW_RO_CRATE, "Workflow RO-Crate", "1.0"),
)
# schema.org's sha256 is not in the RO-Crate 1.1 context: declared as an extra term
EXTRA_TERMS = {"sha256": "http://schema.org/sha256"}
# checks of the audit recorded in the crate (the dvc check can only pass after dvc commit)
AUDIT_CHECKS_LEFT_OUT = ("dvc",)
MISMATCHES_LISTED = 20
# an action's status: the schema.org IRI as a string, as Process Run Crate writes it
STATUS = {
    "FINISHED": "http://schema.org/CompletedActionStatus",
    "FAILED": "http://schema.org/FailedActionStatus",
    "KILLED": "http://schema.org/FailedActionStatus",
    "RUNNING": "http://schema.org/ActiveActionStatus",
}


def crate_id(path: str) -> str:
    """The crate's @id of a project path: relative to ``results/`` (``../`` for data and code)."""
    return os.path.relpath(path, CRATE_DIR).replace(os.sep, "/")


def encoding_format(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def one_or_many(entities: list) -> Any:
    """A single value rather than a one-element list (RO-Crate 1.1's JSON-LD recommendation)."""
    return entities[0] if len(entities) == 1 else entities


def iso_time(milliseconds: int | None = None) -> str:
    when = (
        dt.datetime.now(dt.UTC)
        if milliseconds is None
        else dt.datetime.fromtimestamp(milliseconds / 1000, dt.UTC)
    )
    return when.isoformat(timespec="seconds")


def read_verdicts(root: Path) -> list[dict[str, Any]]:
    """The scorecard's rows: claim, verdict, value, statement and the MLflow runs behind it.

    ``scorecard.json`` (the DVC metrics file) has the verdicts; ``scorecard.csv`` adds the
    statement and the runs.  A claim missing from the CSV keeps its verdict without them.
    """
    path = root / CRATE_DIR / "scorecard.json"
    if not path.is_file():
        return []
    try:
        verdicts = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    table = root / CRATE_DIR / "scorecard.csv"
    extra = {}
    if table.is_file():
        with table.open(newline="") as f:
            extra = {row["claim"]: row for row in csv.DictReader(f)}
    rows = []
    for claim, record in sorted(verdicts.items()):
        if not isinstance(record, dict) or "verdict" not in record:
            raise ValueError(f"{path}: claim {claim!r} has no verdict")
        row = extra.get(claim, {})
        rows.append(
            {
                "claim": claim,
                "verdict": record["verdict"],
                "value": record.get("value"),
                "statement": row.get("statement", ""),
                "runs": (row.get("mlflow_runs") or "").split(),
            }
        )
    return rows


def audit_outcome(rows: list[dict]) -> dict[str, Any]:
    """Pass/fail of the audit's rows with counts per check (the checks left out not counted)."""
    from taskabs.pipeline.audit import CHECKS

    checks = [c for c in CHECKS if c not in AUDIT_CHECKS_LEFT_OUT]
    failed = {c: sum(not row[c].ok for row in rows) for c in checks}
    mismatches = [(row["file"], c, row[c].detail) for row in rows for c in checks if not row[c].ok]
    return {
        "passed": not mismatches,
        "files": len(rows),
        "checks": checks,
        "failed": failed,
        "mismatches": mismatches,
    }


def run_audit(root: Path, configfiles: list[str], until: Iterable[str]) -> tuple[list[dict], dict]:
    """The audit's rows (without the crate's own, which is being replaced) and the resolved config."""
    from taskabs.pipeline.audit import audit
    from taskabs.pipeline.audit.records import resolve_jobs

    resolution = resolve_jobs(root, configfiles, until=until)
    rows = audit(root, configfiles, until=until, resolution=resolution)
    return [row for row in rows if row["file"] != CRATE_FILE], resolution.config


@dataclass(frozen=True)
class Run:
    """What the crate says of an MLflow run."""

    run_id: str
    status: str
    start_time: int | None
    end_time: int | None
    tags: dict[str, str]

    def inputs(self) -> list[str]:
        """The paths the run read (its ``input.<name>[.<i>].path`` tags)."""
        return [v for k, v in self.tags.items() if k.startswith("input.") and k.endswith(".path")]


def load_run_records(root: Path, config: dict) -> dict[str, Run]:
    """{run id: Run} of every run of the pipeline's MLflow experiment."""
    from mlflow.tracking import MlflowClient

    from taskabs.pipeline import tracking
    from taskabs.pipeline.audit.records import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(config, root))
    name = tracking.experiment_name(config)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise LookupError(f"no MLflow experiment {name!r} holds the runs behind the results")
    runs, token = {}, None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
        for r in page:
            runs[r.info.run_id] = Run(
                r.info.run_id, r.info.status, r.info.start_time, r.info.end_time, dict(r.data.tags)
            )
        token = page.token
        if not token:
            return runs


def build_crate(
    root: Path,
    configfiles: list[str],
    *,
    audit_rows: list[dict],
    config: dict,
    runs: dict[str, Any],
):
    """The crate (a ``rocrate.rocrate.ROCrate``) of the files under ``root``, from the records given."""
    import snakemake
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    from taskabs.pipeline import provenance

    crate = ROCrate()
    crate.metadata.extra_terms.update(EXTRA_TERMS)
    add = lambda props: crate.add(ContextEntity(crate, props.pop("@id"), properties=props))  # noqa: E731
    commit, dirty = provenance.git_state(root)
    with warnings.catch_warnings():  # entities without a source: the crate describes files in place
        warnings.filterwarnings("ignore", message="No source for")
        workflow = crate.add_workflow(
            dest_path=crate_id("Snakefile"), main=True, lang="snakemake", lang_version=snakemake.__version__
        )
        files = {
            row["file"]: crate.add_file(
                dest_path=crate_id(row["file"]),
                properties={
                    "name": row["file"],
                    "sha256": sha256_file(root / row["file"]),
                    "contentSize": str((root / row["file"]).stat().st_size),
                    "encodingFormat": encoding_format(row["file"]),
                },
            )
            for row in audit_rows
            if (root / row["file"]).is_file()
        }
        configs = [
            crate.add_file(
                dest_path=crate_id(path),
                properties={"name": path, "sha256": sha256_file(root / path), "encodingFormat": "text/yaml"},
            )
            for path in configfiles
        ]
    workflow["name"] = "taskabs Snakemake workflow"
    workflow["version"] = commit
    workflow["description"] = f"Snakefile and workflow/rules at git commit {commit}" + (
        " with uncommitted changes to the code" if dirty else ""
    )
    for profile, name, version in PROFILES:
        entity = crate.get(profile) or add({"@id": profile, "@type": "CreativeWork", "name": name})
        entity["version"] = version
        crate.root_dataset.append_to("conformsTo", entity)
    license_ = add({"@id": "https://spdx.org/licenses/MIT", "@type": "CreativeWork", "name": "MIT License"})
    for key, value in {
        "name": "taskabs reproduction: results and provenance",
        "description": "Results of one reproduction of the task-abstraction papers, with the MLflow runs "
        "that made each file, the scorecard's verdicts and the audit's outcome.",
        "datePublished": iso_time(),
        "license": license_,
    }.items():
        crate.root_dataset[key] = value

    resolved = add(
        {
            "@id": "#resolved-config",
            "@type": "PropertyValue",
            "name": "config",
            "value": canonical_json(config),
        }
    )
    param_file = add(formal_parameter("configfile", "File", "config files (later ones win)"))
    param_config = add(formal_parameter("config", "Text", "the config as Snakemake resolved it"))
    workflow["input"] = [param_file, param_config]
    for entity in configs:
        entity["exampleOfWork"] = param_file
    param_file["workExample"] = one_or_many(configs)
    resolved["exampleOfWork"] = param_config
    param_config["workExample"] = resolved
    outputs = [files[p] for p in (f"{CRATE_DIR}/scorecard.json", f"{CRATE_DIR}/report.html") if p in files]
    if outputs:
        param_out = add(formal_parameter("outputs", "File", "the scorecard and the report"))
        workflow["output"] = param_out
        param_out["workExample"] = one_or_many(outputs)
        for entity in outputs:
            entity["exampleOfWork"] = param_out

    actions = add_run_actions(crate, add, audit_rows, files, runs)
    starts = [runs[r].start_time for r in actions if runs[r].start_time]
    reproduction = crate.add_action(
        workflow,
        identifier="#reproduction",
        object=[*configs, resolved],
        result=list(files.values()),
        properties={
            "name": "Reproduction: the Snakemake DAG, one MLflow run per job",
            "endTime": iso_time(),
            "actionStatus": STATUS["FINISHED"],
        },
    )
    if starts:
        reproduction["startTime"] = iso_time(min(starts))
    crate.root_dataset.append_to("mentions", reproduction)
    add_verdicts(crate, add, root, files, actions)
    crate.root_dataset.append_to("mentions", add_audit(crate, add, audit_rows))
    return crate


def formal_parameter(name: str, additional_type: str, description: str) -> dict[str, Any]:
    """A workflow input or output slot (Bioschemas FormalParameter, as Workflow Run Crate asks)."""
    return {
        "@id": f"#param-{name}",
        "@type": "FormalParameter",
        "name": name,
        "additionalType": additional_type,
        "description": description,
        "conformsTo": {"@id": "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"},
    }


def add_run_actions(crate, add, audit_rows, files, runs) -> dict[str, Any]:
    """One CreateAction per MLflow run that made a file: {run id: action}."""
    made: dict[str, list] = {}
    for row in audit_rows:
        if row["run_id"] and row["file"] in files:
            made.setdefault(row["run_id"], []).append(files[row["file"]])
    rules: dict[str, Any] = {}
    people: dict[str, Any] = {}
    actions = {}
    for run_id, results in sorted(made.items()):
        run = runs.get(run_id)
        if run is None:
            continue
        rule = run.tags.get("rule", "")
        if rule not in rules:
            rules[rule] = add(
                {
                    "@id": f"#rule-{rule}",
                    "@type": "SoftwareApplication",
                    "name": f"rule {rule}",
                    "softwareVersion": run.tags.get("git_commit", ""),
                    "description": "a rule of the Snakemake workflow (workflow/rules/*.smk)",
                }
            )
        inputs = []
        for path in run.inputs():
            path = os.path.normpath(path)
            inputs += [
                entity for name, entity in files.items() if name == path or name.startswith(path + "/")
            ]
        action = crate.add_action(
            rules[rule],
            identifier=f"#run-{run_id}",
            object=one_or_many(list({e.id: e for e in inputs}.values())),
            result=one_or_many(results),
            properties={
                "name": run.tags.get("mlflow.runName", rule),
                "identifier": run_id,
                "description": f"MLflow run {run_id} (rule {rule}, git commit {run.tags.get('git_commit')})",
                "actionStatus": STATUS.get(run.status, "http://schema.org/PotentialActionStatus"),
            },
        )
        for key, when in (("startTime", run.start_time), ("endTime", run.end_time)):
            if when:
                action[key] = iso_time(when)
        if user := run.tags.get("mlflow.user"):
            if user not in people:
                people[user] = add({"@id": f"#user-{user}", "@type": "Person", "name": user})
            action["agent"] = people[user]
        actions[run_id] = action
    return actions


def add_verdicts(crate, add, root: Path, files, actions) -> None:
    """Each claim's verdict as a PropertyValue the scorecard file is about, based on its runs."""
    verdicts = [
        add(
            {
                "@id": f"#claim-{row['claim']}",
                "@type": "PropertyValue",
                "propertyID": "verdict",
                "name": row["claim"],
                "value": row["verdict"],
                "description": row["statement"],
                "isBasedOn": [actions[r] for r in row["runs"] if r in actions],
                **({"valueReference": str(row["value"])} if row["value"] is not None else {}),
            }
        )
        for row in read_verdicts(root)
    ]
    scorecard = files.get(f"{CRATE_DIR}/scorecard.json")
    if scorecard is not None and verdicts:
        scorecard["about"] = verdicts


def add_audit(crate, add, audit_rows) -> Any:
    """The audit's outcome: an AssessAction with pass/fail, files audited and failures per check."""
    outcome = audit_outcome(audit_rows)
    values = [
        add(
            {
                "@id": "#audit-outcome",
                "@type": "PropertyValue",
                "name": "outcome",
                "value": "pass" if outcome["passed"] else "fail",
            }
        ),
        add(
            {
                "@id": "#audit-files",
                "@type": "PropertyValue",
                "name": "files audited",
                "value": outcome["files"],
            }
        ),
    ]
    values += [
        add({"@id": f"#audit-{check}", "@type": "PropertyValue", "name": f"{check} check failed", "value": n})
        for check, n in outcome["failed"].items()
    ]
    tool = add(
        {
            "@id": "#taskabs-audit",
            "@type": "SoftwareApplication",
            "name": "taskabs audit",
            "description": "checks each file against its MLflow run, git, the data it read and the config",
        }
    )
    listed = [
        f"{path} [{check}]: {detail}" for path, check, detail in outcome["mismatches"][:MISMATCHES_LISTED]
    ]
    more = len(outcome["mismatches"]) - len(listed)
    return crate.add_action(
        tool,
        identifier="#audit",
        object=crate.root_dataset,
        result=values,
        properties={
            "@type": "AssessAction",
            "name": "Audit of every file under data/ and results/",
            "description": (
                f"checks {', '.join(outcome['checks'])} (dvc left out: versioned after this); "
                + ("all passed" if outcome["passed"] else "mismatches: " + "; ".join(listed))
                + (f"; {more} more" if more > 0 else "")
            ),
            "endTime": iso_time(),
            "actionStatus": STATUS["FINISHED"],
        },
    )


def write(crate, root: Path) -> Path:
    """Write the crate's metadata file atomically (sorted keys: the same crate gives the same bytes)."""
    from taskabs.artifacts import atomic_write_bytes

    path = root / CRATE_FILE
    text = json.dumps(crate.metadata.generate(), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode())
    return path


def main(root: str | Path = ".", configfiles: Iterable[str] = (), *, until: Iterable[str] = ()) -> int:
    """``taskabs rocrate``: audit, then write the crate; prints where and the audit's outcome."""
    from taskabs.pipeline.audit import DEFAULT_CONFIGFILES

    root = Path(root).resolve()
    configfiles = list(configfiles) or list(DEFAULT_CONFIGFILES)
    missing = [c for c in configfiles if not (root / c).is_file()]
    if missing:
        raise SystemExit(f"rocrate: config file not found: {', '.join(missing)}")
    rows, config = run_audit(root, configfiles, until)
    crate = build_crate(
        root, configfiles, audit_rows=rows, config=config, runs=load_run_records(root, config)
    )
    path = write(crate, root)
    outcome = audit_outcome(rows)
    verdict = "audit passed" if outcome["passed"] else f"audit: {len(outcome['mismatches'])} mismatch(es)"
    print(f"rocrate: {path.relative_to(root)}: {outcome['files']} files, {verdict}")
    return 0
