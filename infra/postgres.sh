#!/usr/bin/env bash
# Throwaway local PostgreSQL 15 cluster (trust auth, fsync off, TCP on 127.0.0.1 only).
#
#   infra/postgres.sh start    init and start it (once) and print `export PUBQ_DATABASE_URL=...`
#   infra/postgres.sh stop     stop it and delete its data; succeeds when it is not running
#   infra/postgres.sh status   print the export line and exit 0 if running, else exit 3
#   infra/postgres.sh run      init and run it in the foreground (used by pkg/testenv)
#
# Environment: PG_PORT (default: a free port), PUBQ_RUN_DIR (state; default
# <repo>/.run), PUBQ_START_TIMEOUT (seconds, default 60), PG_BIN (default
# /usr/lib/postgresql/15/bin). Only the export line goes to stdout.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PID_FILE="$PUBQ_RUN_DIR/pg.pid"
PORT_FILE="$PUBQ_RUN_DIR/pg.port"
LOG_FILE="$PUBQ_RUN_DIR/pg.log"
# Holds the cluster's directory, which is not always under the run dir.
DIR_FILE="$PUBQ_RUN_DIR/pg.dir"

usage() {
	echo "usage: $0 {start|stop|status|run}" >&2
	exit 2
}

check_installed() {
	local b
	for b in initdb postgres pg_isready; do
		[[ -x $PG_BIN/$b ]] || die "$PG_BIN/$b not found; install PostgreSQL 15 (apt-get install postgresql-15) or set PG_BIN"
	done
	if ((EUID == 0)); then
		# initdb and postgres refuse to run as root.
		id -u postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run the server as"
		local tool
		for tool in runuser setpriv; do
			command -v "$tool" >/dev/null 2>&1 || die "running as root needs $tool (util-linux) to switch to the postgres user"
		done
	fi
}

