"""The GBI language-model experiment (config key ``language``; docs/experiments/language.md)."""
