#!/usr/bin/env bash
# Local Google Cloud Pub/Sub emulator.
#
#   infra/emulator.sh start    start it (once) and print `export PUBSUB_EMULATOR_HOST=...`
#   infra/emulator.sh stop     stop it; succeeds when it is not running
#   infra/emulator.sh status   print the export line and exit 0 if running, else exit 3
#   infra/emulator.sh run      run it in the foreground (used by pkg/testenv)
#
# Environment: PUBSUB_PORT (default: a free port), PUBQ_RUN_DIR (state; default
# <repo>/.run), PUBQ_START_TIMEOUT (seconds, default 60), PUBSUB_EMULATOR_BIN
# (default: the gcloud SDK's cloud-pubsub-emulator), JAVA_HOME.
# Only the export line goes to stdout; diagnostics go to stderr.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EMULATOR_BIN="${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}"
PID_FILE="$PUBQ_RUN_DIR/emulator.pid"
PORT_FILE="$PUBQ_RUN_DIR/emulator.port"
LOG_FILE="$PUBQ_RUN_DIR/emulator.log"
READY_TEXT="Server started, listening on"

usage() {
	echo "usage: $0 {start|stop|status|run}" >&2
	exit 2
}

check_installed() {
	[[ -x $EMULATOR_BIN ]] || die "Pub/Sub emulator not found at $EMULATOR_BIN
  install it with: apt-get install google-cloud-cli-pubsub-emulator (or gcloud components install pubsub-emulator),
  or point PUBSUB_EMULATOR_BIN at cloud-pubsub-emulator"
	if [[ -n ${JAVA_HOME:-} ]]; then
		[[ -x $JAVA_HOME/bin/java ]] || die "JAVA_HOME=$JAVA_HOME has no bin/java; the Pub/Sub emulator needs Java 11+"
	else
		command -v java >/dev/null 2>&1 || die "java not found in PATH; the Pub/Sub emulator needs Java 11+ (apt-get install default-jre-headless)"
	fi
}

export_line() { printf 'export PUBSUB_EMULATOR_HOST=127.0.0.1:%s\n' "$1"; }

# running: the recorded emulator is alive; sets pid and port.
running() {
	[[ -s $PID_FILE && -s $PORT_FILE ]] || return 1
	pid="$(<"$PID_FILE")"
	port="$(<"$PORT_FILE")"
	# Both the launcher and the java process it execs carry --port=P.
	pid_matches "$pid" "--port=$port"
}

cmd_run() {
	check_installed
	local port="${PUBSUB_PORT:-}"
	if [[ -z $port ]]; then
		port="$(free_port)"
		log "listening on 127.0.0.1:$port"
	fi
	valid_port "$port" PUBSUB_PORT
	write_pidfile
	# The launcher execs java, so this pid stays the server's.
	exec "$EMULATOR_BIN" --host=127.0.0.1 --port="$port"
}

# wait_ready PID PORT: 0 when ready, 2 when the port was taken, dies otherwise.
wait_ready() {
	local pid=$1 port=$2 deadline=$((SECONDS + PUBQ_START_TIMEOUT))
	while ((SECONDS < deadline)); do
		if grep -qF "$READY_TEXT $port" "$LOG_FILE" && port_open "$port"; then
			return 0
		fi
		# The emulator does not exit when it cannot bind: it hangs, so look
		# for the exception instead of waiting for the process to end.
		if grep -qE 'BindException|Address already in use' "$LOG_FILE"; then
			stop_pid "$pid" "" KILL
			return 2
		fi
		if ! pid_running "$pid"; then
			log_tail "$LOG_FILE"
			die "the Pub/Sub emulator exited before it was ready (log: $LOG_FILE)"
		fi
		sleep 0.1
	done
	stop_pid "$pid" "" KILL
	log_tail "$LOG_FILE"
	die "the Pub/Sub emulator was not ready after ${PUBQ_START_TIMEOUT}s (log: $LOG_FILE)"
}

cmd_start() {
	local pid port attempt attempts=3 rc
	mkdir -p "$PUBQ_RUN_DIR"
	if running; then
		log "already running (pid $pid, port $port)"
		export_line "$port"
		return 0
	fi
	rm -f "$PID_FILE" "$PORT_FILE"
	check_installed
	if [[ -n ${PUBSUB_PORT:-} ]]; then
		valid_port "$PUBSUB_PORT" PUBSUB_PORT
		! port_open "$PUBSUB_PORT" || die "PUBSUB_PORT=$PUBSUB_PORT: something already listens on 127.0.0.1:$PUBSUB_PORT"
		attempts=1
	fi
	for ((attempt = 1; attempt <= attempts; attempt++)); do
		port="${PUBSUB_PORT:-$(free_port)}"
		pid="$(PUBSUB_PORT="$port" launch "$PID_FILE" "$LOG_FILE" bash "$PUBQ_REPO_ROOT/infra/emulator.sh" run)"
		rc=0
		wait_ready "$pid" "$port" || rc=$?
		if ((rc == 0)); then
			printf '%s\n' "$port" >"$PORT_FILE"
			log "started (pid $pid, port $port, log $LOG_FILE)"
			export_line "$port"
			return 0
		fi
		log "port $port was taken before the emulator could bind it"
	done
	rm -f "$PID_FILE"
	log_tail "$LOG_FILE"
	die "the Pub/Sub emulator could not bind a port after $attempts attempts"
}

cmd_stop() {
	local pid port
	if running; then
		stop_pid "$pid" "--port=$port" TERM
		log "stopped (pid $pid)"
	else
		log "not running"
	fi
	rm -f "$PID_FILE" "$PORT_FILE"
}

cmd_status() {
	local pid port
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
