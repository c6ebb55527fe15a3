"""The three layers stay apart: the library never imports the pipeline or an experiment, and no
experiment imports another (experiments exchange only declared files)."""

from pathlib import Path

import pytest

import taskabs
from taskabs.pipeline.codehash import _imports

SOURCE = Path(taskabs.__file__).parent
EXPERIMENTS = sorted(p.name for p in (SOURCE / "experiments").iterdir() if (p / "__init__.py").exists())


def _module_imports(path: Path) -> list[str]:
    import ast

    return [m for m in _imports(ast.parse(path.read_bytes())) if m.startswith("taskabs.")]


def _files(where: str) -> list[Path]:
    return sorted((SOURCE / where).rglob("*.py"))


LIBRARY = [
    p for p in SOURCE.rglob("*.py") if p.relative_to(SOURCE).parts[0] not in ("experiments", "pipeline")
]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(SOURCE)))
def test_the_library_imports_neither_pipeline_nor_experiments(path):
    bad = [m for m in _module_imports(path) if m.startswith(("taskabs.pipeline", "taskabs.experiments"))]
    assert not bad, f"{path.relative_to(SOURCE)} imports {bad}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_no_experiment_imports_another(experiment):
    others = tuple(f"taskabs.experiments.{e}" for e in EXPERIMENTS if e != experiment)
    for path in _files(f"experiments/{experiment}"):
        bad = [m for m in _module_imports(path) if m.startswith(others)]
        assert not bad, f"{path.relative_to(SOURCE)} imports {bad}"
