"""Per-job overhead: a no-op stage and a torch stage through the real job machinery, against the
interpreter's floor, as wall and CPU ratios taken in one interleaved run.

Each arm is a fresh process, as every Snakemake job is. The job arms import what Snakemake's
script preamble imports (``snakemake.script``) and ``taskabs.pipeline.jobs``, and run a stage
through ``run_job`` (seeding, the MLflow run with all its tags, inputs as datasets, the resolved
config, input verification, output hashing and artifacts), once with the SQLite store opened by
the job (``MlflowClient``: what every job paid before) and once over REST to the local tracking
server a local run starts (:mod:`taskabs.pipeline.local_server`). The floors are a bare
``python -c pass`` and ``python -c "import torch"``. Targets (what a job should cost): no-op job
<= 2x the bare interpreter, torch job <= 2x a bare torch import.

    python benchmarks/job_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = """
import sys
import snakemake.script  # what the preamble of every Snakemake script job imports
from pathlib import Path
from taskabs.pipeline.jobs import Job, run_job
work = Path(sys.argv[1])
out = work / "out.txt"
config = {{"tracking": {{"uri": f"sqlite:///{{work}}/mlflow.db", "experiment": "bench"}}, "device": "cpu"}}
def stage(job):
    {body}
    out.write_text("done")
    return {{"value": 1.0}}
run_job(Job(rule="bench_{name}", input={{}}, output={{"out": out}}, config={{"seed": 0}}), stage, config)
"""

SERVE = """
import sys
from taskabs.pipeline import local_server, tracking
config = {"tracking": {"uri": f"sqlite:///{sys.argv[1]}/mlflow.db", "experiment": "bench"}}
tracking.prepare(config)
print(local_server.start(config), flush=True)
sys.stdin.read()
"""


def measure(arms: dict[str, list[str]], envs: dict[str, dict], *, cwd: Path, repeats: int) -> dict:
    """Median wall and CPU seconds (the child's user + system) of each command, interleaved."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    for round_ in range(repeats + 1):  # the first round warms the file cache and is dropped
        for name, cmd in arms.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=cwd, env=envs[name])
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if round_:
                samples[name].append((wall, cpu))
    return {
        name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
        for name, s in samples.items()
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="job-overhead-"))
    python = sys.executable
    src = str(Path(__file__).resolve().parents[1] / "src")
    base_env = {"PYTHONPATH": src, "CI": "1", "PATH": str(Path(python).parent)}
    server = subprocess.Popen(
        [python, "-c", SERVE, str(work)],
        cwd=work,
        env=base_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = server.stdout.readline().strip()
    served_env = {**base_env, "MLFLOW_TRACKING_URI": url}
    noop, torch_job = (
        JOB.format(name="noop", body="pass"),
        JOB.format(name="torch", body="import torch; torch.ones(3).sum()"),
    )
    arms = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import torch'": [python, "-c", "import torch"],
        "no-op job, store opened by the job": [python, "-c", noop, str(work)],
        "no-op job, over REST": [python, "-c", noop, str(work)],
        "torch job, store opened by the job": [python, "-c", torch_job, str(work)],
        "torch job, over REST": [python, "-c", torch_job, str(work)],
    }
    envs = {name: served_env if "REST" in name else base_env for name in arms}
    try:
        results = measure(arms, envs, cwd=work, repeats=args.repeats)
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    floor, torch_floor = results["python -c pass"], results["python -c 'import torch'"]
    print("\nper-job overhead (medians of fresh processes; ratios to the floor in brackets)")
    print(f"  {'':<36} {'wall ms':>9} {'cpu ms':>9}")
    for name, (wall, cpu) in results.items():
        base = torch_floor if name.startswith(("torch job", "python -c 'import")) else floor
        print(
            f"  {name:<36} {wall * 1e3:9.1f} {cpu * 1e3:9.1f}"
            f"   [{wall / base[0]:.1f}x wall, {cpu / base[1]:.1f}x cpu]"
        )
    summary = {
        name: round(results[name][0] / (torch_floor if name.startswith("torch") else floor)[0], 2)
        for name in arms
        if "job" in name
    }
    print("\n  wall ratios (no-op: to python -c pass; torch: to import torch):", json.dumps(summary))
    print("  targets: <= 2x")


if __name__ == "__main__":
    main()
