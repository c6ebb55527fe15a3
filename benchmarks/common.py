"""Interleaved A/B timing: machines here are shared and noisy, so compare within one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(
    candidates: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of each callable, run in alternation so load drifts hit all alike."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(title: str, medians: dict[str, float], baseline: str) -> None:
    print(f"\n{title}")
    for name, seconds in medians.items():
        print(
            f"  {name:<34} {seconds * 1e3:9.2f} ms   ratio to {baseline}: {seconds / medians[baseline]:.3f}"
        )
