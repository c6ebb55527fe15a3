"""Representation geometry: PS, CCGP and shattering (config key ``geometry``; docs/experiments/geometry.md)."""
