"""How planning grows with the work: `snakemake -n` on geometry sweeps of 500 to 4,000 jobs.

Each sweep is 5 values of d x 5 activations x 4 widths x k weight decays (k = 5, 10, 20, 40) at
depth 1, the other experiments disabled; the sweep's analysis jobs come on top. For each size:
the jobs planned, wall seconds and peak memory of the dry run, and both per job, so a line that
is not flat shows growth faster than linear. Target: the 2,000-cell sweep planned in <= 5 s.

    python benchmarks/dag_scaling.py [--sizes 500 1000 2000 4000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CELLS_PER_DECAY = 5 * 5 * 4  # d x activations x widths

# Runs one dry run in a child and reports its wall time and the peak RSS of the snakemake process.
PROBE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - started
if out.returncode:
    sys.exit(out.stderr[-3000:])
jobs = next(int(l.split()[-1]) for l in out.stdout.splitlines() if l.startswith("total"))
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"jobs": jobs, "seconds": seconds, "peak_mb": peak}))
"""


def sweep_config(cells: int) -> dict:
    decays = max(1, round(cells / CELLS_PER_DECAY))
    return {
        "sequence": {"enabled": False},
        "images": {"enabled": False},
        "gdln": {"enabled": False},
        "language": {"enabled": False},
        "geometry": {
            "enabled": True,
            "d": [2, 3, 4, 5, 6],
            "activations": ["relu", "tanh", "gelu", "leaky_relu", "sigmoid"],
            "depths": [1],
            "widths": [50, 100, 200, 400],
            "weight_decays": [round(0.001 * i, 3) for i in range(decays)],
        },
    }


def plan(cells: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(sweep_config(cells), f)
    snakemake = [str(Path(sys.executable).parent / "snakemake"), "--workflow-profile", "profiles/default"]
    cmd = [*snakemake, "-n", "--quiet", "rules", "--configfile", "config/config.yaml", f.name]
    out = subprocess.run([sys.executable, "-c", PROBE, *cmd], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return {"cells": cells, **json.loads(out.stdout)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    args = parser.parse_args(argv)
    rows = [plan(cells) for cells in args.sizes]
    print("\nplanning at scale (snakemake -n)")
    print(f"  {'sweep cells':>11} {'jobs':>6} {'seconds':>8} {'peak MB':>8} {'ms/job':>7} {'kB/job':>7}")
    for r in rows:
        per_job_ms = 1e3 * r["seconds"] / r["jobs"]
        per_job_kb = 1024 * r["peak_mb"] / r["jobs"]
        print(
            f"  {r['cells']:>11} {r['jobs']:>6} {r['seconds']:>8.1f} {r['peak_mb']:>8.0f}"
            f" {per_job_ms:>7.2f} {per_job_kb:>7.1f}"
        )
    first, last = rows[0], rows[-1]
    growth = (last["seconds"] / first["seconds"]) / (last["jobs"] / first["jobs"])
    print(f"\n  time grows {growth:.2f}x as fast as the job count from the smallest to the largest sweep")
    if 2000 in args.sizes:
        at_2000 = next(r for r in rows if r["cells"] == 2000)
        print(f"  2,000-cell sweep: {at_2000['seconds']:.1f} s (target <= 5 s)")


if __name__ == "__main__":
    main()
