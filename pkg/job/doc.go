// Package job is pubq's leaf package: the job envelope, its wire format on Pub/Sub, strict validation,
// and the typed outcome errors a handler returns. It imports nothing of pubq, so every other package
// (and any platform service) can use it without cycles.
//
// # Wire format (version 1)
//
// A job is one Pub/Sub message. The data is the job's payload, a JSON value (usually an object), at most
// MaxPayloadBytes. The attributes carry the envelope:
//
//	pubq_kind         required  job kind, e.g. "email.send" (lower-case dotted words)
//	pubq_key          required  idempotency key, 1..256 bytes of printable UTF-8; one key = one job
//	pubq_version      optional  "1" (the only version); absent means 1
//	pubq_id           optional  job id assigned by the producer (the worker keeps the first one seen)
//	pubq_enqueued_at  optional  RFC 3339 time the job was enqueued; absent means the publish time
//	pubq_attempt      optional  attempt number this delivery runs, 1-based; set by pubq's retry relay
//	traceparent       optional  W3C trace context to continue (googclient_traceparent, written by the
//	                            Pub/Sub clients' own tracing, is honoured too)
//
// Any other attribute is kept and handed to the handler in Job.Attributes. A message that does not decode
// is dead-lettered with the attributes of DeadLetter* below, never redelivered forever.
package job