# as_pg CMD...: runs CMD as the postgres user when we are root.
as_pg() {
	if ((EUID == 0)); then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

export_line() {
	printf 'export PUBQ_DATABASE_URL=postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable\n' "$1"
}

# cluster_dir: creates the directory for the cluster and prints it. As root the
# server runs as postgres, which must be able to reach it: a run dir under a
# root-only directory (0700 home, mktemp dir) is not, so fall back to /tmp.
cluster_dir() {
	local dir="$PUBQ_RUN_DIR/pg"
	mkdir -p "$dir"
	if ((EUID == 0)); then
		chown postgres:postgres "$dir"
		if ! runuser -u postgres -- test -w "$dir" -a -x "$dir"; then
			rmdir "$dir" 2>/dev/null || true
			dir="$(mktemp -d /tmp/pubq-pg.XXXXXX)"
			chown postgres:postgres "$dir"
			log "$PUBQ_RUN_DIR is not reachable by the postgres user; the cluster lives in $dir"
		fi
	fi
	printf '%s\n' "$dir" >"$DIR_FILE"
	printf '%s\n' "$dir"
}

# init_cluster DIR: initdb into DIR/data unless a cluster is already there.
init_cluster() {
	[[ -f $1/data/PG_VERSION ]] && return 0
	as_pg "$PG_BIN/initdb" -D "$1/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >&2 ||
		die "initdb into $1/data failed"
}

# running: the recorded server is alive; sets pid, port and dir.
running() {
	[[ -s $PID_FILE && -s $PORT_FILE && -s $DIR_FILE ]] || return 1
	pid="$(<"$PID_FILE")"
	port="$(<"$PORT_FILE")"
	dir="$(<"$DIR_FILE")"
	pid_matches "$pid" "$dir/data"
}

cmd_run() {
	local dir port="${PG_PORT:-}"
	check_installed
	mkdir -p "$PUBQ_RUN_DIR"
	dir="$(cluster_dir)"
	init_cluster "$dir"
	if [[ -z $port ]]; then
		port="$(free_port)"
		log "listening on 127.0.0.1:$port"
	fi
	valid_port "$port" PG_PORT
	# Durability is pointless for a throwaway cluster; no Unix socket, so
	# nothing is written outside the cluster's directory.
	local args=(-D "$dir/data" -p "$port" -k ""
		-c listen_addresses=127.0.0.1 -c max_connections=300
		-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
	# PUBQ_PG_ARGS: extra server arguments, e.g. "-c shared_preload_libraries=pg_stat_statements".
	if [[ -n ${PUBQ_PG_ARGS:-} ]]; then
		local extra
		read -r -a extra <<<"$PUBQ_PG_ARGS"
		args+=("${extra[@]}")
	fi
	write_pidfile
	if ((EUID == 0)); then
		# setpriv execs (runuser forks), so the pid stays the server's, and it
		# keeps a parent-death signal set by the caller across the uid change.
		exec setpriv --reuid=postgres --regid=postgres --init-groups --pdeathsig=keep -- "$PG_BIN/postgres" "${args[@]}"
	fi
	exec "$PG_BIN/postgres" "${args[@]}"
}

# wait_ready PID PORT: 0 when ready, 2 when the port was taken, dies otherwise.
wait_ready() {
	local pid=$1 port=$2 deadline=$((SECONDS + PUBQ_START_TIMEOUT))
	while ((SECONDS < deadline)); do
		if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -t 1; then
			return 0
		fi
		if ! pid_running "$pid"; then
			if grep -qF 'Address already in use' "$LOG_FILE"; then
				return 2
			fi
			log_tail "$LOG_FILE"
			die "PostgreSQL exited before it was ready (log: $LOG_FILE)"
		fi
		sleep 0.1
	done
	stop_pid "$pid" "" KILL
	log_tail "$LOG_FILE"
	die "PostgreSQL was not ready after ${PUBQ_START_TIMEOUT}s (log: $LOG_FILE)"
}

remove_cluster() {
	local dir
	[[ -s $DIR_FILE ]] || return 0
	dir="$(<"$DIR_FILE")"
	rm -rf "$dir"
	rm -f "$DIR_FILE"
}

cmd_start() {
	local pid port dir attempt attempts=3 rc
	mkdir -p "$PUBQ_RUN_DIR"
	if running; then
		log "already running (pid $pid, port $port)"
		export_line "$port"
		return 0
	fi
	check_installed
	if [[ -n ${PG_PORT:-} ]]; then
		valid_port "$PG_PORT" PG_PORT
		! port_open "$PG_PORT" || die "PG_PORT=$PG_PORT: something already listens on 127.0.0.1:$PG_PORT"
		attempts=1
	fi
	# A stale cluster from a crashed run is thrown away, not reused.
	remove_cluster
	rm -f "$PID_FILE" "$PORT_FILE"
	for ((attempt = 1; attempt <= attempts; attempt++)); do
		port="${PG_PORT:-$(free_port)}"
		pid="$(PG_PORT="$port" launch "$PID_FILE" "$LOG_FILE" bash "$PUBQ_REPO_ROOT/infra/postgres.sh" run)"
		rc=0
		wait_ready "$pid" "$port" || rc=$?
		if ((rc == 0)); then
			printf '%s\n' "$port" >"$PORT_FILE"
			log "started (pid $pid, port $port, data $(<"$DIR_FILE")/data, log $LOG_FILE)"
			export_line "$port"
			return 0
		fi
		log "port $port was taken before PostgreSQL could bind it"
	done
	rm -f "$PID_FILE"
	log_tail "$LOG_FILE"
	die "PostgreSQL could not bind a port after $attempts attempts"
}

cmd_stop() {
	local pid port dir
	if running; then
		# SIGINT is PostgreSQL's fast shutdown: abort sessions, then exit.
		stop_pid "$pid" "$dir/data" INT
		log "stopped (pid $pid)"
	else
		log "not running"
	fi
	remove_cluster
	rm -f "$PID_FILE" "$PORT_FILE"
}

cmd_status() {
	local pid port dir
	if running; then
		log "running (pid $pid, port $port)"
		export_line "$port"
		return 0
	fi
	log "not running"
	return 3
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
run) cmd_run ;;
*) usage ;;
esac
