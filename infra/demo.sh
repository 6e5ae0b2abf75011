#!/usr/bin/env bash
# make demo: the whole local stack — Pub/Sub emulator, PostgreSQL, producer and worker as separate
# processes (and Jaeger: one already listening on 16686, e.g. from docker compose, or the one
# infra/jaeger.sh build made) — a few thousand jobs over HTTP with live
# progress, a summary, then teardown. Needs only what make build produced in bin/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$root"
export PUBQ_RUN_DIR="$root/.run/demo"
source infra/lib.sh # free_port
infra/stack.sh down >/dev/null 2>&1 || true # a stack left by an interrupted or kept demo: stop, never orphan it
rm -rf "$PUBQ_RUN_DIR"
mkdir -p "$PUBQ_RUN_DIR"
pids=()
jaeger="" traces=""
pport="" wport=""
cleanup() {
	rc=$?
	if [[ -n "${PUBQ_DEMO_KEEP:-}" && $rc -eq 0 ]]; then
		echo "PUBQ_DEMO_KEEP: the stack stays up (producer :$pport, worker :$wport); stop it with: kill ${pids[*]}; infra/stack.sh down"
		echo "$(infra/stack.sh env 2>/dev/null)"
		return
	fi
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	[[ -n "$jaeger" ]] && infra/jaeger.sh stop >/dev/null 2>&1 || true
	infra/stack.sh down >/dev/null 2>&1 || true
	if [[ $rc -ne 0 ]]; then echo "demo failed; logs in $PUBQ_RUN_DIR" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


echo "▶ starting the Pub/Sub emulator and a throwaway PostgreSQL"
eval "$(infra/stack.sh up)"
export PUBQ_PROJECT=pubq-demo PUBQ_QUEUES="$root/queues.yaml" PUBQ_SCHEDULES=false
if curl -fsS -m 2 http://127.0.0.1:16686/api/services >/dev/null 2>&1; then
	# One already runs (docker compose -f docker-compose.emulator.yml up jaeger, or an earlier start):
	# use it and leave it running.
	echo "▶ using the Jaeger already running (traces: http://127.0.0.1:16686)"
	traces=1
elif [[ -x .tools/jaeger ]]; then
	echo "▶ starting Jaeger (traces: http://127.0.0.1:16686)"
	if infra/jaeger.sh start >/dev/null 2>&1; then
		jaeger=1 traces=1
	fi
fi
if [[ -n "${traces:-}" ]]; then
	export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf PUBQ_JAEGER_URL=http://127.0.0.1:16686 OTEL_BSP_SCHEDULE_DELAY=500
fi
echo "▶ bootstrapping topics and subscriptions from queues.yaml, migrating the database"
bin/worker bootstrap 2>"$PUBQ_RUN_DIR/bootstrap.log"
bin/worker migrate 2>"$PUBQ_RUN_DIR/migrate.log"

pport=$(free_port)
wport=$(free_port)
token="demo-$RANDOM$RANDOM"
echo "▶ starting the producer (:$pport) and the worker (:$wport) as separate processes"
PORT=$pport PUBQ_API_TOKENS=$token OTEL_SERVICE_NAME=pubq-producer bin/producer 2>"$PUBQ_RUN_DIR/producer.log" &
pids+=($!)
PORT=$wport OTEL_SERVICE_NAME=pubq-worker bin/worker run 2>"$PUBQ_RUN_DIR/worker.log" &
pids+=($!)
for url in "http://127.0.0.1:$pport/readyz" "http://127.0.0.1:$wport/readyz"; do
	for _ in $(seq 1 100); do
		curl -fsS "$url" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -fsS "$url" >/dev/null || { echo "not ready: $url" >&2; exit 1; }
done

bin/demo --jobs "${DEMO_JOBS:-3000}" --producer "http://127.0.0.1:$pport" --token "$token" --sample-file "$PUBQ_RUN_DIR/sample"
if [[ -n "${traces:-}" && -s "$PUBQ_RUN_DIR/sample" ]]; then
	key=$(sed -n 1p "$PUBQ_RUN_DIR/sample")
	attempts=$(sed -n 3p "$PUBQ_RUN_DIR/sample")
	echo
	echo "▶ the sample job's traces, from Jaeger (bin/pubqctl trace $key):"
	# The binaries export spans in batches (OTEL_BSP_SCHEDULE_DELAY above): wait until every attempt's
	# handler span is in.
	for _ in $(seq 1 20); do
		if out=$(bin/pubqctl trace "$key" 2>&1) && [[ $(grep -cE 'pubq job [^ ]* +pubq-worker ' <<<"$out") -ge ${attempts:-1} ]]; then break; fi
		sleep 0.5
	done
	echo "$out"
fi
echo
echo "metrics: curl http://127.0.0.1:$wport/metrics (while running) · logs: $PUBQ_RUN_DIR"
