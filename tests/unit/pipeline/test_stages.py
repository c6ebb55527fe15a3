"""Every rule that runs a stage has one in the registry, and every registry entry imports."""

import re

import pytest

from conftest import ROOT
from taskabs.pipeline.stages import STAGES, stage


def stage_rules() -> set[str]:
    """Rules whose `script:` is run_stage.py, read from the workflow's .smk files."""
    rules = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule )", path.read_text()):
            match = re.match(r"rule (\w+):", block.strip())
            if match and "run_stage.py" in block:
                rules.add(match.group(1))
    return rules


def test_registry_matches_the_workflow_and_every_entry_is_a_function():
    assert stage_rules() == set(STAGES)
    for rule in STAGES:
        assert callable(stage(rule)), rule


def test_unknown_rule_is_named():
    with pytest.raises(KeyError, match="train_transformer"):
        stage("train_transformer")


def test_no_experiment_imports_torch_inside_a_function():
    """Jobs seed torch only if the stage's module imported it (a stage without torch does not pay
    for it): an experiment that imported torch inside a function would run unseeded."""
    import ast
    from pathlib import Path

    import taskabs

    for path in sorted((Path(taskabs.__file__).parent / "experiments").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] == "torch" for n in names), f"{path.name}:{node.lineno}"
