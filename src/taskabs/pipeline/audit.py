"""Audit every file in ``results/`` back to the MLflow run, code, data and config that made it.

For each result file the audit finds its producing run (the MLflow run whose ``output.<name>.path``
tag names the file) and checks, each against an independent record:

========  ====================================================================================
exists    every file the current config's DAG makes, ``dvc.lock`` records, or a run's manifest
          of a directory output lists, is on disk (a missing one gets a row of its own)
run       the run exists and FINISHED
code      its ``git_commit`` is in HEAD's history, and the modules its stage reached when it ran
          (``code_modules``: path and SHA-256 of each) are the ones the stage reaches now, with
          the same bytes, and were committed when it ran: a change to any other module is not
          a change to this result (runs recorded before ``code_modules``: all of ``src/``,
          ``workflow/`` and ``Snakefile``)
data      its ``data_hash`` equals the hash of its inputs as ``dvc.lock`` records them, and each
          input on disk still has that content (a directory input: the MD5 of its listing)
config    its ``config_json`` hashes to its ``config_hash``, and the current config (the same
          ``--configfile``\\ s, resolved by Snakemake) still gives the job that config
record    MLflow's params are the run's config, its metrics are the ones the stage returned
          (``metric_keys``, ``metrics_digest``) and agree with the numbers in its JSON outputs
artifact  the file's SHA-256 equals the run's ``output.<name>.sha256`` (a file in a directory
          output: the SHA-256 the run's manifest artifact lists for it)
dvc       the file's MD5 equals the one ``dvc.lock`` records for it
========  ====================================================================================

Every file under ``data/`` and ``results/`` is audited; a check that cannot read its record
reports the damage instead of stopping the audit.

``results/report.html`` is made by ``snakemake --report``, not by a job: only its ``dvc`` check
applies.  Snakemake's own ``--list-changes params`` cannot do the config check: in Snakemake 9.27.1
it lists the last output of every job whether or not its params changed, and it is silent where
``.snakemake/metadata`` is missing (a fresh clone after ``dvc pull``).  Instead the audit runs
Snakemake's CLI (same profile, same config files) with the change listing replaced by a dump of
every job's resolved ``params.config`` (:func:`resolve_jobs`), and compares it with the run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from taskabs.hashing import canonical_json, config_hash, md5_file, sha256_file
from taskabs.pipeline import tracking
from taskabs.pipeline.provenance import content_md5, listing_digest
from taskabs.pipeline.tracking import flatten

RESULTS_DIR = "results"
AUDITED_DIRS = ("data", "results")
# Results that no job makes, and what makes them instead.
NOT_FROM_A_JOB = {"results/report.html": "snakemake --report"}
CODE_PATHS = ("src", "workflow", "Snakefile")
PROFILE = "profiles/default"
DEFAULT_CONFIGFILES = ("config/config.yaml",)
CHECKS = ("exists", "run", "code", "data", "config", "record", "artifact", "dvc")
_RESOLVED_MARK = "TASKABS-AUDIT-RESOLVED "
_UNTIL_ENV = "TASKABS_AUDIT_UNTIL"


@dataclass(frozen=True)
class Check:
    """The verdict of one check on one file: ``ok`` False means a mismatch, ``detail`` says what."""

    ok: bool
    detail: str = "ok"


OK = Check(True)


def not_applicable(why: str) -> Check:
    return Check(True, f"n/a: {why}")


@dataclass(frozen=True)
class RunRecord:
    """The part of an MLflow run the audit reads (kept apart from MLflow so checks are pure)."""

    run_id: str
    status: str
    start_time: int
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] | None = None  # None: not read (synthetic records)
    params: dict[str, str] | None = None

    def outputs(self) -> dict[str, str]:
        """{output name: path} from the ``output.<name>.path`` tags."""
        return {
            key[len("output.") : -len(".path")]: os.path.normpath(value)
            for key, value in self.tags.items()
            if key.startswith("output.") and key.endswith(".path")
        }

    def inputs(self) -> dict[str, tuple[str, str]]:
        """{input key: (path, md5 the run read)} from the ``input.<name>[.<i>].path/.md5`` tags."""
        return {
            key[len("input.") : -len(".path")]: (path, self.tags.get(key[: -len(".path")] + ".md5", ""))
            for key, path in self.tags.items()
            if key.startswith("input.") and key.endswith(".path")
        }


@dataclass(frozen=True)
class Producer:
    """A result file's producing run and the name under which the run declared it."""

    run: RunRecord
    output: str
    path: str  # the declared path: the file itself, or a directory output holding it


