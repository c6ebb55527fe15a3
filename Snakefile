# Task-abstraction reproduction pipeline: data -> training -> GBI inference -> recomposition ->
# evaluation -> tables, figures and an HTML report (`snakemake --report`).  See README.md.
import sys

from snakemake.utils import min_version, validate

sys.path.insert(0, f"{workflow.basedir}/src")  # the library, whether pip-installed or not
from taskabs.pipeline import config_checks, locks  # noqa: E402

min_version("9.0")


configfile: "config/config.yaml"


config_checks.validate(config, "workflow/schemas/config.schema.yaml")  # short errors naming the key
locks.start_heartbeat(workflow)  # what `taskabs unlock-stale` tells a live run from a dead one by


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/sequence.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/language.smk"
include: "workflow/rules/geometry.smk"
include: "workflow/rules/gdln.smk"
include: "workflow/rules/scorecard.smk"


rule all:
    default_target: True
    input:
        all_targets(),
