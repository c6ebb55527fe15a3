"""Which device a job runs on, and the settings that make its kernels deterministic there."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# cuBLAS is deterministic only with a fixed workspace; it must be set before CUDA starts.
CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA if visible, then Apple MPS, then CPU; anything else is forced."""
    import torch  # here, not at the top: the Snakefile's imports must not pay for torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config device={requested!r} but no CUDA device is visible")
    return device


def make_deterministic() -> None:
    """Deterministic kernels on CPU and CUDA (warn, not fail, where an op has none)."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = False
    # torch.use_deterministic_algorithms without its import of torch._inductor.config (1-3 s)
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1"