@dataclass
class DvcRecord:
    """What ``dvc.lock`` (and the cache manifests it points to) records: {relpath: md5}."""

    md5: dict[str, str]
    outs: list[str]  # DVC-tracked output paths (directories or files)
    problems: dict[str, str] = field(default_factory=dict)  # out path -> why its record is unreadable

    def listing(self, directory: str) -> dict[str, str]:
        """{path relative to ``directory``: md5} of the files dvc.lock records under it."""
        prefix = directory.rstrip("/") + "/"
        return {p[len(prefix) :]: h for p, h in self.md5.items() if p.startswith(prefix)}

    def tracked_by(self, path: str) -> str | None:
        """The DVC output holding ``path`` ("" stands for the whole repository)."""
        return next((out for out in self.outs if not out or path == out or path.startswith(out + "/")), None)


@dataclass
class Resolution:
    """What the current config resolves to, according to Snakemake."""

    config: dict[str, Any]
    jobs: dict[str, tuple[str, dict]]  # output path -> (rule, the job's params.config)


# ---------------------------------------------------------------------------------------------
# Records: MLflow, DVC, Snakemake, git


def tracking_uri(config: dict, root: Path) -> str:
    """The tracking URI the jobs used, with a relative SQLite path made relative to ``root``."""
    uri = tracking.tracking_uri(config)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str((root / uri[len(prefix) :]).resolve())
    return uri


def load_runs(uri: str, experiment: str) -> list[RunRecord]:
    """Every active run of the experiment (all pages)."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise FileNotFoundError(f"no tracking database at {uri[len('sqlite:///') :]}")
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"experiment {experiment!r} not found in {uri}")
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
        runs += [
            RunRecord(
                r.info.run_id,
                r.info.status,
                r.info.start_time or 0,
                dict(r.data.tags),
                dict(r.data.metrics),
                dict(r.data.params),
            )
            for r in page
        ]
        token = page.token
        if not token:
            return runs


def index_outputs(runs: Iterable[RunRecord]) -> dict[str, list[tuple[RunRecord, str]]]:
    """{declared output path: [(run, output name)]}, newest run first."""
    index: dict[str, list[tuple[RunRecord, str]]] = {}
    for run in sorted(runs, key=lambda r: r.start_time, reverse=True):
        for name, path in run.outputs().items():
            index.setdefault(path, []).append((run, name))
    return index


def producing_run(path: str, index: dict[str, list[tuple[RunRecord, str]]], sha256: str) -> Producer | None:
    """The run that made ``path``: the newest FINISHED run whose recorded SHA-256 is the file's;
    else the newest FINISHED run declaring it; else the newest run of any status.

    Preferring the matching hash finds the right run after an older result was checked out with
    DVC; a file inside a directory output belongs to the runs that declared the directory.
    """
    declared, candidates = path, index.get(path, [])
    parent = os.path.dirname(path)
    while not candidates and parent:
        declared, candidates, parent = parent, index.get(parent, []), os.path.dirname(parent)
    finished = [(run, name) for run, name in candidates if run.status == "FINISHED"]
    for run, name in finished:
        if run.tags.get(f"output.{name}.sha256") == sha256:
            return Producer(run, name, declared)
    if pick := (finished or candidates):
        return Producer(pick[0][0], pick[0][1], declared)
    return None


def dvc_records(root: Path) -> DvcRecord:
    """{path: md5} of every file of every output in ``dvc.lock``, through DVC's own API.

    A directory output's files come from its ``<md5>.dir`` manifest in the DVC cache; if that is
    missing (a clone before ``dvc pull``) the output is listed in ``problems``.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    md5: dict[str, str] = {}
    outs: list[str] = []
    problems: dict[str, str] = {}
    try:
        repo = Repo(str(root))
    except DvcException as error:
        return DvcRecord({}, [""], {"": f"cannot read DVC's record: {error}"})
    with repo:
        for stage in repo.index.stages:
            for out in stage.outs:
                path = os.path.normpath(os.path.relpath(out.fs_path, root))
                outs.append(path)
                if not out.hash_info or not out.hash_info.value:
                    problems[path] = "not recorded in dvc.lock (run dvc commit)"
                elif not out.hash_info.isdir:
                    md5[path] = out.hash_info.value
                else:
                    try:
                        tree = out.get_obj()
                        if tree is None:
                            raise LookupError("no manifest")
                        files = {os.path.join(path, *key): hash_info.value for key, _meta, hash_info in tree}
                    except Exception as error:  # dvc raises several types for a missing manifest
                        problems[path] = (
                            f"manifest {out.hash_info.value} not in the DVC cache (dvc fetch): {error}"
                        )
                        continue
                    md5.update(files)
    return DvcRecord(md5, outs, problems)


