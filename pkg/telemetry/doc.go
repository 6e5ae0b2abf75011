// Package telemetry is pubq's observability setup: OpenTelemetry tracing and metrics configured from
// the standard OTEL_* environment, a JSON slog logger that correlates log lines with traces (in Cloud
// Logging's format on Google Cloud), pubq's job metrics, and the span attributes that name a job.
//
// A service wires it like this:
//
//	log := telemetry.NewLogger(os.Stdout, telemetry.LoggerOptions{GCPProject: os.Getenv("GOOGLE_CLOUD_PROJECT")})
//	prov, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "pubq-worker", ServiceVersion: version, Logger: log})
//	if err != nil { ... }
//	defer prov.Shutdown(context.WithoutCancel(ctx))
//	metrics, err := telemetry.NewMetrics(prov.MeterProvider())
//	mux.Handle("/metrics", prov.MetricsHandler())
//
// and, per delivery, adds the job to the context so every log line names it:
//
//	ctx = telemetry.WithJob(ctx, telemetry.Job{Queue: q, Kind: k, Key: key, ID: id, Attempt: n})
//	span.SetAttributes(telemetry.JobAttributes(q, k, key, id, n)...)
//	log.InfoContext(ctx, "job done") // carries trace_id, span_id, job_queue, job_kind, job_key, job_id, job_attempt
//
// # Tracing
//
// Setup documents the exporter rules (OTEL_TRACES_EXPORTER = otlp | gcp | console | none, OTLP over
// grpc or http/protobuf; default otlp when an OTLP endpoint is set, gcp on Cloud Run/Functions/App
// Engine, else off). OTEL_EXPORTER_OTLP_ENDPOINT must be a URL: http://127.0.0.1:4317 for plaintext
// gRPC, not a bare host:port (the exporters would silently fall back to localhost:4317 with TLS).
// Whatever the sampler, the Pub/Sub client's per-message bookkeeping spans (subscriber concurrency
// control, subscribe scheduler, publisher flow control, publisher batching) are not recorded; the spans
// a job's trace runs through (create, subscribe, process) and the ack/modack spans are. The batch span
// processor holds DefaultBSPMaxQueueSize spans unless OTEL_BSP_MAX_QUEUE_SIZE is set.
//
// # Metrics
//
// Setup's MeterProvider feeds a Prometheus exporter on a registry private to the Providers (so tests
// can build several), served by MetricsHandler with the Go runtime and process collectors. The
// exporter turns OpenTelemetry names into Prometheus names (dots to underscores, unit suffix, _total on
// counters); the names below are the ones /metrics shows, checked by the tests:
//
//	pubq_jobs_enqueued_total{queue,kind}              Metrics.Enqueued (n jobs accepted for publishing)
//	pubq_jobs_started_total{queue,kind}               Metrics.Started
//	pubq_jobs_succeeded_total{queue,kind}             Metrics.Succeeded
//	pubq_jobs_failed_total{queue,kind}                Metrics.Failed (an attempt's handler failed)
//	pubq_jobs_snoozed_total{queue,kind}               Metrics.Snoozed (an attempt asked to run later, attempt not used)
//	pubq_jobs_abandoned_total{queue,kind}             Metrics.Abandoned (taken over, stopped at shutdown, completion not recorded)
//	pubq_jobs_retried_total{queue,kind}               Metrics.Retried (a retry was scheduled)
//	pubq_jobs_dead_lettered_total{queue,kind,reason}  Metrics.DeadLettered
//	pubq_jobs_duplicate_skipped_total{queue,kind}     Metrics.DuplicateSkipped (worker: deliveries of done or running keys; producer: re-enqueued keys)
//	pubq_job_queue_wait_seconds{queue,kind}           Metrics.QueueWait, histogram (publish → start, every attempt)
//	pubq_job_duration_seconds{queue,kind,outcome}     histogram; outcome succeeded|failed|snoozed|abandoned (one per started attempt)
//	pubq_jobs_in_flight{queue}                        Metrics.InFlight, gauge (attempts running)
//	pubq_leases_renewed_total{queue}                  Metrics.LeaseRenewed
//	pubq_leases_lost_total{queue}                     Metrics.LeaseLost
//	pubq_jobs_rescued_total{queue,kind}               Metrics.Rescued (by the rescuer; a lost last attempt is also dead-lettered, reason exhausted)
//	pubq_outbox_backlog                               Metrics.ObserveOutbox, gauge
//	pubq_outbox_oldest_age_seconds                    Metrics.ObserveOutbox, gauge
//	target_info{service_name,service_instance_id,…}   the resource, one series
//
// Histogram buckets run from 5 ms to 1 h. Labels must stay low-cardinality: queue and kind come from
// configuration and code, reason is a fixed word; never put a job key or an error message in a label.
// A nil *Metrics is a valid no-op.
//
// # Logs
//
// NewLogger writes one JSON object per line. Records logged with a context carry trace_id and span_id;
// with LoggerOptions.GCPProject set they use Cloud Logging's special fields (severity, message,
// logging.googleapis.com/trace, …/spanId, …/trace_sampled) so Logs Explorer links each line to its
// trace. Attributes named payload, token, authorization, password, secret, cookie, api_key, or ending
// in _token/_secret/_password, are dropped wherever they appear (see Sensitive).
package telemetry
