#!/usr/bin/env bash
# infra/jaeger.sh {build|start|stop|status} — a local Jaeger v2 (in-memory storage) for looking at
# pubq traces with `pubqctl trace` or curl. Optional for developers; CI never builds it.
#
#   build   compile Jaeger from the Go module proxy into .tools/jaeger (once, ~5 min, ~120 MB)
#   start   run it in the background: OTLP gRPC 4317, OTLP HTTP 4318, query API 16686
#   stop    stop it (safe to repeat)
#   status  say whether it runs and where
#
# Environment (all optional):
#   PUBQ_RUN_DIR            state dir: pid file, log, generated config (default <repo>/.run)
#   JAEGER_VERSION          module version to build (default v1.76.0)
#   JAEGER_BIN              binary path (default <repo>/.tools/jaeger)
#   JAEGER_HOST             listen address (default 127.0.0.1)
#   JAEGER_OTLP_GRPC_PORT   default 4317
#   JAEGER_OTLP_HTTP_PORT   default 4318
#   JAEGER_QUERY_PORT       query HTTP API, default 16686
#   JAEGER_QUERY_GRPC_PORT  query gRPC API, default 16685
#   JAEGER_HEALTH_PORT      health check, default 13133
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${JAEGER_VERSION:-v1.76.0}
BIN=${JAEGER_BIN:-$ROOT/.tools/jaeger}
RUN_DIR=${PUBQ_RUN_DIR:-$ROOT/.run}
HOST=${JAEGER_HOST:-127.0.0.1}
OTLP_GRPC_PORT=${JAEGER_OTLP_GRPC_PORT:-4317}
OTLP_HTTP_PORT=${JAEGER_OTLP_HTTP_PORT:-4318}
QUERY_PORT=${JAEGER_QUERY_PORT:-16686}
QUERY_GRPC_PORT=${JAEGER_QUERY_GRPC_PORT:-16685}
HEALTH_PORT=${JAEGER_HEALTH_PORT:-13133}

PID_FILE=$RUN_DIR/jaeger.pid
LOG_FILE=$RUN_DIR/jaeger.log
CONFIG_FILE=$RUN_DIR/jaeger.yaml

say() { printf 'jaeger: %s\n' "$*"; }
die() { printf 'jaeger: %s\n' "$*" >&2; exit 1; }

running_pid() {
	[[ -f $PID_FILE ]] || return 1
	local pid
	pid=$(<"$PID_FILE")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

build() {
	command -v go >/dev/null || die "go is not on PATH"
	local tmp dir src
	tmp=$(mktemp -d)
	# go install refuses Jaeger (its go.mod has replace directives), so build a copy of the module.
	# GOWORK=off: the copy lives under this repo, whose go.work must not claim it.
	say "downloading github.com/jaegertracing/jaeger@$VERSION from the Go module proxy"
	dir=$(cd "$tmp" && GOWORK=off go mod download -json "github.com/jaegertracing/jaeger@$VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
	[[ -n $dir && -d $dir ]] || die "go mod download gave no module directory"
	src=$ROOT/.tools/src/jaeger-$VERSION
	rm -rf "$src"
	mkdir -p "$(dirname "$src")" "$(dirname "$BIN")"
	cp -r "$dir" "$src"
	chmod -R u+w "$src"
	rmdir "$tmp"
	say "building $src/cmd/jaeger (about 5 minutes on 2 cores)"
	(cd "$src" && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -o "$BIN.tmp" ./cmd/jaeger)
	mv "$BIN.tmp" "$BIN"
	rm -rf "$src"
	rmdir "$(dirname "$src")" 2>/dev/null || true
	say "built $BIN ($("$BIN" version 2>/dev/null | head -c 200 | tr -d '\n' || true))"
}

write_config() {
	# In-memory storage, OTLP receivers and the query API only; Jaeger's own metrics are off so
	# nothing else needs a port.
	cat >"$CONFIG_FILE" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: info

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: "$HOST:$HEALTH_PORT"
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: "$HOST:$QUERY_PORT"
    grpc:
      endpoint: "$HOST:$QUERY_GRPC_PORT"
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "$HOST:$OTLP_GRPC_PORT"
      http:
        endpoint: "$HOST:$OTLP_HTTP_PORT"

processors:
  batch:

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
}

start() {
	local pid
	if pid=$(running_pid); then
		say "already running (pid $pid); query API http://$HOST:$QUERY_PORT"
		return 0
	fi
	[[ -x $BIN ]] || die "no binary at $BIN: run '$0 build' first (about 5 minutes)"
	for p in "$OTLP_GRPC_PORT" "$OTLP_HTTP_PORT" "$QUERY_PORT" "$QUERY_GRPC_PORT" "$HEALTH_PORT"; do
		port_busy "$p" && die "port $HOST:$p is already in use (override with the JAEGER_*_PORT variables)"
	done
	mkdir -p "$RUN_DIR"
	write_config
	setsid "$BIN" --config "$CONFIG_FILE" >"$LOG_FILE" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$PID_FILE"
	for _ in $(seq 1 60); do
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$PID_FILE"
			tail -n 20 "$LOG_FILE" >&2 || true
			die "exited during start; full log in $LOG_FILE"
		fi
		if port_busy "$QUERY_PORT" && port_busy "$OTLP_GRPC_PORT"; then
			say "started (pid $pid, log $LOG_FILE)"
			say "  OTLP gRPC  $HOST:$OTLP_GRPC_PORT   OTLP HTTP  http://$HOST:$OTLP_HTTP_PORT"
			say "  query API  http://$HOST:$QUERY_PORT/api/traces"
			say "  export OTEL_EXPORTER_OTLP_ENDPOINT=http://$HOST:$OTLP_GRPC_PORT OTEL_EXPORTER_OTLP_PROTOCOL=grpc"
			return 0
		fi
		sleep 0.5
	done
	kill "$pid" 2>/dev/null || true
	rm -f "$PID_FILE"
	tail -n 20 "$LOG_FILE" >&2 || true
	die "not ready after 30s; stopped it; full log in $LOG_FILE"
}

stop() {
	local pid
	if ! pid=$(running_pid); then
		rm -f "$PID_FILE"
		say "not running"
		return 0
	fi
	kill "$pid"
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; say "stopped (pid $pid)"; return 0; }
		sleep 0.2
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$PID_FILE"
	say "killed (pid $pid) after 10s without exiting"
}

status() {
	local pid
	if pid=$(running_pid); then
		say "running (pid $pid); query API http://$HOST:$QUERY_PORT; log $LOG_FILE"
	else
		say "not running"
		return 1
	fi
}

case "${1:-}" in
build) build ;;
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 {build|start|stop|status}" ;;
esac
