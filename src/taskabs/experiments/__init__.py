"""One package per experiment, named by its config key; each exchanges only declared files.

An experiment package holds its stages (the only code that sees a Job), its private science, its
tables, figures and claims. No experiment imports another (tests/unit/test_layers.py).
"""