def resolve_jobs(
    root: Path, configfiles: Iterable[str], *, profile: str = PROFILE, until: Iterable[str] = ()
) -> Resolution:
    """Each job's ``params.config`` as the current config resolves it, by Snakemake itself.

    Runs ``snakemake --workflow-profile <profile> --configfile ... --list-changes params`` in a
    subprocess, with the change listing replaced by a dump of the DAG (see :func:`_dump_dag`).
    ``until``: rules to stop at (Snakemake's ``--until``), for a partial run.
    """
    command = [sys.executable, "-m", "taskabs.pipeline.audit", "resolve", "--workflow-profile", profile]
    for configfile in configfiles:  # a relative path is relative to root, where Snakemake runs
        command += ["--configfile", str(configfile)]
    env = {**os.environ, _UNTIL_ENV: ",".join(until), "TASKABS_NO_DEVICE_CHECK": "1"}
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_RESOLVED_MARK)]
    if done.returncode != 0 or len(lines) != 1:
        raise RuntimeError(
            f"snakemake could not resolve the config (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    dumped = json.loads(lines[0][len(_RESOLVED_MARK) :])
    jobs = {
        os.path.normpath(path): (job["rule"], job["config"])
        for job in dumped["jobs"]
        for path in job["output"]
    }
    return Resolution(dumped["config"], jobs)


def _dump_dag(argv: list[str]) -> int:
    """``python -m taskabs.pipeline.audit resolve <snakemake args>``: print the resolved config and jobs."""
    from snakemake import cli
    from snakemake.dag import DAG

    until = {rule for rule in os.environ.get(_UNTIL_ENV, "").split(",") if rule}

    async def dump(dag, change_type, include_needrun=True):
        selected = [job for job in dag.jobs if not job.is_group()]
        if until:  # the jobs of those rules and everything upstream of them
            keep, todo = set(), [job for job in selected if job.rule.name in until]
            while todo:
                job = todo.pop()
                if job not in keep:
                    keep.add(job)
                    todo.extend(dag.dependencies[job])
            selected = [job for job in selected if job in keep]
        jobs = [
            {
                "rule": job.rule.name,
                "output": [str(f) for f in job.output],
                "config": dict(job.params.items()).get("config", {}),
            }
            for job in selected
        ]
        print(_RESOLVED_MARK + canonical_json({"config": dag.workflow.config, "jobs": jobs}), flush=True)
        return []

    DAG.get_outputs_with_changes = dump  # what --list-changes prints: here, every job's config
    try:
        cli.main(["--list-changes", "params", *argv])
    except SystemExit as done:
        return int(done.code or 0)
    return 0


class Git:
    """Code checks against the repository at ``root``, one git call per distinct commit."""

    def __init__(self, root: Path, code_paths: tuple[str, ...] = CODE_PATHS):
        self.root, self.code_paths = root, code_paths
        self._verdicts: dict[str, Check] = {}

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True)

    def commit_check(self, commit: str) -> Check:
        if commit not in self._verdicts:
            self._verdicts[commit] = self._commit_check(commit)
        return self._verdicts[commit]

    def _commit_check(self, commit: str, *, diff: bool = True) -> Check:
        if not commit or commit == "unknown":
            return Check(False, "no git commit recorded (run outside a git repository)")
        if self._git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            return Check(False, f"commit {commit[:10]} is not in this repository")
        if self._git("merge-base", "--is-ancestor", commit, "HEAD").returncode != 0:
            return Check(False, f"commit {commit[:10]} is not in the history of HEAD")
        if not diff:
            return OK
        changed = self._git("diff", "--name-only", commit, "--", *self.code_paths).stdout.split()
        if changed:
            more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
            return Check(
                False, f"code changed since run (commit {commit[:10]}): {', '.join(changed[:3])}{more}"
            )
        return OK

    def known_commit(self, commit: str) -> Check:
        """The commit exists and is in HEAD's history (no diff: the per-stage check does that)."""
        key = f"known:{commit}"
        if key not in self._verdicts:
            self._verdicts[key] = self._commit_check(commit, diff=False)
        return self._verdicts[key]


