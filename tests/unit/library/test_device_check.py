"""The GPU device check runs here on the CPU: `auto` falls back to the CPU, two runs of one seed are
bit-identical, and it reports its cost ratios."""

import json
import subprocess
import sys

from conftest import ROOT


def test_device_check_runs_on_cpu_and_is_bit_identical(tmp_path):
    out = tmp_path / "device.json"
    subprocess.run(
        [sys.executable, "benchmarks/device_check.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    assert report["device"] == ("cuda" if report["cuda_visible"] else "cpu")
    assert report["train_bit_identical"] and report["gbi_bit_identical"]
    assert report["one_step_over_forward_backward"] > 0 and report["exhaustive_over_forward_backward"] > 0
