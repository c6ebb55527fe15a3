"""Representation geometry: PS, CCGP, shattering (config key ``geometry``; docs/experiments/geometry.md)."""
