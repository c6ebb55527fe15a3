#!/usr/bin/env bash
# shellcheck disable=SC2015  # `a && b || c` here means "if a and b succeed, else c"
# An MLflow tracking server backed by PostgreSQL, for runs that many jobs (SLURM or local)
# log to at once. Never SQLite on a shared file system.
#
#   scripts/tracking-server.sh up          initdb + postgres on 127.0.0.1, `mlflow server` on
#                                          127.0.0.1; prints `export MLFLOW_TRACKING_URI=...`
#   scripts/tracking-server.sh down        stop mlflow and postgres (idempotent)
#   scripts/tracking-server.sh status      exit 0 if the server answers, 1 otherwise
#   scripts/tracking-server.sh check URI   exit 0 if URI answers /health within
#                                          TASKABS_TRACKING_CHECK_TIMEOUT s (default 5), else 1
#   scripts/tracking-server.sh uri         print the URI of the running server
# While up, $TASKABS_TRACKING_DIR/backend-uri holds the PostgreSQL URI with its password (for
# audits and tests), readable by its owner only.
#
# State (database cluster, artifacts, logs, credentials) lives in one private directory, owned by
# the caller and closed to other users (checked on every start):
#   TASKABS_TRACKING_DIR  (default: ${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/taskabs-tracking-<uid>)
# Other knobs: TASKABS_PG_PORT (first port to try, default 15432), TASKABS_MLFLOW_PORT
# (default 15000), TASKABS_MLFLOW_HOST (default 127.0.0.1; on a cluster, an internal
# interface of the login node: the server has no authentication), TASKABS_TRACKING_TIMEOUT
# (start-up, s, default 120), MLFLOW (the mlflow executable; default: the repo's .venv, then
# PATH; its environment needs psycopg2-binary).
#
# PostgreSQL comes from Debian's `postgresql` package (installed with apt-get if missing and
# root). Exit code 3 means "cannot run here"; the reason is on stderr.
# Database access: scram-sha-256 passwords on 127.0.0.1 (no trust); MLflow connects as the role
# `mlflow`, which owns its database and nothing else (no superuser, no CREATEDB, no CREATEROLE).
# The passwords are random per `up`, in files only the owner can read. For user accounts on the
# MLflow server itself, start it with MLflow's basic-auth app (docs/cluster.md).
set -euo pipefail
umask 077

STATE="${TASKABS_TRACKING_DIR:-${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/taskabs-tracking-$(id -u)}"
PGDATA_DIR="$STATE/pg"
SOCK_DIR="$STATE/pgsock"
LOG_DIR="$STATE/log"
MLFLOW_PIDFILE="$STATE/mlflow.pid"
URI_FILE="$STATE/uri"
BACKEND_FILE="$STATE/backend-uri"
ADMIN_PW_FILE="$STATE/admin-password"  # the cluster's bootstrap superuser (initdb only)
DB_ADMIN=taskabs_admin
TIMEOUT="${TASKABS_TRACKING_TIMEOUT:-120}"
DB_USER=mlflow
DB_NAME=mlflow
# Every process we start carries this in its environment: `down` finds leftovers by it.
MARK_VAR=TASKABS_TRACKING
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'tracking-server: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
unsupported() { log "unsupported here: $*"; exit 3; }

pid_of() { [[ -s "$1" ]] && head -n 1 "$1" | tr -dc '0-9' || true; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p=$1
  while port_in_use "$p"; do p=$((p + 1)); done
  echo "$p"
}
marked_pids() {
  grep -lzxF "$MARK_VAR=$STATE" /proc/[0-9]*/environ 2>/dev/null |
    sed -n 's|^/proc/\([0-9]*\)/environ$|\1|p' | grep -vx "$$" || true
}
# Is PID alive and started by us? (A stale pid file may name a reused PID.)
pid_ours() { [[ -n "${1:-}" ]] && grep -qzxF "$MARK_VAR=$STATE" "/proc/$1/environ" 2>/dev/null; }

# Run a PostgreSQL tool as the database owner: `postgres` when we are root (initdb refuses
# root), ourselves otherwise.
as_db_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- env "$MARK_VAR=$STATE" "$@"
  else
    env "$MARK_VAR=$STATE" "$@"
  fi
}

