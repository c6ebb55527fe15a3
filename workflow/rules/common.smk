# Helpers shared by every rule: per-job config slices, the target list, and the MLflow parent run.
from taskabs.pipeline import local_server, scorecard, tracking
from taskabs.pipeline.codehash import code_hash
from taskabs.pipeline.stages import stage_module
from taskabs.pipeline.provenance import git_state

# The project's one software environment (used with --software-deployment-method conda).
CONDA_ENV = "../../environment.yml"
SEQUENCE_RUNS = "results/sequence/{model}/seed{seed}"
LANGUAGE_RUNS = "results/language/{model}/seed{seed}"
GDLN_EXPERIMENTS = ["xor", "routing", "race", "zero_shot"]
# Priority of the longest chain (corpora -> language training, a minute or more per job) and the
# other long jobs: started first, so the many short jobs fill the cores at the end instead of
# the cores idling behind one late long job.
LONG_JOBS_FIRST = 10


def stage_code(rule):
    """SHA-256 of the modules the rule's stage reaches (taskabs.pipeline.codehash): its `code`
    param, so editing a module re-runs exactly the jobs that run it."""
    return code_hash(stage_module(rule))


REPORT_CATEGORIES = {
    "sequence": "1. GBI toy sequences",
    "images": "2. GBI image classifier",
    "gdln": "3. Gated deep linear networks",
    "geometry": "4. Abstract representations",
    "language": "5. GBI language model",
}


def _reported(kind, stem, experiment, suffix):
    return report(
        f"results/{kind}s/{stem}.{suffix}",
        caption=f"../report/{kind}s/{stem}.rst",
        category=REPORT_CATEGORIES[experiment],
        subcategory=f"{kind.capitalize()}s",
    )


def figure(stem, experiment):
    """results/figures/<stem>.png in the report, captioned by workflow/report/figures/<stem>.rst."""
    return _reported("figure", stem, experiment, "png")


def table(stem, experiment):
    """results/tables/<stem>.csv in the report, captioned by workflow/report/tables/<stem>.rst."""
    return _reported("table", stem, experiment, "csv")


def sequence_config(*sections):
    """The slice of config.sequence a job reads: its params, so editing it reruns only that job."""
    return {section: config["sequence"][section] for section in sections}


def images_config(*sections):
    return {section: config["images"][section] for section in sections}


config_checks.check(config, workflow)  # bounds, paths, device, corpora (taskabs.pipeline.config_checks)


def language_config(*sections):
    return {section: config["language"][section] for section in sections}


def language_results(pattern, models=None):
    return expand(pattern, model=models or config["language"]["models"], seed=config["seeds"])


def geometry_config(*keys):
    return {key: config["geometry"][key] for key in keys}


def geometry_cells():
    g = config["geometry"]
    return expand(
        "results/geometry/sweep/d{d}/{activation}/depth{depth}/width{width}/wd{weight_decay}.parquet",
        d=g["d"],
        activation=g["activations"],
        depth=g["depths"],
        width=g["widths"],
        weight_decay=g["weight_decays"],
    )


def geometry_sequence_runs():
    """Hidden-state geometry of the sequence models, when that experiment runs."""
    return sequence_results(f"{SEQUENCE_RUNS}/geometry.json") if config["sequence"]["enabled"] else []


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
    if config["images"]["enabled"]:
        targets += rules.prepare_images.output
    if config["language"]["enabled"]:
        targets += rules.prepare_corpora.output
    return targets


def all_targets():
    targets = list(rules.scorecard.output)
    if config["sequence"]["enabled"]:
        targets += rules.plot_sequence.output
        targets += rules.tabulate_sequence.output
    if config["gdln"]["enabled"]:
        targets += rules.plot_gdln.output
    if config["images"]["enabled"]:
        targets += rules.plot_images.output
    if config["geometry"]["enabled"]:
        targets += rules.plot_geometry.output
    if config["language"]["enabled"]:
        targets += rules.plot_language.output
        targets += rules.tabulate_language.output
    return targets


onstart:
    if not workflow.touch:  # `make pull` touches pulled results: no job runs, nothing to track
        commit, dirty = git_state()
        tracking.start_invocation(
            config,
            tags={"git_commit": commit, "git_dirty": str(dirty).lower(), "rule": "pipeline"},
        )
        if local_server.wanted(config, workflow):  # after the store exists: one creator
            local_server.start(config)


onsuccess:
    tracking.end_invocation(config, success=True)


onerror:
    tracking.end_invocation(config, success=False)
