"""The records an audit compares: MLflow runs, dvc.lock, git, the stage code, the resolved DAG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskabs.hashing import canonical_json, sha256_file
from taskabs.pipeline import tracking
from taskabs.pipeline.provenance import CODE_PATHS, SNAKEMAKE_MARKERS

RESULTS_DIR = "results"
AUDITED_DIRS = ("data", "results")
# Results that no job makes, and what makes them instead.
NOT_FROM_A_JOB = {
    "results/report.html": "snakemake --report",
    "results/ro-crate-metadata.json": "taskabs rocrate",
}
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
        return {
            p[len(prefix) :]: h
            for p, h in self.md5.items()
            if p.startswith(prefix) and Path(p).name not in SNAKEMAKE_MARKERS
        }

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
    from dvc.repo import Repo

    md5: dict[str, str] = {}
    outs: list[str] = []
    problems: dict[str, str] = {}
    try:
        repo = Repo(str(root))
        stages = list(repo.index.stages)  # parses dvc.lock: a damaged one raises here
    except Exception as error:  # DvcException, or the YAML schema's error for an edited dvc.lock
        return DvcRecord({}, [""], {"": f"cannot read DVC's record (dvc.lock damaged?): {error}"})
    with repo:
        for stage in stages:
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


def result_files(root: Path, dirs: Iterable[str] = AUDITED_DIRS) -> list[str]:
    """Every file under the audited directories (``data/``, ``results/``), sorted."""
    found = []
    for name in dirs:
        base = root / name
        if base.is_dir():
            found += [
                str(p.relative_to(root))
                for p in base.rglob("*")
                if p.is_file() and p.name not in SNAKEMAKE_MARKERS
            ]
    return sorted(found)
