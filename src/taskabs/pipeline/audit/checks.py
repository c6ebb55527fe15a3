"""One check per audit column (run, code, data, config, record, artifact, dvc): records in, verdict out."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from taskabs.hashing import canonical_json, config_hash
from taskabs.pipeline import tracking
from taskabs.pipeline.audit.records import (
    OK,
    Check,
    DvcRecord,
    Git,
    Producer,
    Resolution,
    RunRecord,
    StageCode,
    not_applicable,
)
from taskabs.pipeline.provenance import content_md5, listing_digest
from taskabs.pipeline.tracking import flatten

# ---------------------------------------------------------------------------------------------
# Checks: one pure function each


def check_run(producer: Producer | None) -> Check:
    if producer is None:
        return Check(False, "no MLflow run records this file as an output")
    if producer.run.status != "FINISHED":
        return Check(False, f"run {producer.run.run_id[:8]} is {producer.run.status}, not FINISHED")
    return OK


def check_code(run: RunRecord, git: Git, stages: StageCode | None = None) -> Check:
    """The run's commit is known; its stage's modules are unchanged since (see the table above)."""
    recorded_json = run.tags.get("code_modules")
    if recorded_json is None or stages is None:  # recorded before per-stage code: whole tree
        commit = git.commit_check(run.tags.get("git_commit", ""))
        if not commit.ok:
            return commit
        if run.tags.get("git_dirty") != "false":
            return Check(False, "run's working tree had uncommitted changes (git_dirty)")
        return OK
    commit = git.known_commit(run.tags.get("git_commit", ""))
    if not commit.ok:
        return commit
    try:
        recorded = json.loads(recorded_json)
        if not isinstance(recorded, dict):
            raise ValueError("not a mapping")
    except ValueError as error:
        return Check(False, f"MLflow record damaged: code_modules is not a JSON mapping ({error})")
    now = stages.modules(run.tags.get("rule", ""))
    if now is None:
        return Check(False, f"rule {run.tags.get('rule')!r} has no stage in the current code")
    changed = sorted(
        [f"{m} (edited)" for m in recorded.keys() & now.keys() if recorded[m] != now[m]]
        + [f"{m} (now imported)" for m in now.keys() - recorded.keys()]
        + [f"{m} (no longer imported)" for m in recorded.keys() - now.keys()]
    )
    if changed:
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        return Check(False, f"code changed since run: {', '.join(changed[:3])}{more}")
    if run.tags.get("code_dirty") != "false":
        return Check(False, "the stage's modules had uncommitted changes when it ran (code_dirty)")
    return OK


def check_data(run: RunRecord, dvc: DvcRecord, root: Path) -> Check:
    """data_hash == the hash of the inputs as dvc.lock records them; inputs on disk unchanged."""
    inputs = run.inputs()
    if not inputs:
        if run.tags.get("data_hash", "none") == "none":
            return not_applicable("no input files")
        return Check(False, "run has a data_hash but no input tags")
    problems, listing = [], []
    for path, used in sorted(inputs.values()):
        where = os.path.normpath(path)
        if out := dvc.tracked_by(where):
            if out in dvc.problems:
                problems.append(f"{where}: {dvc.problems[out]}")
                continue
            recorded = dvc.md5.get(where)
            if recorded is None and (inside := dvc.listing(where)):  # a directory input
                recorded = listing_digest(inside, md5=True)
            if recorded is None:
                problems.append(f"{where} is not in dvc.lock")
                continue
            if used != recorded:
                problems.append(f"{where}: run read md5 {used[:8]}, dvc.lock records {recorded[:8]}")
        else:
            recorded = used  # not DVC-tracked: the run's own record is the reference
        listing.append([path, recorded])
        on_disk = content_md5(root / where) if (root / where).exists() else "missing"
        if on_disk != recorded:
            problems.append(
                f"{where} changed on disk since {'dvc.lock' if out else 'the run'} (md5 now {on_disk[:8]})"
            )
    if problems:
        return Check(False, "; ".join(problems))
    expected = hashlib.md5(canonical_json(sorted(listing)).encode()).hexdigest()
    if run.tags.get("data_hash") != expected:
        return Check(
            False,
            f"data_hash {run.tags.get('data_hash', '')[:8]} != hash of the recorded inputs {expected[:8]}",
        )
    return OK


def config_difference(old: dict, new: dict, *, limit: int = 3) -> str:
    """'a.b: 1 -> 2, c: (absent) -> 3' for the keys that differ."""
    before, after = flatten(old), flatten(new)
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k, ...) != after.get(k, ...))
    show = lambda d, k: json.dumps(d[k]) if k in d else "(absent)"
    text = ", ".join(f"{k}: {show(before, k)} -> {show(after, k)}" for k in keys[:limit])
    return text + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_config(run: RunRecord, producer: Producer, resolution: Resolution) -> Check:
    recorded_json = run.tags.get("config_json")
    if recorded_json is None:
        return Check(False, "run has no config_json tag")
    if hashlib.sha256(recorded_json.encode()).hexdigest() != run.tags.get("config_hash"):
        return Check(False, "MLflow record inconsistent: config_json does not hash to config_hash")
    job = resolution.jobs.get(producer.path)
    if job is None:
        return Check(False, "no job of the current config makes this file")
    rule, config = job
    if rule != run.tags.get("rule"):
        return Check(False, f"made by rule {run.tags.get('rule')}, the current workflow makes it with {rule}")
    if config_hash(config) != run.tags.get("config_hash"):
        try:
            return Check(
                False, "config changed since run: " + config_difference(json.loads(recorded_json), config)
            )
        except ValueError:
            return Check(False, "config changed since run (the recorded config_json is not JSON)")
    return OK


class Manifests:
    """{relpath: sha256} each run recorded for its directory outputs (artifact ``_manifests/``)."""

    def __init__(self, uri: str | None = None):
        self.uri = uri
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def get(self, producer: Producer) -> dict[str, str] | None:
        key = (producer.run.run_id, producer.output)
        if key not in self._cache:
            self._cache[key] = self._load(*key)
        return self._cache[key]

    def _load(self, run_id: str, output: str) -> dict[str, str] | None:
        if self.uri is None:
            return None
        import tempfile

        from mlflow.tracking import MlflowClient

        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = MlflowClient(tracking_uri=self.uri).download_artifacts(
                    run_id, f"_manifests/{output}.json", tmp
                )
                manifest = json.loads(Path(local).read_text())
        except Exception:  # no manifest (a run recorded before them) or an unreadable one
            return None
        return manifest if isinstance(manifest, dict) else None


def check_artifact(producer: Producer, path: str, sha256: str, manifests: Manifests | None = None) -> Check:
    recorded = producer.run.tags.get(f"output.{producer.output}.sha256")
    if producer.path != path:  # a file inside a directory output: the run's manifest lists it
        manifest = manifests.get(producer) if manifests else None
        if manifest is None:
            return not_applicable(f"inside directory output {producer.path}: no per-file hash recorded")
        listed = manifest.get(os.path.relpath(path, producer.path))
        if listed is None:
            return Check(False, f"not among the files run {producer.run.run_id[:8]} made in {producer.path}")
        if listed != sha256:
            return Check(
                False,
                f"sha256 on disk {sha256[:8]} != {listed[:8]} in the manifest of run "
                f"{producer.run.run_id[:8]} (rule {producer.run.tags.get('rule', '?')})",
            )
        return OK
    if recorded is None:
        return Check(False, f"run {producer.run.run_id[:8]} recorded no sha256 for it")
    if recorded != sha256:
        return Check(
            False, f"sha256 on disk {sha256[:8]} != {recorded[:8]} recorded by run {producer.run.run_id[:8]}"
        )
    return OK


def _numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON document, by dotted key (booleans are not numbers)."""
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            out |= _numbers(value, f"{prefix}{key}.")
        return out
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix[:-1]: float(tree)}
    return {}