class StageCode:
    """The modules each stage reaches now in the audited tree, with their SHA-256, per rule."""

    def __init__(self, root: Path):
        self.source = root / "src" / "taskabs"
        self._modules: dict[str, dict[str, str] | None] = {}

    def modules(self, rule: str) -> dict[str, str] | None:
        """{src/taskabs/...: sha256} for the rule's stage; None for a rule without a stage."""
        if rule not in self._modules:
            from taskabs.pipeline.codehash import module_path, reached_modules
            from taskabs.pipeline.stages import stage_module

            try:
                names = reached_modules(stage_module(rule), self.source)
            except KeyError:
                self._modules[rule] = None
                return None
            found = {}
            for name in names:
                path = module_path(name, self.source)
                found[f"src/taskabs/{path.relative_to(self.source).as_posix()}"] = sha256_file(path)
            self._modules[rule] = found
        return self._modules[rule]


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


# ---------------------------------------------------------------------------------------------
# The audit


def result_files(root: Path, dirs: Iterable[str] = AUDITED_DIRS) -> list[str]:
    """Every file under the audited directories (``data/``, ``results/``), sorted."""
    found = []
    for name in dirs:
        base = root / name
        if base.is_dir():
            found += [str(p.relative_to(root)) for p in base.rglob("*") if p.is_file()]
    return sorted(found)


