"""A rule's code hash covers exactly the modules its stage runs: checked statically (edit each
module, see which hashes change) and dynamically (what importing the stage really loads)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import taskabs
from taskabs.pipeline.codehash import code_hash, module_path, reached_modules
from taskabs.pipeline.stages import STAGES, stage_module

SOURCE = Path(taskabs.__file__).parent
STAGE_MODULES = sorted({stage_module(rule) for rule in STAGES})


def _all_modules(source: Path) -> list[str]:
    names = []
    for path in sorted(source.rglob("*.py")):
        parts = path.relative_to(source.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_importing_a_stage_loads_no_taskabs_module_its_hash_misses(module):
    probe = f"import sys, {module}; print('\\n'.join(m for m in sys.modules if m.startswith('taskabs')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert set(loaded.stdout.split()) <= set(reached_modules(module))


def test_editing_a_module_changes_exactly_the_hashes_of_the_rules_that_reach_it(tmp_path):
    source = tmp_path / "taskabs"
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("__pycache__"))
    before = {rule: code_hash(stage_module(rule), source) for rule in STAGES}
    for module in _all_modules(source):
        path = module_path(module, source)
        original = path.read_bytes()
        path.write_bytes(original + b"\n# a comment\n")
        try:
            changed = {rule for rule in STAGES if code_hash(stage_module(rule), source) != before[rule]}
        finally:
            path.write_bytes(original)
        reaching = {rule for rule in STAGES if module in reached_modules(stage_module(rule), source)}
        assert changed == reaching, module


def test_the_job_machinery_is_in_no_experiment_stage_hash():
    for module in STAGE_MODULES:
        if module.startswith("taskabs.experiments."):
            assert not [m for m in reached_modules(module) if m.startswith("taskabs.pipeline")], module
