#!/usr/bin/env python3
"""Tamper with a complete smoke run one case at a time, and record what catches each case.

    .venv/bin/python scripts/integrity_probe.py [--project DIR] [--work DIR] [--only NAME...]

``--project``: a complete smoke run (``make reproduce CONFIG=config/smoke.yaml``: results, MLflow
record, dvc.lock). Without it, the probe makes one in a throw-away copy of this repository first.
Each case runs on a fresh copy of that run (``cp -a``; the MLflow store's absolute artifact paths
and ``workdir`` tags are rewritten to the copy), and is one of

- **tampering**: bytes or records changed after the run; caught when ``taskabs verify`` (what
  ``make reproduce`` runs before any job and before ``dvc commit``) or ``taskabs audit`` names the
  file, and, for the precision cases, names nothing else;
- **bad config**: ``make reproduce`` with an overlay config; stopped when it fails before any job
  ran (no new MLflow run, no new result) with a message naming the key;
- **fault**: a kill, a lock, a lost or damaged file; survived when ``make reproduce`` (or the
  named repair) ends with the run's results byte-identical and its checks passing.

Cheap cases call verify and audit in this process (the DAG that ``taskabs audit`` resolves with
Snakemake is reused while the copy's config, workflow and code are the run's); only faults and bad
configs run ``make``. Prints ``case | expected | result`` and the three counts; ``--markdown FILE``
writes the table for docs/integrity.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
BIN = VENV / "bin"
SMOKE = "config/smoke.yaml"
OVERLAY = "config/probe.yaml"
HOSTILE = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">\'&'
# results a re-run makes again with other bytes by design: the report (its build time) and the
# scorecard and the RO-Crate (the ids of the new MLflow runs); logs and benchmarks are not results
REMADE_DIFFERENT = (
    "results/report.html",
    "results/ro-crate-metadata.json",
    "results/scorecard.csv",
    "results/scorecard.json",
)


# ---------------------------------------------------------------------------------------------
# Runs and copies


def run(cmd: list[str], cwd: Path, *, timeout: float = 900, env: dict | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TASKABS_"))}
    clean["PATH"] = f"{BIN}{os.pathsep}{clean['PATH']}"
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**clean, **(env or {})}
    )


def make_reproduce(root: Path, *configs: str, timeout: float = 900, popen: bool = False):
    """``make reproduce`` on the smoke config (plus overlays), with this venv, never reinstalling it."""
    cmd = ["make", "reproduce", f"CONFIG={' '.join([SMOKE, *configs])}", f"VENV={VENV}"]
    cmd += ["-o", f"{VENV}/.installed"]  # the venv is given: make must not rebuild it
    if popen:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TASKABS_"))}
        clean["PATH"] = f"{BIN}{os.pathsep}{clean['PATH']}"
        return subprocess.Popen(
            cmd,
            cwd=root,
            env=clean,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return run(cmd, root, timeout=timeout)


def make_base(dest: Path) -> Path:
    """A complete smoke run in a fresh git copy of this repository."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "snapshot")
    done = make_reproduce(dest, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"the smoke run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return dest


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=probe", "-c", "user.email=probe@localhost", *args], cwd=root, check=True
    )


def fresh_copy(base: Path, dest: Path) -> Path:
    """``cp -a`` of the run (file times kept: Snakemake must see nothing to do), with the MLflow
    store's absolute paths (artifact locations, ``workdir`` tags) moved to the copy."""
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["cp", "-a", str(base), str(dest)], check=True)
    db = sqlite3.connect(dest / "mlflow.db")
    old, new = str(base), str(dest)
    db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, new))
    db.execute("UPDATE tags SET value = ? WHERE key = 'workdir' AND value = ?", (new, old))
    left = db.execute(
        "SELECT (SELECT count(*) FROM runs WHERE artifact_uri LIKE ?) + "
        "(SELECT count(*) FROM tags WHERE value LIKE ?)",
        (f"%{old}/%", f"%{old}%"),
    ).fetchone()[0]
    db.commit()
    db.close()
    if left:
        raise RuntimeError(f"{left} MLflow records still name {old} after the move")
    return dest


def digest_tree(root: Path) -> dict[str, str]:
    """{path: sha256} of every file under data/ and results/ (Snakemake's markers left out)."""
    found = {}
    for top in ("data", "results"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and path.name != ".snakemake_timestamp":
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_count(root: Path) -> int:
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]


