// Command pubqctl is pubq's on-call tool: find any job by its idempotency key and see why it failed,
// list and summarise queues, and act on jobs — run a scheduled retry now, cancel it, replay dead jobs
// (one, a selection, or all in a time window), purge finished jobs — and serve the web dashboard.
// It is a thin shell over package inspect, the same code the dashboard uses.
//
//	pubqctl job <key> [--payload]
//	pubqctl jobs --state dead --queue default --since 2h
//	pubqctl stats [--window 1h]
//	pubqctl retry <key> | cancel <key>
//	pubqctl replay <key>... | replay --queue Q [--kind K] --since T [--until T] | replay --all   [--dry-run]
//	pubqctl purge  <key>... | purge  --state succeeded --queue Q --until 30d | purge --all      [--dry-run]
//	pubqctl trace <key> [--jaeger http://127.0.0.1:16686]
//	pubqctl dashboard [--addr :8090]
//	pubqctl merge --survivor A --duplicate B | --file PAIRS.csv   [--dry-run] [--enqueue] [--verify pair|full|off]
//	pubqctl seed --students N [--duplicate-rate 0.02] [--pairs FILE]
//	pubqctl migrate
//
// Every command prints a table by default and JSON with --json. Bulk replays, purges, merges of
// many pairs and seeds draw a progress bar when stderr is a terminal.
//
// Configuration comes from the environment: PUBQ_DATABASE_URL (or PUBQ_CLOUDSQL_INSTANCE,
// PUBQ_DATABASE_USER, PUBQ_DATABASE_NAME), PUBQ_QUEUES (default queues.yaml), PUBQ_ACTOR (required
// for actions: who acts, recorded in pubq.audit), PUBQ_JAEGER_URL, and for the dashboard
// PUBQ_DASHBOARD_TOKENS and PUBQ_CLOUD_TRACE_PROJECT.
//
// Exit codes: 0 ok (an action that found nothing to do is ok and says why), 1 the operation failed,
// 2 usage or configuration error (including an action without PUBQ_ACTOR), 3 no job has the key (or,
// for trace, the backend has no trace of it).
package main
