"""Per-job overhead: a no-op stage and a torch stage through the real job machinery, against the
interpreter's floor, as ratios taken in one interleaved run.

Each arm is a fresh process, as every Snakemake job is. The job arms import
``taskabs.pipeline.jobs`` and run a stage through ``run_job`` (seeding, the MLflow run with all
its tags, input verification, output hashing and artifacts) against a fresh SQLite store; the
floors are a bare ``python -c pass`` and ``python -c "import torch"``. Targets (what a
job should cost): no-op job <= 2x the bare interpreter, torch job <= 2x a bare torch import.

    python benchmarks/job_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import interleaved, report

JOB = """
import sys
from pathlib import Path
from taskabs.pipeline.jobs import Job, run_job
from taskabs.pipeline import tracking
work = Path(sys.argv[1])
out = work / "out.txt"
config = {{"tracking": {{"uri": f"sqlite:///{{work}}/mlflow.db", "experiment": "bench"}}, "device": "cpu"}}
def stage(job):
    {body}
    out.write_text("done")
    return {{"value": 1.0}}
run_job(Job(rule="bench_{name}", input={{}}, output={{"out": out}}, config={{"seed": 0}}), stage, config)
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="job-overhead-"))
    python = sys.executable
    src = str(Path(__file__).resolve().parents[1] / "src")
    scripts = {
        "noop": JOB.format(name="noop", body="pass"),
        "torch": JOB.format(name="torch", body="import torch; torch.ones(3).sum()"),
    }
    # the store is created once, as the pipeline's parent run does before any job
    subprocess.run(
        [
            python,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[2]); "
            "from taskabs.pipeline import tracking; "
            "uri = f'sqlite:///{sys.argv[1]}/mlflow.db'; "
            "tracking.prepare({'tracking': {'uri': uri, 'experiment': 'bench'}})",
            str(work),
            src,
        ],
        check=False,
    )

    def run(code: str):
        return lambda: subprocess.run(
            [python, "-c", code, str(work)], check=True, env={"PYTHONPATH": src, "CI": "1"}
        )

    medians = interleaved(
        {
            "python -c pass": run("pass"),
            "python -c 'import torch'": run("import torch"),
            "no-op job (run_job)": run(scripts["noop"]),
            "torch job (run_job)": run(scripts["torch"]),
        },
        repeats=args.repeats,
    )
    report("per-job overhead (median wall seconds of a fresh process)", medians, "python -c pass")
    noop = medians["no-op job (run_job)"] / medians["python -c pass"]
    torch_job = medians["torch job (run_job)"] / medians["python -c 'import torch'"]
    print(f"\n  no-op job / bare interpreter: {noop:.1f}x   torch job / bare torch import: {torch_job:.1f}x")


if __name__ == "__main__":
    main()