def check_report(path: Path) -> Check:
    """``snakemake --report`` writes one self-contained page: it ends with ``</html>``."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        tail = f.read().rstrip()
    if not tail.lower().endswith(b"</html>"):
        return Check(False, "truncated or damaged: it does not end with </html> (rebuild: make reproduce)")
    return OK


def audit_file(
    path: str,
    root: Path,
    index,
    dvc: DvcRecord,
    resolution: Resolution,
    git: Git,
    manifests: Manifests | None = None,
    stages: StageCode | None = None,
) -> dict:
    """One row of the audit table: file, rule, run id and one :class:`Check` per check.

    A damaged record (a tag that is not what the pipeline writes) fails the row's ``run`` check
    with what went wrong, instead of stopping the audit.
    """
    try:
        return _audit_file(path, root, index, dvc, resolution, git, manifests, stages)
    except Exception as error:
        skipped = Check(True, "-")
        return (
            {"file": path, "rule": "", "run_id": ""}
            | dict.fromkeys(CHECKS, skipped)
            | {"run": Check(False, f"record damaged, cannot check ({type(error).__name__}: {error})")}
        )


def _audit_file(path, root, index, dvc, resolution, git, manifests, stages) -> dict:
    sha256, md5 = sha256_file(root / path), md5_file(root / path)
    row: dict[str, Any] = {"file": path, "dvc": check_dvc(path, md5, dvc), "exists": OK}
    if path in NOT_FROM_A_JOB:
        made_by = Check(True, "n/a")  # the rule column names what made it
        checks = dict.fromkeys(CHECKS[1:-1], made_by) | {"artifact": check_report(root / path)}
        return row | {"rule": f"({NOT_FROM_A_JOB[path]})", "run_id": ""} | checks
    producer = producing_run(path, index, sha256)
    if producer is None:  # the run check fails; the checks of the run's record cannot be made
        skipped = Check(True, "-")
        return (
            row | {"rule": "", "run_id": ""} | dict.fromkeys(CHECKS[1:-1], skipped) | {"run": check_run(None)}
        )
    run = producer.run
    return row | {
        "rule": run.tags.get("rule", ""),
        "run_id": run.run_id,
        "run": check_run(producer),
        "code": check_code(run, git, stages),
        "data": check_data(run, dvc, root),
        "config": check_config(run, producer, resolution),
        "record": check_record(run, root),
        "artifact": check_artifact(producer, path, sha256, manifests),
    }


def expected_files(
    root: Path, resolution: Resolution, dvc: DvcRecord, index, manifests: Manifests | None
) -> dict[str, str]:
    """{file the pipeline should have on disk: why}: the outputs of every job of the current
    config, the files dvc.lock records, and the files the runs' manifests list for directory
    outputs of those jobs."""
    expected: dict[str, str] = {}
    for path, (rule, _config) in resolution.jobs.items():
        if not (root / path).is_dir():
            expected[path] = f"rule {rule} makes it"
        for run, name in index.get(path, [])[:1] if manifests else []:
            if run.status == "FINISHED" and f"output.{name}.sha256" in run.tags:
                for rel in manifests.get(Producer(run, name, path)) or {}:
                    expected.setdefault(
                        os.path.join(path, rel), f"run {run.run_id[:8]} (rule {rule}) made it"
                    )
    for path in dvc.md5:
        if path.split("/", 1)[0] in AUDITED_DIRS:
            expected.setdefault(path, "dvc.lock records it")
    return expected


def missing_row(path: str, why: str, resolution: Resolution) -> dict:
    rule = resolution.jobs.get(path, ("", {}))[0]
    repair = "make reproduce re-makes it" if path in resolution.jobs or rule else "dvc checkout restores it"
    skipped = Check(True, "-")
    return (
        {"file": path, "rule": rule, "run_id": ""}
        | dict.fromkeys(CHECKS, skipped)
        | {"exists": Check(False, f"missing: {why} ({repair})")}
    )


def audit(
    root: Path, configfiles: Iterable[str] = DEFAULT_CONFIGFILES, *, until: Iterable[str] = ()
) -> list[dict]:
    """Audit every file under ``root/data`` and ``root/results``, and every file that should be
    there and is not: a list of rows (see :func:`audit_file`)."""
    root = Path(root).resolve()
    resolution = resolve_jobs(root, configfiles, until=until)
    uri = tracking_uri(resolution.config, root)
    runs = load_runs(uri, tracking.experiment_name(resolution.config))
    index, dvc, git = index_outputs(runs), dvc_records(root), Git(root)
    manifests, stages = Manifests(uri), StageCode(root)
    present = result_files(root)
    rows = [audit_file(path, root, index, dvc, resolution, git, manifests, stages) for path in present]
    expected = expected_files(root, resolution, dvc, index, manifests)
    rows += [
        missing_row(path, why, resolution)
        for path, why in sorted(expected.items())
        if not (root / path).exists()
    ]
    return sorted(rows, key=lambda row: row["file"])


# ---------------------------------------------------------------------------------------------
# Verification before use and before DVC versions anything (`taskabs verify`)

SET_ASIDE = ".snakemake/set-aside"


def light_config(root: Path, configfiles: Iterable[str]) -> dict:
    """The config files merged (later ones win), without Snakemake: enough for the tracking keys."""
    import yaml

    def merge(base: dict, over: dict) -> dict:
        return {
            k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            for k, v in {**base, **over}.items()
        }

    config: dict = {}
    for name in ["config/config.yaml", *configfiles]:
        path = root / name
        if path.is_file():
            loaded = yaml.safe_load(path.read_text()) or {}
            if isinstance(loaded, dict):
                config = merge(config, loaded)
    return config


def verify_files(root: Path, configfiles: Iterable[str] = DEFAULT_CONFIGFILES) -> list[tuple[str, str, str]]:
    """(file, the output to set aside, what is wrong) for every file under data/ and results/
    whose bytes are not what the run that made it recorded (a directory output: its manifest),
    every file missing from a directory output, and a truncated report."""
    root = Path(root).resolve()
    config = light_config(root, configfiles)
    uri = tracking_uri(config, root)
    try:
        runs = load_runs(uri, tracking.experiment_name(config))
    except (FileNotFoundError, LookupError):
        runs = []  # nothing recorded yet: nothing to check against
    index, manifests = index_outputs(runs), Manifests(uri)
    bad: list[tuple[str, str, str]] = []
    directories: dict[str, Producer] = {}
    for path in result_files(root):
        if path in NOT_FROM_A_JOB:
            verdict = check_report(root / path)
            if not verdict.ok:
                bad.append((path, path, verdict.detail))
            continue
        producer = producing_run(path, index, sha256_file(root / path))
        if producer is None:
            continue  # no run records making it: the audit reports it
        if producer.path != path:
            directories[producer.path] = producer
        verdict = check_artifact(producer, path, sha256_file(root / path), manifests)
        if not verdict.ok:
            bad.append((path, producer.path, verdict.detail))
    for declared, producer in sorted(directories.items()):
        for rel in sorted(manifests.get(producer) or {}):
            if not (root / declared / rel).is_file():
                bad.append((os.path.join(declared, rel), declared, f"missing from {declared}"))
    return bad


def set_aside(root: Path, paths: Iterable[str], *, stamp: str | None = None) -> Path:
    """Move each path (a file or a whole directory output) under .snakemake/set-aside/<stamp>/."""
    import shutil
    import time

    target = root / SET_ASIDE / (stamp or time.strftime("%Y%m%d-%H%M%S"))
    for path in sorted(set(paths)):
        if (root / path).exists():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(root / path), str(target / path))
    return target


def verify_main(
    root: str | Path = ".",
    configfiles: Iterable[str] = DEFAULT_CONFIGFILES,
    *,
    repair: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print every file that fails its check; with ``repair``, set the outputs aside (the next
    Snakemake run re-makes them). 0 if all check out (or all were set aside), else 1."""
    out, root = out or sys.stdout, Path(root).resolve()
    bad = verify_files(root, list(configfiles))
    for path, _declared, detail in bad:
        print(f"CORRUPT {path}: {detail}", file=out)
    if not bad:
        return 0
    if repair:
        where = set_aside(root, [declared for _, declared, _ in bad])
        print(
            f"verify: set aside {len({d for _, d, _ in bad})} output(s) under {where.relative_to(root)}; "
            "the next snakemake run re-makes them",
            file=out,
        )
        return 0
    print(
        f"verify: {len(bad)} file(s) fail their check; nothing was versioned. Repair: "
        "`taskabs verify --repair` sets them aside and `make reproduce` re-makes them "
        "(or `dvc checkout <file>` restores the committed version)",
        file=out,
    )
    return 1


