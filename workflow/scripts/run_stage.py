"""Every rule's script: hand the job to the library (taskabs.pipeline.jobs), which tracks it in MLflow."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))  # noqa: F821

from taskabs.pipeline.jobs import run_snakemake_job  # noqa: E402

run_snakemake_job(snakemake)  # noqa: F821 (injected by Snakemake)
