// Command producer serves pubq's HTTP API (POST /v1/jobs, see package api), relays the outbox to
// Pub/Sub in the background, and fires the queue configuration's cron schedules. Run as many replicas
// as load needs: the relay and the schedules are safe to run on each.
//
//	producer [--addr host:port]
//
// Configuration (environment):
//
//	PUBQ_PROJECT              GCP project id (required; any id with the Pub/Sub emulator, which
//	                          PUBSUB_EMULATOR_HOST selects)
//	PUBQ_QUEUES               path to queues.yaml (default queues.yaml)
//	PUBQ_DATABASE_URL         Postgres URL, for local development and tests; or else
//	PUBQ_CLOUDSQL_INSTANCE    project:region:instance, with PUBQ_DATABASE_USER (SA@PROJECT.iam) and
//	                          PUBQ_DATABASE_NAME; IAM database auth, PUBQ_CLOUDSQL_PRIVATE_IP=true to
//	                          dial the private IP
//	PUBQ_API_TOKENS           comma-separated bearer tokens (required; shorter than 16 bytes: a warning)
//	PUBQ_INSECURE_NO_AUTH     true turns authentication off, for local development only (logs a warning)
//	PORT                      listen port when --addr is not given (default 8080)
//	PUBQ_MIGRATE              true applies the database migrations at start (default false)
//	PUBQ_SCHEDULES            false stops this replica firing the cron schedules (default true)
//	PUBQ_SHUTDOWN_TIMEOUT     how long requests in flight may finish after SIGTERM (default 10s)
//	PUBQ_TRACE_SQL            false drops the per-query spans (default true)
//	PUBQ_LOG_LEVEL            debug, info, warn or error (default info)
//	PUBQ_GCP_LOG_PROJECT      switches the JSON logs to Cloud Logging's format, linked to traces (on Google
//	                          Cloud the default is GOOGLE_CLOUD_PROJECT, else the metadata server's project)
//	OTEL_*                    traces and metrics, see package telemetry
//
// Besides the API it serves GET /metrics (Prometheus). Logs are JSON on stderr. A bad configuration
// exits 2 with every mistake named; a failure while running exits 1.
//
// On SIGTERM or SIGINT it fails /readyz, stops firing schedules, stops accepting connections and lets
// the requests in flight finish (PUBQ_SHUTDOWN_TIMEOUT), publishes what they committed, stops the
// relay and flushes telemetry.
package main
