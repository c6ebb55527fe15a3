"""Gated deep linear networks and the neural race (config key ``gdln``; docs/experiments/gdln.md)."""
