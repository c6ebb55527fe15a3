"""The GBI toy-sequence experiment (config key ``sequence``; docs/experiments/sequence.md)."""
