"""taskabs: a reproducibility pipeline for task-abstraction research (GBI, PS/CCGP, GDLN)."""

__version__ = "0.1.0"
