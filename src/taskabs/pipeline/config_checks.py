"""Checks of the config that the JSON schema cannot make, run before any job starts.

``workflow/rules/common.smk`` calls :func:`check` once the schema has filled in the defaults; the
``taskabs check-config`` command (run by ``make reproduce`` before Snakemake) reports a config
file that is not YAML with its name, line and column. Every error is one short
:class:`ConfigError` naming the key:

- sizes with a bound tighter than the schema's generic one (:data:`MAXIMA`: a width of 10^9 would
  start jobs and die in an allocation naming no key), and the size of the DAG (:data:`MAX_JOBS`);
- paths: no ``..`` component, and nothing the pipeline writes outside the project (a
  ``tracking.uri`` of ``sqlite:////elsewhere``), unless ``TASKABS_ALLOW_OUTSIDE_PATHS=1``;
- text that ends up in the HTML report carries no markup (``<``, ``>``, ``&``, quotes);
- ``device: cuda`` (or ``mps``) on a local run where no such device is visible;
- the language model's corpora, the BabyLM pin and the balance of its batches.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

ALLOW_OUTSIDE_ENV = "TASKABS_ALLOW_OUTSIDE_PATHS"
NO_DEVICE_CHECK_ENV = "TASKABS_NO_DEVICE_CHECK"
MAX_JOBS = 20_000  # Snakemake builds a DAG of 10^4 jobs in seconds; 10^5 takes minutes and GBs
WIDTH = 16_384
# dotted key (fnmatch pattern; list items are key[]) -> largest value accepted
MAXIMA: dict[str, int | float] = {
    "seeds": 100,
    "sequence.model.hidden": WIDTH,
    "sequence.data.train_streams": 100_000,
    "sequence.data.test_streams": 100_000,
    "sequence.data.probe_streams": 100_000,
    "sequence.data.train_length": 10_000_000,
    "sequence.data.test_length": 10_000_000,
    "sequence.data.probe_length": 1_000_000,
    "sequence.data.block_*": 1_000_000,
    "sequence.*.steps": 1_000_000,
    "sequence.*.iterative_steps": 100_000,
    "images.*.hidden": WIDTH,
    "images.generative.bottleneck": 4_096,
    "images.*.epochs": 10_000,
    "images.*.batch": 1_000_000,
    "images.data.n_*": 10_000_000,
    "images.*.pairs": 100_000,
    "images.*.steps": 1_000_000,
    "images.inference.ece_bins": 10_000,
    "language.model.embedding": 4_096,
    "language.model.hidden": WIDTH,
    "language.train.steps": 10_000_000,
    "language.train.batch": 100_000,
    "language.*.windows_per_corpus": 1_000_000,
    "language.*.window": 100_000,
    "language.inference.window_lengths[]": 100_000,
    "language.*.steps": 1_000_000,
    "language.*.iterative_steps": 100_000,
    "geometry.widths[]": WIDTH,
    "geometry.depths[]": 64,
    "geometry.d[]": 1_000,
    "geometry.seeds": 100,
    "geometry.steps": 10_000_000,
    "geometry.eval_steps[]": 10_000_000,
    "geometry.random_tasks[]": 100_000,
    "geometry.network.input_dim": WIDTH,
    "geometry.network.n_per_condition": 100_000,
    "geometry.*null*": 100_000,
}
# Keys whose text is written into result files and the HTML report
MARKUP = set("<>&\"'`")


class ConfigError(ValueError):
    """A config value the pipeline refuses: the message names the key."""


def check(config: dict, workflow: Any = None) -> None:
    """Every check below, in order; raises :class:`ConfigError` on the first key that fails."""
    check_maxima(config)
    check_dag_size(config)
    check_paths(config)
    check_text(config)
    check_language(config)
    if workflow is not None and _runs_jobs_here(workflow):
        check_device(config.get("device", "cpu"))


# ---------------------------------------------------------------------------------------------


def leaves(tree: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, value) of every leaf; list items appear as ``key[]``."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}{key}.")
    elif isinstance(tree, list):
        for value in tree:
            yield from leaves(value, prefix[:-1] + "[].")
    else:
        yield prefix[:-1], tree


def check_maxima(config: dict) -> None:
    for key, value in leaves(config):
        for pattern, bound in MAXIMA.items():
            if (
                fnmatch.fnmatchcase(key, pattern)
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and value > bound
            ):
                raise ConfigError(f"config key {key}: {value} is above its maximum {bound}")
    for key in ("seeds", "geometry.seeds"):
        value = _get(config, key)
        if isinstance(value, list) and len(value) > MAXIMA[key]:
            raise ConfigError(f"config key {key}: {len(value)} seeds, at most {MAXIMA[key]}")


def _get(config: dict, key: str, default: Any = None) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _n(config: dict, key: str) -> int:
    value = _get(config, key, [])
    return len(value) if isinstance(value, list) else 1


def estimated_jobs(config: dict) -> int:
    """An upper estimate of the number of jobs the config makes (per-seed and per-cell rules)."""
    seeds = _n(config, "seeds")
    jobs = 0
    if _get(config, "sequence.enabled", True):
        jobs += 8 * seeds * _n(config, "sequence.models")
    if _get(config, "language.enabled", True):
        jobs += 8 * seeds * _n(config, "language.models")
    if _get(config, "images.enabled", True):
        jobs += 10 * seeds
    if _get(config, "geometry.enabled", True):
        cells = math.prod(
            _n(config, f"geometry.{k}") for k in ("d", "activations", "depths", "widths", "weight_decays")
        )
        jobs += cells + seeds * 4
    return jobs + 50


def check_dag_size(config: dict) -> None:
    jobs = estimated_jobs(config)
    if jobs > MAX_JOBS:
        raise ConfigError(
            f"config keys seeds / geometry.(d, activations, depths, widths, weight_decays): about {jobs} "
            f"jobs, at most {MAX_JOBS} (split the sweep over several configs)"
        )


# ---------------------------------------------------------------------------------------------
# Paths


def _outside_allowed() -> bool:
    return os.environ.get(ALLOW_OUTSIDE_ENV, "") not in ("", "0", "false")


def check_path(key: str, path: str, *, written: bool) -> None:
    """No ``..`` component; a written path inside the project (relative) unless opted in."""
    if ".." in PurePosixPath(path).parts:
        raise ConfigError(f"config key {key}: path {path!r} contains '..'; give a path inside the project")
    if written and PurePosixPath(path).is_absolute() and not _outside_allowed():
        raise ConfigError(
            f"config key {key}: {path!r} is outside the project; give a project-relative path "
            f"(or set {ALLOW_OUTSIDE_ENV}=1 to write there on purpose)"
        )


def check_paths(config: dict) -> None:
    uri = _get(config, "tracking.uri") or ""
    for scheme in ("sqlite:///", "file://"):
        if uri.startswith(scheme):
            check_path("tracking.uri", uri[len(scheme) :], written=True)
    if uri and "://" not in uri:  # a bare path is a file store
        check_path("tracking.uri", uri, written=True)
    for name, dataset in (_get(config, "images.data.datasets") or {}).items():
        for i, source in enumerate(dataset.get("sources", [])):
            if "path" in source:
                check_path(f"images.data.datasets.{name}.sources[{i}].path", source["path"], written=False)
    for name, spec in (_get(config, "language.data.custom_corpora") or {}).items():
        for pattern in spec.get("globs", []) + spec.get("exclude", []):
            check_path(f"language.data.custom_corpora.{name}.globs", pattern, written=False)


def check_text(config: dict) -> None:
    """Names and labels reach result files and the HTML report: plain text only."""
    for key, value in leaves(config):
        if key.startswith(("tracking.uri", "language.data.babylm.url", "images.data.datasets.")):
            continue  # URLs and pins: not shown as markup; URLs may hold '&'
        if key.endswith(("custom_corpora", ".globs[]", ".exclude[]", ".comment_prefixes[]")):
            continue
        if ".custom_corpora." in key and key.split(".")[-1] in ("separator_lines[]", "comment_prefixes[]"):
            continue
        if isinstance(value, str) and MARKUP & set(value):
            shown = "".join(sorted(MARKUP & set(value)))
            raise ConfigError(f"config key {key}: {value[:40]!r} contains markup characters {shown!r}")


# ---------------------------------------------------------------------------------------------
# Device and language model


def _runs_jobs_here(workflow: Any) -> bool:
    """A local run that will execute jobs (not a dry run, --touch, a cluster submission, the
    audit's DAG dump, or a job's own re-parse on a node)."""
    if os.environ.get(NO_DEVICE_CHECK_ENV):
        return False
    try:
        return bool(
            workflow.local_exec and not workflow.dryrun and not workflow.touch and not workflow.remote_exec
        )
    except Exception:  # an API change: do not block the run over a pre-check
        return False


def check_device(device: str) -> None:
    if device not in ("cuda", "mps"):
        return
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "config key device: 'cuda' but no CUDA device is visible on this machine "
            "(use device: auto or cpu, or run through profiles/slurm on GPU nodes)"
        )
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("config key device: 'mps' but Apple MPS is not available here (use auto or cpu)")


def check_language(config: dict) -> None:
    """Unknown corpora, an unpinned BabyLM, overlapping splits, unbalanced batches."""
    from taskabs.data.corpora import QUICK_CORPORA

    language = config["language"]
    data = language["data"]
    if not language["enabled"]:
        return
    if data["source"] == "babylm" and not data["babylm"]["sha256"]:
        raise ConfigError(
            "config key language.data.babylm.sha256 is not set: with language.data.source 'babylm' the "
            f"archive {data['babylm']['url']} must be pinned. Download it once, verify it, and set its "
            "SHA-256 (sha256sum babylm_data.zip), or set language.data.source to 'debian'."
        )
    if data["source"] == "debian":
        known = set(QUICK_CORPORA) | set(data["custom_corpora"])
        unknown = [n for n in data["corpora"] + data["held_out"] if n not in known]
        if unknown:
            raise ConfigError(
                f"config keys language.data.corpora/held_out name unknown corpora {unknown}; "
                f"known: {sorted(known)} (define others under language.data.custom_corpora)"
            )
    if set(data["corpora"]) & set(data["held_out"]):
        raise ConfigError(
            "config keys language.data.corpora and held_out overlap: "
            f"{sorted(set(data['corpora']) & set(data['held_out']))}"
        )
    if language["train"]["batch"] % len(data["corpora"]):
        raise ConfigError(
            f"config key language.train.batch ({language['train']['batch']}) must be a multiple "
            f"of the {len(data['corpora'])} training corpora (batches are balanced over them)"
        )


# ---------------------------------------------------------------------------------------------
# Files and the schema


def check_yaml_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """'file:line:column: problem' for each config file that is missing, not YAML, or not a mapping."""
    import yaml

    problems = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            problems.append(f"{path}: no such config file")
            continue
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problems.append(f"{where}: not valid YAML: {getattr(error, 'problem', None) or error}")
            continue
        except UnicodeDecodeError as error:
            problems.append(f"{path}: not text: {error}")
            continue
        if loaded is not None and not isinstance(loaded, dict):
            problems.append(f"{path}: the top level must be a mapping of keys, not {type(loaded).__name__}")
    return problems


def validate(config: dict, schema: str | os.PathLike) -> None:
    """Snakemake's schema validation (which fills in defaults), its error cut to the key and why."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as snakemake_validate

    try:
        snakemake_validate(config, str(schema))
    except WorkflowError as error:
        import jsonschema

        found = [a for a in error.args if isinstance(a, jsonschema.ValidationError)]
        cause = found[0] if found else (error.__cause__ or error.__context__)
        path = ".".join(str(p) for p in getattr(cause, "absolute_path", []) or [])
        message = getattr(cause, "message", None) or str(error).splitlines()[0]
        raise ConfigError(f"config key {path or '(top level)'}: {message}") from None