def _same(a: float, b: float) -> bool:
    return (a != a and b != b) or a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def check_record(run: RunRecord, root: Path) -> Check:
    """MLflow's params and metrics against the config and the result files they describe."""
    if run.params is None or run.metrics is None:
        return not_applicable("params and metrics not read")
    problems: list[str] = []
    try:
        config = json.loads(run.tags.get("config_json", ""))
    except ValueError:
        config = None  # the config check reports it
    if isinstance(config, dict):
        expected = {k: str(v)[:6000] for k, v in flatten(config).items()}
        for key in sorted(expected):
            if key not in run.params:
                problems.append(f"param {key} missing from MLflow (config: {expected[key][:20]})")
            elif run.params[key] != expected[key]:
                problems.append(
                    f"param {key} = {run.params[key][:20]} in MLflow, {expected[key][:20]} in config"
                )
        problems += [
            f"param {k} in MLflow is not in the config"
            for k in sorted(run.params.keys() - expected.keys() - {"threads"})
        ]
    keys: list[str] = []
    if "metric_keys" in run.tags:
        try:
            keys = list(json.loads(run.tags["metric_keys"]))
        except (ValueError, TypeError):
            problems.append("MLflow record damaged: metric_keys is not a JSON list")
        missing = [k for k in keys if k not in run.metrics]
        problems += [f"metric {k} missing from MLflow" for k in missing]
        if not missing and "metrics_digest" in run.tags:
            if tracking.metrics_digest({k: run.metrics[k] for k in keys}) != run.tags["metrics_digest"]:
                problems.append("MLflow metrics differ from the values the stage returned (metrics_digest)")
    for path in sorted(run.outputs().values()):
        file = root / path
        if not path.endswith(".json") or not file.is_file():
            continue
        try:
            numbers = _numbers(json.loads(file.read_text()))
        except (ValueError, UnicodeDecodeError):
            continue  # the artifact check reports a damaged file
        for key in sorted(numbers.keys() & run.metrics.keys()):
            if not _same(numbers[key], run.metrics[key]):
                problems.append(
                    f"metric {key} = {run.metrics[key]:.6g} in MLflow, {numbers[key]:.6g} in {path}"
                )
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return Check(False, "; ".join(problems[:3]) + more)
    return OK


def check_report(path: Path) -> Check:
    """``snakemake --report`` writes one self-contained page: it ends with ``</html>``; the
    RO-Crate (``taskabs rocrate``) is one JSON document."""
    if path.suffix == ".json":
        try:
            json.loads(path.read_bytes())
        except ValueError:
            return Check(False, "damaged: not JSON (rebuild: make reproduce)")
        return OK
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        tail = f.read().rstrip()
    if not tail.lower().endswith(b"</html>"):
        return Check(False, "truncated or damaged: it does not end with </html> (rebuild: make reproduce)")
    return OK


def check_dvc(path: str, md5: str, dvc: DvcRecord) -> Check:
    out = dvc.tracked_by(path)
    if out is None:
        return Check(False, "not under any DVC-tracked output")
    if out in dvc.problems:
        return Check(False, dvc.problems[out])
    recorded = dvc.md5.get(path)
    if recorded is None:
        return Check(False, "not in dvc.lock (run dvc commit)")
    if recorded != md5:
        return Check(False, f"changed since dvc.lock recorded it (md5 {md5[:8]}, dvc.lock {recorded[:8]})")
    return OK