def runs_in(root: Path, status: str) -> int:
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
        return db.execute("SELECT count(*) FROM runs WHERE status = ?", (status,)).fetchone()[0]


def sql(root: Path, statement: str, *args) -> int:
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
        changed = db.execute(statement, args).rowcount
        db.commit()
    if changed < 1:
        raise RuntimeError(f"no row changed: {statement}")
    return changed


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------
# Detectors: verify and audit, in this process


class Detectors:
    def __init__(self, base: Path):
        self.base = base
        self._resolutions: dict[str, object] = {}

    def verify(self, root: Path, *, pinned_only: bool = False) -> str:
        from taskabs.pipeline.audit import verify_main

        out = io.StringIO()
        verify_main(root, [SMOKE], out=out, pinned_only=pinned_only)
        return out.getvalue()

    def audit(self, root: Path) -> tuple[str, set[tuple[str, str]]]:
        """(output, {(file, check)} of the mismatches); the DAG resolved once per workflow state."""
        from taskabs.pipeline.audit import main, resolve_jobs

        key = workflow_state(root)
        if key not in self._resolutions:
            self._resolutions[key] = resolve_jobs(root.resolve(), [SMOKE])
        out = io.StringIO()
        main(root, [SMOKE], out=out, resolution=self._resolutions[key])
        text = out.getvalue()
        named = {
            (line.split()[1], line.split()[2].strip("[]:"))
            for line in text.splitlines()
            if line.startswith("MISMATCH ")
        }
        return text, named


def workflow_state(root: Path) -> str:
    """What the resolved DAG depends on: the config, the workflow and the code, by content."""
    digest = hashlib.sha256()
    for top in ("config", "workflow", "src", "Snakefile", "profiles"):
        paths = [root / top] if (root / top).is_file() else sorted((root / top).rglob("*"))
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str
    kind: str  # tampering | config | fault
    expected: str
    probe: Callable[[Path, Detectors], tuple[bool, str]]  # (caught/stopped/survived, what happened)


def tampered(paths: list[str], expect_verify: bool, apply: Callable[[Path], None]):
    """A tampering case: caught when each detector expected to name the file does."""

    def probe(root: Path, detectors: Detectors) -> tuple[bool, str]:
        apply(root)
        seen = []
        said = detectors.verify(root)
        if all(names(said, p) for p in paths):
            seen.append("verify")
        text, named = detectors.audit(root)
        checks = sorted({c for f, c in named if f in paths})
        if checks:
            seen.append(f"audit [{','.join(checks)}]")
        ok = bool(checks) and ("verify" in seen or not expect_verify)
        return ok, ("caught by " + " + ".join(seen)) if seen else "missed"

    return probe


def names(said: str, path: str) -> bool:
    """Whether verify's output names ``path`` as failing (CORRUPT, MISSING or STALE)."""
    return any(line.split(" ", 1)[1].startswith(f"{path}:") for line in said.splitlines() if " " in line)


def first(root: Path, pattern: str) -> str:
    return str(sorted(root.glob(pattern))[0].relative_to(root))


def run_with(root: Path, rule: str) -> dict:
    """Tags of the FINISHED run of ``rule`` (the first, by run id)."""
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
        (run_id,) = db.execute(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'rule' AND t.value = ? AND r.status = 'FINISHED' ORDER BY r.run_uuid LIMIT 1",
            (rule,),
        ).fetchone()
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
    return {"run_id": run_id, **tags}


def outputs_of(tags: dict) -> list[str]:
    return sorted(v for k, v in tags.items() if k.startswith("output.") and k.endswith(".path"))


def untouched(root: Path, detectors: Detectors) -> tuple[bool, str]:
    """The control: a copy of the run as it is must raise no alarm at all."""
    said = detectors.verify(root)
    text, named = detectors.audit(root)
    ok = not said and not named and "check out" in text
    return (
        ok,
        "nothing flagged by verify or audit" if ok else f"false alarm: {sorted(named)[:3]} {said[:200]}",
    )


