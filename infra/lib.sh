# shellcheck shell=bash
# Helpers shared by infra/emulator.sh, infra/postgres.sh and infra/stack.sh.
# Sourced, never run: it only defines variables and functions.

PUBQ_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PUBQ_RUN_DIR="${PUBQ_RUN_DIR:-$PUBQ_REPO_ROOT/.run}"
# The machines are shared and busy: the emulator starts in ~1.3 s when idle,
# but much later under load, so the default is generous.
PUBQ_START_TIMEOUT="${PUBQ_START_TIMEOUT:-60}"
PUBQ_SCRIPT="${PUBQ_SCRIPT:-$(basename "$0")}"

log() { printf '%s: %s\n' "$PUBQ_SCRIPT" "$*" >&2; }

die() {
	log "error: $*"
	exit 1
}

# log_tail FILE: the last lines of a server log, indented, on stderr.
log_tail() {
	[[ -s $1 ]] || return 0
	printf '%s: last lines of %s:\n' "$PUBQ_SCRIPT" "$1" >&2
	tail -n 25 "$1" | sed 's/^/  | /' >&2
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
# Another process can still take it before we bind, so callers retry on a
# bind failure when they picked the port themselves.
free_port() {
	local port i
	if command -v python3 >/dev/null 2>&1 &&
		port="$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null)" && [[ $port =~ ^[0-9]+$ ]]; then
		printf '%s\n' "$port"
		return 0
	fi
	# No python3: probe random ports below the kernel's ephemeral range.
	for ((i = 0; i < 200; i++)); do
		port=$((20000 + RANDOM % 12000))
		if ! port_open "$port"; then
			printf '%s\n' "$port"
			return 0
		fi
	done
	die "no free TCP port found on 127.0.0.1"
}

# valid_port VALUE NAME: dies unless VALUE is a TCP port number.
valid_port() {
	if [[ ! $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
		die "$2=$1 is not a TCP port number"
	fi
}

# pid_running PID: the process exists and is not a zombie.
pid_running() {
	local stat
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
	[[ -n $stat && $stat != Z* ]]
}

# pid_matches PID TEXT: the process runs and its command line contains TEXT,
# so a pid recycled by an unrelated process is never signalled. An empty TEXT
# matches any process: only for a pid this script has just launched.
pid_matches() {
	pid_running "$1" || return 1
	[[ -n $2 ]] || return 0
	ps -ww -o args= -p "$1" 2>/dev/null | grep -qF -- "$2"
}

# stop_pid PID TEXT SIGNAL: sends SIGNAL, waits, then SIGKILL. Returns 0 when
# the process is gone (or was never ours).
stop_pid() {
	local pid=$1 text=$2 sig=$3 i
	pid_matches "$pid" "$text" || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		pid_matches "$pid" "$text" || return 0
		sleep 0.1
	done
	log "pid $pid still running 15 s after SIG$sig; sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		pid_matches "$pid" "$text" || return 0
		sleep 0.1
	done
	die "pid $pid survived SIGKILL"
}

# launch PIDFILE LOGFILE CMD...: runs CMD detached from this shell (own
# session, all output to LOGFILE) and prints the pid that CMD writes to
# PIDFILE (through $PUBQ_PIDFILE) just before it execs the server.
launch() {
	local pidfile=$1 logfile=$2 i pid=
	shift 2
	rm -f "$pidfile"
	: >"$logfile"
	if command -v setsid >/dev/null 2>&1; then
		PUBQ_PIDFILE="$pidfile" setsid "$@" </dev/null >>"$logfile" 2>&1 &
	else
		PUBQ_PIDFILE="$pidfile" nohup "$@" </dev/null >>"$logfile" 2>&1 &
	fi
	for ((i = 0; i < 100; i++)); do
		[[ -s $pidfile ]] && pid="$(<"$pidfile")" && [[ -n $pid ]] && break
		sleep 0.05
	done
	[[ -n $pid ]] || {
		log_tail "$logfile"
		die "the server did not start (no pid written to $pidfile)"
	}
	printf '%s\n' "$pid"
}

# write_pidfile: called by a `run` command right before it execs the server,
# whose pid is then $$.
write_pidfile() {
	if [[ -n ${PUBQ_PIDFILE:-} ]]; then
		printf '%s\n' "$$" >"$PUBQ_PIDFILE"
	fi
}
