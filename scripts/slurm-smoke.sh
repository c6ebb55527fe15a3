#!/usr/bin/env bash
# Try the SLURM half of the pipeline on this machine, in one command:
#
#   scripts/slurm-smoke.sh          bring up a one-node SLURM cluster (scripts/local-slurm.sh) and a
#                                   PostgreSQL-backed MLflow server (scripts/tracking-server.sh), run
#                                   the smoke DAG through `--executor slurm` in a fresh copy of the
#                                   project, list the MLflow runs the jobs made, then take both down
#   KEEP=1 scripts/slurm-smoke.sh   the same, but leave both running to browse the runs in the
#                                   MLflow UI (the server's URI is printed); then:
#   scripts/slurm-smoke.sh down     stop both (also cancels any leftover job)
#
# The copy (${TASKABS_SLURM_SMOKE_DIR:-${TMPDIR:-/tmp}/taskabs-slurm-smoke}/project, replaced on each
# run) keeps your results/ and mlflow.db untouched and makes every run do the whole DAG. Its git
# commit is a snapshot of your working tree; its message names the commit it was taken from.
# Needs root and Debian (slurmd; apt-get installs slurm-wlm, munge, postgresql when missing); exit
# code 3 and the reason otherwise. State directories: TASKABS_SLURM_DIR, TASKABS_TRACKING_DIR (see
# the two scripts). Extra arguments go to snakemake (e.g. `--jobs 4`, `-n`).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="${VENV:-$REPO_ROOT/.venv}/bin"
WORK="${TASKABS_SLURM_SMOKE_DIR:-${TMPDIR:-/tmp}/taskabs-slurm-smoke}"
SLURM_SCRIPT="$REPO_ROOT/scripts/local-slurm.sh"
TRACKING_SCRIPT="$REPO_ROOT/scripts/tracking-server.sh"

log() { printf 'slurm-smoke: %s\n' "$*" >&2; }

down() {
  "$TRACKING_SCRIPT" down || true
  "$SLURM_SCRIPT" down || true
}

if [[ "${1:-}" == down ]]; then down; exit 0; fi
[[ -x "$VENV_BIN/snakemake" ]] || { log "no $VENV_BIN/snakemake: run \`make venv\` first"; exit 1; }

# Leave services alone that were running before us; stop the ones we start (also on errors, ^C).
started=()
cleanup() {
  local code=$?
  if [[ -n "${KEEP:-}" && $code -eq 0 ]]; then
    log "KEEP=1: still running; stop both with: $0 down"
    return
  fi
  local s
  for s in "${started[@]}"; do "$s" down || true; done
}
trap cleanup EXIT

run_up() {  # run_up SCRIPT: `SCRIPT up`, keeping its exit code 3 ("cannot run here")
  local out code=0
  out=$("$1" up) || code=$?
  ((code == 0)) || exit "$code"
  eval "$out"
}

if ! "$SLURM_SCRIPT" status >/dev/null 2>&1; then started+=("$SLURM_SCRIPT"); fi
run_up "$SLURM_SCRIPT"
if ! "$TRACKING_SCRIPT" status >/dev/null 2>&1; then started+=("$TRACKING_SCRIPT"); fi
log "starting the tracking server (20-40 s: mostly MLflow's imports)"
run_up "$TRACKING_SCRIPT"

# A fresh copy of the project as a clean clone would have it (tracked + unignored new files).
project="$WORK/project"
rm -rf "$project"
mkdir -p "$project"
while IFS= read -r -d '' f; do
  [[ -f "$REPO_ROOT/$f" ]] && (cd "$REPO_ROOT" && cp --parents -p -- "$f" "$project/")
done < <(git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard)
source_commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$project" init -q
git -C "$project" add -A
git -C "$project" -c user.name=slurm-smoke -c user.email=slurm-smoke@localhost \
  commit -q -m "slurm-smoke snapshot of $REPO_ROOT at $source_commit (with uncommitted changes)"

# The local cluster has no GPUs and no accounting database (see docs/cluster.md).
export TASKABS_SLURM_GPUS="${TASKABS_SLURM_GPUS:-0}"
export TASKABS_SLURM_STATUS_COMMAND="${TASKABS_SLURM_STATUS_COMMAND:-squeue}"
export TASKABS_SLURM_FIRST_CHECK="${TASKABS_SLURM_FIRST_CHECK:-6}"  # see docs/cluster.md, "Short jobs"
export PATH="$VENV_BIN:$PATH"
log "running the smoke DAG through SLURM in $project (MLflow: $MLFLOW_TRACKING_URI)"
started_at=$SECONDS
# extra arguments before --configfile, which takes several values
(cd "$project" && snakemake "$@" --workflow-profile profiles/slurm --configfile config/smoke.yaml)
log "done in $((SECONDS - started_at)) s"

# Where the record is: one parent run for the invocation, one child run per job.
(cd "$project" && python - <<'EOF'
import os
from mlflow.tracking import MlflowClient

uri = os.environ["MLFLOW_TRACKING_URI"]
client = MlflowClient(tracking_uri=uri)
experiment = client.get_experiment_by_name("task-abstraction")
runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=1000)
print(f"\n{len(runs)} MLflow runs in experiment {experiment.name!r} on {uri}:")
print(f"  {'status':<9} {'SLURM job':>9}  run")
for run in runs:
    print(f"  {run.info.status:<9} {run.data.tags.get('slurm_job_id', 'local'):>9}  {run.info.run_name}")
print(f"\nbrowse: {uri}/#/experiments/{experiment.experiment_id}")
EOF
)
echo "results:  $project/results"
echo "database: $(cat "${TASKABS_TRACKING_DIR:-${TMPDIR:-/tmp}/taskabs-tracking}/backend-uri" 2>/dev/null || echo '?')" \
  "(PostgreSQL; \`down\` keeps its files, the next \`up\` starts an empty one)"
