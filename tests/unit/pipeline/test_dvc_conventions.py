"""dvc.yaml follows DVC's conventions: the config is DVC params, the figures are image plots, and
every declared model artifact is an output the workflow really produces."""

import subprocess

import yaml

from conftest import BIN, ROOT, tool_env


def test_params_plots_and_artifacts_are_declared():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage in dvc["stages"].values():
        assert {"config/config.yaml": None} in stage["params"]
    assert {"results/figures": None} in dvc["plots"]
    assert all(a["type"] == "model" and a["path"].endswith("model.pt") for a in dvc["artifacts"].values())


def test_every_artifact_is_an_output_of_the_quick_default(tmp_path):
    summary = subprocess.run(
        [str(BIN / "snakemake"), "--summary", "--configfile", "config/config.yaml"],
        cwd=ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    outputs = {line.split("\t")[0] for line in summary.splitlines()[1:]}
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    missing = {name: a["path"] for name, a in artifacts.items() if a["path"] not in outputs}
    assert not missing, f"dvc.yaml artifacts the workflow does not produce: {missing}"
