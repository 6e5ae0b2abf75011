// Package api is the producer's HTTP API, for services that enqueue jobs without linking pubq, and a
// small Go client of it that retries safely.
//
// # Routes
//
//	POST /v1/jobs   enqueue one job, or a batch of up to publish.MaxBatch jobs atomically (bearer token)
//	GET  /healthz   the process is up (no token)
//	GET  /readyz    the producer can serve: Config.Ready (the database) answers (no token)
//
// One job:
//
//	POST /v1/jobs
//	Authorization: Bearer <token>
//	Content-Type: application/json
//	Idempotency-Key: order-81723/capture          (or the "key" field; both present must agree)
//
//	{"kind": "payment.capture", "payload": {"order": 81723}, "run_in": "30s"}
//
// answers 202 Accepted with {"id","key","kind","queue","state","duplicate"} (and "run_at" when the job
// is scheduled), or 200 OK with the first job when the key was already enqueued with the same kind and
// payload. "run_at" (RFC 3339) or "run_in" (a Go duration) delays the job; a missing or null payload
// is {}. A batch is {"jobs": [...]} where each job carries its own "key"; all are written or none, and
// the answer is {"jobs": [...]} in request order (202, or 200 when every job was a duplicate).
//
// The idempotency key is what makes a retry safe: a client that lost the answer sends the same request
// again and gets the same job back. The same key with a different kind or payload is a conflict (409).
// Payloads are compacted (insignificant whitespace removed) before comparison, but key order matters.
//
// # Errors
//
// Every refusal is an RFC 9457 problem (application/problem+json) with type, title, status and detail;
// validation problems add "field" (kind, key, payload, run_at, run_in, jobs) and, in a batch, "index":
//
//	400  malformed JSON, a missing key, an invalid or unknown field
//	401  no or wrong bearer token (WWW-Authenticate: Bearer)
//	405  wrong method (Allow lists the right ones)
//	409  the key was used for a different job ("job_id" names it)
//	413  body, payload or batch too large
//	415  not application/json
//	422  no queue accepts the kind
//	503  the database is unreachable or too slow (Retry-After); retry with the same key
//
// # Tracing
//
// The handler is wrapped with otelhttp: the HTTP server span is the root of the job's trace (or the
// child of the caller's span when the request carries a W3C traceparent and the global propagator reads
// it), and the enqueue span, the outbox row and so the Pub/Sub message descend from it.
package api
