# Helpers shared by every rule: per-job config slices, the target list, and the MLflow parent run.
import os

from taskabs import tracking
from taskabs.provenance import git_state


# The project's one software environment (used with --software-deployment-method conda).
CONDA_ENV = "../../environment.yml"
SEQUENCE_RUNS = "results/sequence/{model}/seed{seed}"
GDLN_EXPERIMENTS = ["xor", "routing", "race", "zero_shot"]


def sequence_config(*sections):
    """The slice of config.sequence a job reads: its params, so editing it reruns only that job."""
    return {section: config["sequence"][section] for section in sections}


def sequence_results(pattern, models=None):
    return expand(
        pattern,
        model=models or config["sequence"]["models"],
        seed=config["seeds"],
    )


def data_targets():
    targets = []
    if config["sequence"]["enabled"]:
        targets += rules.generate_sequences.output
    return targets


def all_targets():
    targets = []
    if config["sequence"]["enabled"]:
        targets += rules.plot_sequence.output
        targets += rules.tabulate_sequence.output
    if config["gdln"]["enabled"]:
        targets += rules.plot_gdln.output
    return targets


onstart:
    commit, dirty = git_state()
    tracking.start_invocation(
        config,
        tags={"git_commit": commit, "git_dirty": str(dirty).lower(), "rule": "pipeline"},
    )


onsuccess:
    tracking.end_invocation(config, success=True)


onerror:
    tracking.end_invocation(config, success=False)