def mismatches(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(file, check, detail) of every failed check."""
    return [(row["file"], check, row[check].detail) for row in rows for check in CHECKS if not row[check].ok]


def table(rows: list[dict], *, width: int = 36):
    """The audit as a polars DataFrame: file, rule, run id, one column per check."""
    import polars as pl

    columns = ["file", "rule", "run_id", *CHECKS]

    def cell(row: dict, column: str) -> str:  # full paths; verdicts cut short (the lines below say all)
        if column in CHECKS:
            detail = row[column].detail
            return detail if len(detail) <= width else detail[: width - 1] + "…"
        return row[column][:8] if column == "run_id" else row[column]

    return pl.DataFrame(
        [{c: cell(row, c) for c in columns} for row in rows], schema={c: pl.String for c in columns}
    )


def main(
    root: str | Path = ".",
    configfiles: Iterable[str] = DEFAULT_CONFIGFILES,
    *,
    out: TextIO | None = None,
    until: Iterable[str] = (),
) -> int:
    """Print the audit table and one line per mismatch; 0 if everything checks out, else 1."""
    import polars as pl

    out = out or sys.stdout
    try:
        rows = audit(Path(root), list(configfiles), until=until)
    except (RuntimeError, FileNotFoundError, LookupError) as error:
        print(f"audit: cannot read the records: {error}", file=out)
        return 2
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=1000,
        fmt_str_lengths=1000,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        print(table(rows), file=out)
    found = mismatches(rows)
    for path, check, detail in found:
        print(f"MISMATCH {path} [{check}]: {detail}", file=out)
    if not rows:
        print(f"audit: no files under {' or '.join(AUDITED_DIRS)}/", file=out)
    elif found:
        print(
            f"audit: {len(found)} mismatch(es) in {len({f for f, _, _ in found})} of {len(rows)} files",
            file=out,
        )
    else:
        print(f"audit: all {len(rows)} files under {'/ and '.join(AUDITED_DIRS)}/ check out", file=out)
    return 1 if found else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["resolve"]:
        sys.exit(_dump_dag(sys.argv[2:]))
    sys.exit(main())
