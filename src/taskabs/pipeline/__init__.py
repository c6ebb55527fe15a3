"""The pipeline machinery: jobs, the stage registry, tracking, provenance, audit, scorecard, CLI.

It runs the experiments; the library (the rest of :mod:`taskabs`) never imports it.
"""
