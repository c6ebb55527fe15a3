"""The GBI image experiment (config key ``images``; docs/experiments/images.md)."""