def tampering_cases(base: Path) -> list[Case]:
    idx = first(base, "data/raw/images/*/*.gz")
    corpus = first(base, "data/raw/language/*.txt")
    model = first(base, "results/language/*/seed0/model.pt")
    prepared = first(base, "data/sequences/*.npz")
    metrics = first(base, "results/sequence/gbi_lstm/seed0/*.json")
    evaluate = run_with(base, "evaluate_sequence")
    metric_key = json.loads(evaluate["metric_keys"])[0]
    evaluated = outputs_of(evaluate)
    table = "results/tables/gdln_checks.csv"

    def truncate(root: Path) -> None:
        path = root / "results/report.html"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def edit_json(root: Path) -> None:
        values = json.loads((root / metrics).read_text())
        key = next(k for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        values[key] += 1
        (root / metrics).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")

    def metric(root: Path, statement: str) -> None:
        sql(root, statement, evaluate["run_id"], metric_key)
        sql(root, "DELETE FROM latest_metrics WHERE run_uuid = ? AND key = ?", evaluate["run_id"], metric_key)

    def edit_dvc_lock(root: Path) -> None:
        lock = (root / "dvc.lock").read_text()  # the first output's hash, another valid MD5
        start = lock.index("md5: ", lock.index("outs:")) + len("md5: ")
        forged = hashlib.md5(b"tampered").hexdigest()
        (root / "dvc.lock").write_text(lock[:start] + forged + lock[start + 32 :])

    def hostile_corpus(root: Path) -> None:
        with (root / corpus).open("a") as f:
            f.write(HOSTILE)

    return [
        Case("untouched copy of the run", "control", "nothing flagged", untouched),
        Case(
            "bit flip in a fetched IDX file",
            "tampering",
            "verify (pin) + audit",
            tampered([idx], True, lambda r: flip(r / idx)),
        ),
        Case(
            "bit flip in a gathered corpus file",
            "tampering",
            "verify (manifest) + audit",
            tampered([corpus], True, lambda r: flip(r / corpus)),
        ),
        Case(
            "hostile string appended to a corpus file",
            "tampering",
            "verify (manifest) + audit",
            tampered([corpus], True, hostile_corpus),
        ),
        Case(
            "bit flip in model.pt",
            "tampering",
            "verify + audit",
            tampered([model], True, lambda r: flip(r / model)),
        ),
        Case(
            "bit flip in generated data (data/sequences)",
            "tampering",
            "verify + audit",
            tampered([prepared], True, lambda r: flip(r / prepared)),
        ),
        Case(
            "truncated report.html",
            "tampering",
            "verify + audit",
            tampered(["results/report.html"], True, truncate),
        ),
        Case(
            "one number edited in a metrics JSON",
            "tampering",
            "verify + audit",
            tampered([metrics], True, edit_json),
        ),
        Case(
            "deleted result file",
            "tampering",
            "audit [exists]",
            tampered([table], False, lambda r: (r / table).unlink()),
        ),
        Case(
            "metric edited in MLflow",
            "tampering",
            "audit [record]",
            tampered(
                evaluated,
                False,
                lambda r: metric(r, "UPDATE metrics SET value = value + 1 WHERE run_uuid = ? AND key = ?"),
            ),
        ),
        Case(
            "metric deleted in MLflow",
            "tampering",
            "audit [record]",
            tampered(
                evaluated, False, lambda r: metric(r, "DELETE FROM metrics WHERE run_uuid = ? AND key = ?")
            ),
        ),
        Case(
            "param edited in MLflow",
            "tampering",
            "audit [record]",
            tampered(
                evaluated,
                False,
                lambda r: sql(
                    r,
                    "UPDATE params SET value = '3' WHERE run_uuid = ? "
                    "AND key = 'evaluation.learning_smooth_steps'",
                    evaluate["run_id"],
                ),
            ),
        ),
        Case(
            "run deleted in MLflow",
            "tampering",
            "audit [run]",
            tampered(
                evaluated,
                False,
                lambda r: sql(
                    r, "UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_uuid = ?", evaluate["run_id"]
                ),
            ),
        ),
        Case(
            "output sha256 forged in MLflow",
            "tampering",
            "verify + audit [artifact]",
            tampered(evaluated[:1], True, lambda r: forge_sha(r, evaluate["run_id"], evaluated[0])),
        ),
        Case(
            "dvc.lock edited (an output's md5)",
            "tampering",
            "audit [dvc]",
            tampered([prepared], False, edit_dvc_lock),
        ),
        Case(
            "corpus manifest removed",
            "tampering",
            "verify + audit",
            tampered(
                ["data/raw/language/manifest.json"],
                True,
                lambda r: (r / "data/raw/language/manifest.json").unlink(),
            ),
        ),
        Case(
            "fetched IDX bit flip, fresh clone without MLflow",
            "tampering",
            "make reproduce stops before any job (pin)",
            fresh_clone_flip(idx),
        ),
        Case(
            "corpus bit flip, fresh clone without MLflow",
            "tampering",
            "make reproduce stops before any job (manifest)",
            fresh_clone_flip(corpus),
        ),
        Case(
            "comment-only commit to src/taskabs/gdln/network.py",
            "tampering",
            "audit [code] for exactly the stages importing it",
            comment_commit("src/taskabs/gdln/network.py"),
        ),
        Case(
            "config value changed after the run",
            "tampering",
            "audit [config] for exactly the jobs reading it",
            config_changed(),
        ),
    ]


def forge_sha(root: Path, run_id: str, path: str) -> None:
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
        (key,) = db.execute(
            "SELECT key FROM tags WHERE run_uuid = ? AND key LIKE 'output.%.path' AND value = ?",
            (run_id, path),
        ).fetchone()
    sql(
        root,
        "UPDATE tags SET value = ? WHERE run_uuid = ? AND key = ?",
        "0" * 64,
        run_id,
        key[: -len(".path")] + ".sha256",
    )


def fresh_clone_flip(path: str):
    def probe(root: Path, detectors: Detectors) -> tuple[bool, str]:
        (root / "mlflow.db").unlink()
        shutil.rmtree(root / "mlruns")
        flip(root / path)
        before = digest_tree(root)
        done = make_reproduce(root)
        said = done.stdout + done.stderr
        named = names(said, path) and "taskabs verify --repair" in said
        no_job = not (root / "mlflow.db").exists() and digest_tree(root) == before
        stopped = done.returncode != 0 and named and no_job
        where = failed_step(said)
        return (
            stopped,
            f"stopped by {where}, file named" if stopped else f"not stopped (exit {done.returncode})",
        )

    return probe


STEPS = (  # what make reproduce runs before any job, by a word of its command line
    ("taskabs.pipeline.preflight", "preflight"),
    ("check-config", "taskabs check-config"),
    ("unlock-stale", "taskabs unlock-stale"),
    ("--pinned-only", "taskabs verify --pinned-only"),
    ("verify", "taskabs verify"),
    ("snakemake", "snakemake (the Snakefile's config checks)"),
)


def failed_step(output: str) -> str:
    """The step of make reproduce that stopped it: the last command make echoed."""
    echoed = [line for line in output.splitlines() if line.startswith(str(BIN))]
    last = echoed[-1] if echoed else ""
    return next((name for word, name in STEPS if word in last), last[:40] or "?")


def readers_of_module(root: Path, module: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
        rows = db.execute(
            "SELECT t.run_uuid, t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
            "WHERE t.key = 'code_modules' AND r.status = 'FINISHED'"
        ).fetchall()
        readers = {run_id for run_id, modules in rows if module in json.loads(modules)}
        paths = db.execute("SELECT run_uuid, value FROM tags WHERE key LIKE 'output.%.path'").fetchall()
    return {p for run_id, p in paths if run_id in readers}


def comment_commit(module: str):
    def probe(root: Path, detectors: Detectors) -> tuple[bool, str]:
        expected = readers_of_module(root, module)
        with (root / module).open("a") as f:
            f.write("# a comment only\n")
        git(root, "commit", "-q", "-am", "comment only")
        text, named = detectors.audit(root)
        flagged = {f for f, c in named if c == "code"}
        precise = (
            {c for _, c in named} == {"code"}
            and bool(expected)
            and {f for f in flagged if not f.startswith("results/report")} <= expected_files(root, expected)
        )
        return (
            precise,
            f"audit [code] on {len(flagged)} files, all of stages importing it, nothing else"
            if precise
            else f"imprecise: {sorted(named)[:4]}",
        )

    return probe


def expected_files(root: Path, declared: set[str]) -> set[str]:
    """The files of declared outputs (a directory output: every file in it)."""
    found = set()
    for path in declared:
        if (root / path).is_dir():
            found |= {str(p.relative_to(root)) for p in (root / path).rglob("*") if p.is_file()}
        else:
            found.add(path)
    return found


def config_changed():
    def probe(root: Path, detectors: Detectors) -> tuple[bool, str]:
        import yaml

        config = yaml.safe_load((root / SMOKE).read_text())
        config["sequence"].setdefault("evaluation", {})["learning_smooth_steps"] = 3
        (root / SMOKE).write_text(yaml.safe_dump(config))
        with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
            readers = {
                run_id
                for run_id, value in db.execute("SELECT run_uuid, value FROM tags WHERE key = 'config_json'")
                if "learning_smooth_steps" in value
            }
            paths = db.execute("SELECT run_uuid, value FROM tags WHERE key LIKE 'output.%.path'").fetchall()
        expected = expected_files(root, {p for run_id, p in paths if run_id in readers})
        text, named = detectors.audit(root)
        flagged = {f for f, c in named}
        precise = {c for _, c in named} == {"config"} and flagged == expected
        return (
            precise,
            f"audit [config] on exactly the {len(expected)} outputs of its readers"
            if precise
            else f"imprecise: flagged {len(flagged)}, expected {len(expected)}",
        )

    return probe


# --------------------------------------------------------------------------- bad configs


def bad_config(text: str, names: str):
    """``make reproduce`` with the overlay: stopped before any job, with a message naming ``names``."""

    def probe(root: Path, detectors: Detectors) -> tuple[bool, str]:
        (root / OVERLAY).write_text(text)
        runs, before = run_count(root), digest_tree(root)
        started = time.monotonic()
        done = make_reproduce(root, OVERLAY, timeout=600)
        said = done.stdout + done.stderr
        no_job = run_count(root) == runs and digest_tree(root) == before
        stopped = done.returncode != 0 and no_job and names in said
        step = failed_step(said)
        took = time.monotonic() - started
        if stopped:
            return True, f"stopped by {step} in {took:.0f} s, names {names!r}"
        return False, f"exit {done.returncode}, no job: {no_job}, named: {names in said} ({took:.0f} s)"

    return probe


def config_cases() -> list[Case]:
    corpus = "{globs: ['/usr/share/common-licenses/*'], licence: x, origin: y, pakage: base-files}"
    return [
        Case(
            "10,000 seeds",
            "config",
            "config check (bound)",
            bad_config(f"seeds: {list(range(10000))}\n", "seeds"),
        ),
        Case(
            "width 1e9",
            "config",
            "config check (bound)",
            bad_config("geometry: {widths: [1000000000]}\n", "widths"),
        ),
        Case("unknown key", "config", "config check", bad_config("sequence: {trian: {steps: 3}}\n", "trian")),
        Case(
            "tracking.uri with ..",
            "config",
            "config check (path)",
            bad_config("tracking: {uri: 'sqlite:///../outside.db'}\n", "tracking.uri"),
        ),
        Case(
            "malformed YAML",
            "config",
            "check-config (file and line)",
            bad_config("seeds: [0, 1\nsequence: {", OVERLAY),
        ),
        Case(
            "device cuda without a GPU",
            "config",
            "config check (device)",
            bad_config("device: cuda\n", "cuda"),
        ),
        Case(
            "hostile string in config",
            "config",
            "config check (characters)",
            bad_config(
                f"tracking: {{experiment: '{HOSTILE.replace(chr(39), '')}'}}\n", "tracking.experiment"
            ),
        ),
        Case(
            "typo inside custom_corpora",
            "config",
            "config check",
            bad_config(f"language: {{data: {{custom_corpora: {{mine: {corpus}}}}}}}\n", "pakage"),
        ),
        Case("negative count", "config", "schema", bad_config("sequence: {train: {steps: -1}}\n", "steps")),
    ]


# --------------------------------------------------------------------------------- faults


def recovered(root: Path, base_digest: dict[str, str], detectors: Detectors) -> tuple[bool, str]:
    """After a repair: results as the run's (but for what is re-made differently by design), verify clean."""
    now = digest_tree(root)
    changed = sorted(p for p in base_digest.keys() | now.keys() if base_digest.get(p) != now.get(p))
    changed = [p for p in changed if p not in REMADE_DIFFERENT]
    said = detectors.verify(root)
    if changed:
        return False, f"{len(changed)} result(s) differ, e.g. {changed[0]}"
    if said:
        return False, said.splitlines()[0]
    return True, "results identical, verify clean"


def kill_tree(pid: int) -> None:
    """SIGKILL to a process and every descendant at once (some leave its process group), then
    wait until all are gone."""
    import psutil

    root = psutil.Process(pid)
    every = [root, *root.children(recursive=True)]
    for process in every:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(every, timeout=30)


def fault_cases(base: Path) -> list[Case]:
    base_digest = digest_tree(base)
    intermediate = "results/gdln/xor/summary.json"
    slow = "results/gdln/zero_shot/rows.parquet"

    def deleted(root: Path, detectors: Detectors):
        (root / intermediate).unlink()
        done = make_reproduce(root)
        if done.returncode != 0:
            return False, f"make reproduce failed: {done.stdout[-300:]}"
        ok, what = recovered(root, base_digest, detectors)
        text, named = detectors.audit(root)
        ok = ok and not named
        return ok, f"re-made; {what}; audit {'clean' if not named else sorted(named)[:2]}"

    def kill_and_concurrent(root: Path, detectors: Detectors, which: str):
        (root / slow).unlink()
        first_run = make_reproduce(root, popen=True)
        deadline = time.monotonic() + 600
        while not any((root / ".snakemake/incomplete").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.5)  # until a job is running
        time.sleep(3)
        second = make_reproduce(root, timeout=600)
        second_said = second.stdout + second.stderr
        refused = (
            second.returncode != 0 and first_run.poll() is None and any((root / ".snakemake/locks").glob("*"))
        )
        kill_tree(first_run.pid)
        first_run.wait()
        if which == "concurrent":
            tail = [line for line in second_said.splitlines() if "lock" in line.lower()][-1:] or ["?"]
            return refused, f"refused while the first ran: {tail[0][:90]}" if refused else "not refused"
        again = make_reproduce(root)
        if again.returncode != 0:
            return False, f"re-run failed: {(again.stdout + again.stderr)[-400:]}"
        ok, what = recovered(root, base_digest, detectors)
        running = runs_in(root, "RUNNING")
        killed = runs_in(root, "KILLED") + runs_in(root, "FAILED")
        return (
            ok and running == 0 and killed >= 1,
            f"{what}; {killed} run(s) marked KILLED/FAILED, {running} RUNNING",
        )

    def lock(root: Path, identity: dict) -> None:
        locks = root / ".snakemake/locks"
        locks.mkdir(parents=True, exist_ok=True)
        (locks / "0.input.lock").write_text(str(root / "data") + "\n")
        beats = root / ".snakemake/taskabs-heartbeats"
        beats.mkdir(parents=True, exist_ok=True)
        (beats / f"{identity['host']}.{identity['pid']}.json").write_text(
            json.dumps({**identity, "directory": str(root), "time": time.time()})
        )

    def stale(root: Path, detectors: Detectors):
        from taskabs.pipeline.tracking import process_identity

        dead = subprocess.Popen(["true"])
        identity = process_identity(dead.pid)
        dead.wait()
        lock(root, identity)
        done = make_reproduce(root)
        gone = not any((root / ".snakemake/locks").glob("*"))
        return (
            done.returncode == 0 and gone,
            "lock of a dead pid removed, run completed" if gone else "still locked",
        )

    def live(root: Path, detectors: Detectors):
        from taskabs.pipeline.tracking import process_identity

        identity = {**process_identity(), "host": "login-node-2", "boot_id": "another-boot", "pid": 4242}
        lock(root, identity)
        done = make_reproduce(root)
        kept = any((root / ".snakemake/locks").glob("*"))
        said = done.stdout + done.stderr
        ok = done.returncode != 0 and kept and "login-node-2" in said
        return (
            ok,
            "refused, lock kept, the other host named" if ok else f"exit {done.returncode}, lock kept {kept}",
        )

    def truncated_report(root: Path, detectors: Detectors):
        path = root / "results/report.html"
        path.write_bytes(path.read_bytes()[:1000])
        done = make_reproduce(root)
        whole = path.read_bytes().rstrip().endswith(b"</html>")
        ok, what = recovered(root, base_digest, detectors)
        return done.returncode == 0 and whole and ok, f"report rebuilt; {what}"

    def corrupt_checkpoint(root: Path, detectors: Detectors):
        model = "results/language/lstm/seed0/model.pt"
        checkpoint = root / "checkpoints/language/lstm/seed0.pt"
        checkpoint.write_bytes(b"not a checkpoint, half written")
        done = run(
            [
                str(BIN / "snakemake"),
                model,
                "--forcerun",
                "train_language",
                "--workflow-profile",
                "profiles/default",
                "--configfile",
                SMOKE,
            ],
            root,
        )
        log = root / "logs/train_language/lstm_seed0.log"
        said = done.stdout + done.stderr + (log.read_text() if log.exists() else "")
        named = "seed0.pt" in said and ("set aside" in said or "corrupt" in said.lower())
        same = hashlib.sha256((root / model).read_bytes()).hexdigest() == base_digest[model]
        ok = done.returncode == 0 and named and same
        return (
            ok,
            f"named and set aside, training restarted, model {'identical' if same else 'differs'}"
            if ok
            else f"exit {done.returncode}, named {named}, same {same}",
        )

    def hostile_table(root: Path, detectors: Detectors):
        table = root / "results/tables/gdln_checks.csv"
        with table.open(newline="") as f:
            rows = list(csv.reader(f))
        rows.append([HOSTILE] + [""] * (len(rows[0]) - 1))
        with table.open("w", newline="") as f:
            csv.writer(f).writerows(rows)
        done = run(
            [
                str(BIN / "snakemake"),
                "--report",
                "results/report.html",
                "--workflow-profile",
                "profiles/default",
                "--configfile",
                SMOKE,
            ],
            root,
        )
        page = (root / "results/report.html").read_bytes()
        ok = done.returncode == 0 and HOSTILE.encode() not in page and b"</script><script>window" not in page
        return ok, "in the page only as a base64 data: URI (no markup)" if ok else "raw in the page"

    return [
        Case("deleted intermediate (a GDLN summary)", "fault", "make reproduce re-makes it", deleted),
        Case(
            "second concurrent make reproduce",
            "fault",
            "refused by the lock",
            lambda r, d: kill_and_concurrent(r, d, "concurrent"),
        ),
        Case(
            "kill -9 of the whole run mid-job",
            "fault",
            "next make reproduce completes, run marked KILLED",
            lambda r, d: kill_and_concurrent(r, d, "kill"),
        ),
        Case("stale lock (dead pid, this host)", "fault", "unlock-stale removes it", stale),
        Case("live lock (heartbeat from another host)", "fault", "refused, lock kept", live),
        Case("truncated report.html", "fault", "make reproduce rebuilds it", truncated_report),
        Case(
            "corrupt training checkpoint", "fault", "named, set aside, training restarts", corrupt_checkpoint
        ),
        Case(
            "hostile string in a table the report embeds", "fault", "shown as text, no script", hostile_table
        ),
    ]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, help="a complete smoke run (default: make one)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/taskabs-integrity-probe"))
    parser.add_argument("--only", nargs="+", help="run only the cases whose name contains one of these")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown to this file")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base = args.project.resolve() if args.project else make_base(args.work / "base")
    detectors = Detectors(base)
    cases = tampering_cases(base) + config_cases() + fault_cases(base)
    if args.only:
        cases = [c for c in cases if any(word in c.name for word in args.only)]
    rows = []
    for number, case in enumerate(cases):
        # a path of its own: MLflow keeps a store per tracking URI open in this process
        root = fresh_copy(base, args.work / f"case-{number:02d}")
        t0 = time.monotonic()
        try:
            ok, what = case.probe(root, detectors)
        except Exception as error:  # a case that breaks counts as not caught
            ok, what = False, f"probe error: {type(error).__name__}: {error}"
        rows.append((case, ok, what))
        if ok:
            shutil.rmtree(root, ignore_errors=True)  # a case not caught stays, to be looked at
        print(
            f"{case.name} | {case.expected} | {what} [{'ok' if ok else 'NO'}, {time.monotonic() - t0:.0f} s]",
            flush=True,
        )
    counts = {
        kind: (sum(ok for c, ok, _ in rows if c.kind == kind), sum(c.kind == kind for c, _, _ in rows))
        for kind in ("control", "tampering", "config", "fault")
    }
    lines = ["| case | expected | result |", "|---|---|---|"]
    lines += [f"| {c.name} | {c.expected} | {'' if ok else '**MISSED** '}{what} |" for c, ok, what in rows]
    summary = [
        f"untouched copy without false alarms {counts['control'][0]}/{counts['control'][1]}",
        f"tampering caught {counts['tampering'][0]}/{counts['tampering'][1]}",
        f"bad configs stopped before any job {counts['config'][0]}/{counts['config'][1]}",
        f"faults survived {counts['fault'][0]}/{counts['fault'][1]}",
        f"probe time {time.monotonic() - started:.0f} s",
    ]
    print("\n".join(["", *lines, "", *summary]))
    if args.markdown:
        args.markdown.write_text("\n".join([*lines, "", "; ".join(summary), ""]))
    return 0 if all(ok for _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