pg_bindir() {
  local d
  # shellcheck disable=SC2012  # version directories: plain names
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; return; fi
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

ensure_postgres() {
  [[ -n "$(pg_bindir)" ]] && return 0
  [[ $(id -u) -eq 0 ]] || unsupported "PostgreSQL (initdb) not installed and not root to apt-get install it"
  [[ -f /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1 ||
    unsupported "PostgreSQL not installed and this is not Debian (no apt-get)"
  log "installing postgresql with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends postgresql >"$STATE/apt.log" 2>&1 || {
    apt-get update >>"$STATE/apt.log" 2>&1 &&
      apt-get install -y --no-install-recommends postgresql >>"$STATE/apt.log" 2>&1
  } || { tail -n 20 "$STATE/apt.log" >&2; die "apt-get install postgresql failed"; }
  [[ -n "$(pg_bindir)" ]] || die "postgresql installed but initdb not found"
}

find_mlflow() {
  if [[ -n "${MLFLOW:-}" ]]; then echo "$MLFLOW"
  elif [[ -x "$REPO_ROOT/.venv/bin/mlflow" ]]; then echo "$REPO_ROOT/.venv/bin/mlflow"
  elif command -v mlflow >/dev/null 2>&1; then command -v mlflow
  else unsupported "mlflow not found (set MLFLOW or create the repo's .venv)"
  fi
}

# check URI: does an MLflow server answer /health quickly?
do_check() {
  local uri="${1:?usage: check URI}" t="${TASKABS_TRACKING_CHECK_TIMEOUT:-5}" out
  case "$uri" in
    http://* | https://*) ;;
    *) log "not an HTTP tracking URI: $uri (file/sqlite stores need no server)"; return 1 ;;
  esac
  if command -v curl >/dev/null 2>&1; then
    if out=$(curl -sS --max-time "$t" --connect-timeout "$t" "${uri%/}/health" 2>&1) &&
      [[ "$out" == OK* ]]; then
      echo "tracking server at $uri is up"
      return 0
    fi
  else
    # No curl: a plain HTTP/1.0 request over bash's /dev/tcp (http only).
    local hostport="${uri#http://}"; hostport="${hostport%%/*}"
    local host="${hostport%%:*}" port="${hostport##*:}"
    [[ "$port" == "$host" ]] && port=80
    # shellcheck disable=SC2016  # expanded by the inner bash
    if out=$(timeout "$t" bash -c 'exec 3<>"/dev/tcp/$0/$1" &&
        printf "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n" "$0" >&3 && cat <&3' "$host" "$port" 2>&1) &&
      [[ "$out" == *$'\r\n\r\nOK'* ]]; then
      echo "tracking server at $uri is up"
      return 0
    fi
  fi
  log "tracking server at $uri is not reachable (no OK from /health within ${t}s): ${out:-no answer}"
  return 1
}

show_log_tails() {
  local f
  for f in "$LOG_DIR/postgres.log" "$LOG_DIR/mlflow.log"; do
    [[ -f "$f" ]] || continue
    printf '\n----- last lines of %s -----\n' "$f" >&2
    tail -n 25 "$f" >&2
  done
}

fail_up() {
  log "error: $*"
  show_log_tails
  do_down >/dev/null 2>&1 || true
  exit 1
}

# The state directory must be ours and closed to others: a predictable path in a shared /tmp
# could otherwise be prepared by another user.
private_state() {
  if [[ -e "$STATE" || -L "$STATE" ]]; then
    [[ -d "$STATE" && ! -L "$STATE" ]] || die "$STATE exists and is not a directory"
    [[ $(stat -c %u "$STATE") -eq $(id -u) ]] ||
      die "$STATE belongs to uid $(stat -c %u "$STATE"), not to you: set TASKABS_TRACKING_DIR"
    (( (8#$(stat -c %a "$STATE") & 8#022) == 0 )) ||
      die "$STATE is writable by other users (mode $(stat -c %a "$STATE")): remove it or set TASKABS_TRACKING_DIR"
  else
    mkdir -m 0700 -p "$STATE"
  fi
}

random_password() { head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32; }

do_up() {
  private_state
  ensure_postgres
  local mlflow bindir
  mlflow=$(find_mlflow)
  bindir=$(pg_bindir)
  if [[ -s "$URI_FILE" ]] && pid_ours "$(pid_of "$MLFLOW_PIDFILE")" &&
    do_check "$(cat "$URI_FILE")" >/dev/null 2>&1; then
    log "already running (state dir $STATE)"
    echo "export MLFLOW_TRACKING_URI=$(cat "$URI_FILE")"
    return 0
  fi
  do_down >/dev/null 2>&1 || true

  rm -rf "$PGDATA_DIR" "$SOCK_DIR" "$LOG_DIR" "$URI_FILE" "$BACKEND_FILE"
  mkdir -p "$STATE/artifacts" "$LOG_DIR" "$SOCK_DIR" "$PGDATA_DIR"
  # others may traverse (postgres, when we are root) but neither list nor write
  chmod 0711 "$STATE" "$LOG_DIR"
  chmod 0700 "$PGDATA_DIR" "$STATE/artifacts"
  local admin_pw db_pw
  admin_pw=$(random_password)
  db_pw=$(random_password)
  printf '%s\n' "$admin_pw" >"$ADMIN_PW_FILE"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$PGDATA_DIR" "$SOCK_DIR" "$ADMIN_PW_FILE"
    touch "$LOG_DIR/postgres.log" && chown postgres: "$LOG_DIR/postgres.log"
    runuser -u postgres -- test -w "$PGDATA_DIR" ||
      die "user postgres cannot reach $PGDATA_DIR: set TASKABS_TRACKING_DIR under a world-traversable directory"
  fi

  local pg_port ml_port host
  pg_port=$(free_port "${TASKABS_PG_PORT:-15432}")
  ml_port=$(free_port "${TASKABS_MLFLOW_PORT:-15000}")
  host="${TASKABS_MLFLOW_HOST:-127.0.0.1}"

  # --no-sync: `up` always starts from a fresh cluster, so a crash during initdb costs nothing.
  as_db_owner "$bindir/initdb" -D "$PGDATA_DIR" -U "$DB_ADMIN" --pwfile="$ADMIN_PW_FILE" \
    -A scram-sha-256 -E UTF8 --no-sync --no-instructions >"$LOG_DIR/initdb.log" 2>&1 || {
    tail -n 20 "$LOG_DIR/initdb.log" >&2; fail_up "initdb failed"; }
  as_db_owner "$bindir/pg_ctl" -D "$PGDATA_DIR" -l "$LOG_DIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $SOCK_DIR" start >/dev/null ||
    fail_up "postgres did not start"
  # passwords through the environment and stdin, never on a command line (ps shows those)
  PGPASSWORD="$admin_pw" as_db_owner "$bindir/psql" -h 127.0.0.1 -p "$pg_port" -U "$DB_ADMIN" \
    -d postgres -v ON_ERROR_STOP=1 -q >/dev/null <<SQL ||
CREATE ROLE $DB_USER LOGIN PASSWORD '$db_pw' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE $DB_NAME OWNER $DB_USER;
SQL
    fail_up "creating the role $DB_USER and database $DB_NAME failed"

  # setsid: mlflow's workers share its process group, so `down` can stop them together.
  # No server-side job runner (GenAI evaluation jobs; 8 extra processes, slow start on 2 cores).
  local backend="postgresql://$DB_USER:$db_pw@127.0.0.1:$pg_port/$DB_NAME"
  echo "$backend" >"$BACKEND_FILE"
  setsid env "$MARK_VAR=$STATE" \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    "$mlflow" server \
    --backend-store-uri "$backend" \
    --artifacts-destination "$STATE/artifacts" \
    --host "$host" --port "$ml_port" --workers 1 \
    </dev/null >"$LOG_DIR/mlflow.log" 2>&1 &
  echo $! >"$MLFLOW_PIDFILE"

  # Jobs on other nodes need a name they can resolve when binding to every interface.
  local uri="http://$host:$ml_port" deadline
  [[ "$host" == 0.0.0.0 ]] && uri="http://$(hostname -f):$ml_port"
  deadline=$((SECONDS + TIMEOUT))
  until TASKABS_TRACKING_CHECK_TIMEOUT=2 do_check "http://127.0.0.1:$ml_port" >/dev/null 2>&1 ||
    TASKABS_TRACKING_CHECK_TIMEOUT=2 do_check "$uri" >/dev/null 2>&1; do
    pid_ours "$(pid_of "$MLFLOW_PIDFILE")" || fail_up "mlflow server exited during start-up"
    ((SECONDS < deadline)) || fail_up "mlflow server not answering after ${TIMEOUT}s"
    sleep 0.5
  done
  echo "$uri" >"$URI_FILE"
  log "up: $uri (postgres on 127.0.0.1:$pg_port, state dir $STATE)"
  echo "export MLFLOW_TRACKING_URI=$uri"
}

# stop_pids PID...: SIGTERM all, wait up to 15 s, then SIGKILL what is left.
stop_pids() {
  local pid left=() still
  for pid in "$@"; do pid_ours "$pid" && left+=("$pid"); done
  ((${#left[@]})) || return 0
  kill -TERM "${left[@]}" 2>/dev/null || true
  for _ in $(seq 1 150); do
    still=()
    for pid in "${left[@]}"; do pid_ours "$pid" && still+=("$pid"); done
    ((${#still[@]})) || return 0
    left=("${still[@]}")
    sleep 0.1
  done
  log "killing processes that ignored SIGTERM for 15 s: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

do_down() {
  [[ -d "$STATE" ]] || { log "not running (no state dir $STATE)"; return 0; }
  local ml_pid bindir
  ml_pid=$(pid_of "$MLFLOW_PIDFILE")
  if pid_ours "$ml_pid"; then
    kill -TERM -- "-$ml_pid" 2>/dev/null || kill -TERM "$ml_pid" 2>/dev/null || true
  fi
  bindir=$(pg_bindir)
  if [[ -n "$bindir" && -f "$PGDATA_DIR/postmaster.pid" ]]; then
    as_db_owner "$bindir/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  fi
  # mlflow workers, a postmaster that did not stop, anything else we started.
  # shellcheck disable=SC2046
  stop_pids ${ml_pid:+"$ml_pid"} $(marked_pids)
  rm -f "$MLFLOW_PIDFILE" "$URI_FILE" "$BACKEND_FILE"
  log "down (state dir $STATE kept for its logs and artifacts)"
}

do_status() {
  [[ -s "$URI_FILE" ]] || { echo "not running"; return 1; }
  do_check "$(cat "$URI_FILE")"
}

case "${1:-}" in
  up) do_up ;;
  down) do_down ;;
  status) do_status ;;
  check) shift; do_check "${1:-}" ;;
  uri) [[ -s "$URI_FILE" ]] && cat "$URI_FILE" || { log "not running"; exit 1; } ;;
  *) echo "usage: $0 up|down|status|check URI|uri" >&2; exit 2 ;;
esac
