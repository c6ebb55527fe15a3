"""How long Snakemake takes to plan a large geometry sweep: `snakemake -n` on 2,100 sweep jobs.

5 values of d x 5 activations x 3 depths x 4 widths x 7 weight decays = 2,100 cells (one job each),
the other experiments disabled.  Run from the repository root: python benchmarks/dag_scaling.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SWEEP = {
    "d": [2, 3, 4, 5, 6],
    "activations": ["relu", "tanh", "gelu", "leaky_relu", "sigmoid"],
    "depths": [1, 2, 3],
    "widths": [50, 100, 200, 400],
    "weight_decays": [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
}


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    config = {
        "sequence": {"enabled": False},
        "images": {"enabled": False},
        "gdln": {"enabled": False},
        "geometry": {"enabled": True, **SWEEP},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config, f)
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        "--workflow-profile",
        "profiles/default",
        "--configfile",
        f.name,
        "-n",
        "--quiet",
        "rules",
    ]
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    jobs = next(
        (line.split()[-1] for line in out.stdout.splitlines() if line.startswith("sweep_geometry")), "?"
    )
    print(f"snakemake -n on the sweep: {jobs} sweep_geometry jobs planned in {seconds:.1f} s")


if __name__ == "__main__":
    main()
