# Two commands: `make reproduce` (the whole pipeline, quick default) and `make test`.
# Both create the virtual environment with pinned dependencies first if it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV ?= .venv
PYTHON ?= python3
CONFIG ?= config/config.yaml
PROFILE ?= profiles/default
# pytest-xdist workers for `make test` (whole modules per worker: tests/conftest.py)
TEST_WORKERS ?= 2
BIN := $(VENV)/bin
# ALLOW_MISSING=1: run without the parts whose system packages are missing (their claims: not run)
ALLOW_MISSING ?=
MISSING_OVERLAY := .taskabs/missing-packages.yaml
RUN_CONFIG = $(CONFIG) $(if $(ALLOW_MISSING),$(MISSING_OVERLAY))
# the Workflow Run RO-Crate of the results (taskabs.pipeline.rocrate), versioned with them by DVC
CRATE := results/ro-crate-metadata.json
SNAKEMAKE = $(BIN)/snakemake --workflow-profile $(PROFILE) --configfile $(RUN_CONFIG)

.PHONY: venv data-deps system-deps reproduce pull smoke audit test lint bench slurm-smoke

# Debian packages. Data of the quick default: Fashion-MNIST (OOD set) and the language corpora
# (quotations, man pages, C headers, Python sources): `make reproduce` installs them when root with
# apt-get, and otherwise stops before any job naming what is missing (taskabs.pipeline.preflight).
# For the tests also SLURM + munge (local cluster), PostgreSQL (tracking server) and Chromium (the
# report's browser test); without them those tests skip with the reason.
DATA_PACKAGES := dataset-fashion-mnist fortunes fortunes-min manpages manpages-dev libc6-dev libpython3.11-stdlib
TEST_PACKAGES := slurm-wlm munge postgresql chromium
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	fi

# Every package from requirements.lock with hash checking, torch with the rest: its hash is the
# CPU wheel's, so pip takes that file or stops (never a CUDA build and its packages).
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

data-deps:
	@$(call apt_install,$(DATA_PACKAGES))

system-deps:
	@$(call apt_install,$(DATA_PACKAGES) $(TEST_PACKAGES))
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "system-deps: not root or no apt-get; install $(DATA_PACKAGES) $(TEST_PACKAGES) yourself" >&2; fi

## reproduce: run the whole DAG on $(CONFIG), build results/report.html, record results in DVC
# Fetched or gathered data that fails its pin stops the run (a storage fault to know of, repaired
# by `taskabs verify --repair`); a job's output that fails its record is set aside and re-made.
reproduce: venv data-deps
	$(BIN)/python -m taskabs.pipeline.preflight --configfile $(CONFIG) $(if $(ALLOW_MISSING),--allow-missing $(MISSING_OVERLAY))
	$(BIN)/taskabs check-config config/config.yaml $(CONFIG)
	$(BIN)/taskabs unlock-stale
	$(BIN)/taskabs verify --pinned-only $(foreach f,$(CONFIG),--configfile $(f))
	$(BIN)/taskabs verify --repair $(foreach f,$(CONFIG),--configfile $(f))
	$(SNAKEMAKE)
	@if [ ! -f results/report.html ] || [ -n "$$(find results -type f -newer results/report.html -print -quit)" ]; then \
		$(SNAKEMAKE) --report results/report.html; fi
	$(BIN)/taskabs verify $(foreach f,$(CONFIG),--configfile $(f))
	@# the crate after the first commit, so the audit it records sees a complete dvc.lock; then
	@# a second commit versions the crate itself
	@versioned=; if ! $(BIN)/dvc status --quiet; then $(BIN)/dvc commit --force --quiet; versioned=1; fi; \
	if [ ! -f $(CRATE) ] || [ -n "$$(find results data -type f -newer $(CRATE) -print -quit)" ]; then \
		$(BIN)/taskabs rocrate $(foreach f,$(CONFIG),--configfile $(f)); $(BIN)/dvc commit --force --quiet; versioned=1; fi; \
	if [ -n "$$versioned" ]; then $(BIN)/dvc push --quiet; $(BIN)/taskabs settle-times data results logs >/dev/null; fi
	@echo "report: results/report.html   runs: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

## pull: restore data/ and results/ of the committed dvc.lock from the DVC remote (nothing to re-run)
# `--touch --forceall` records Snakemake's metadata (params, code, inputs) of every pulled output
# against the checked-out code and config, so later edits re-run exactly what they affect; then
# one file time for all, because touching and DVC leave times in no useful order.
pull: venv
	$(BIN)/dvc pull
	$(SNAKEMAKE) --touch --forceall --quiet
	$(BIN)/taskabs settle-times data results logs

## audit: check every result against its MLflow run, git, dvc.lock and the config
audit: venv
	$(BIN)/taskabs audit $(foreach f,$(CONFIG),--configfile $(f))

## smoke: the same on the smoke config (seconds)
smoke: CONFIG = config/smoke.yaml
smoke: reproduce

## test: the test suite (unit tests and end-to-end runs of Snakemake, DVC and MLflow)
test: venv system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

## lint: ruff (format and lint) on the Python, snakefmt on the rules, snakemake's own --lint
PY_SOURCES := src tests benchmarks workflow/scripts
lint: venv
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile config/smoke.yaml

## slurm-smoke: the smoke DAG through a single-node SLURM cluster on this machine (root, Debian)
slurm-smoke: venv system-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/slurm-smoke.sh

## bench: performance ratios measured in one run each (per-job overhead, tracking, GBI cost,
## planning at scale, and last a fresh-clone `make reproduce` against its compute floor, ~12 min)
bench: venv
	cd benchmarks && ../$(BIN)/python job_overhead.py
	cd benchmarks && ../$(BIN)/python tracking_overhead.py
	cd benchmarks && ../$(BIN)/python gbi_cost.py
	cd benchmarks && ../$(BIN)/python image_gbi_cost.py
	$(BIN)/python benchmarks/dag_scaling.py
	$(BIN)/python benchmarks/reproduce_floor.py
