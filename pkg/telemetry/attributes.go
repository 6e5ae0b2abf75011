package telemetry

import (
	"log/slog"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
)

// Span attribute keys. The messaging.* keys follow the OpenTelemetry messaging semantic conventions
// (the same ones the Pub/Sub client's built-in tracing writes); the pubq.job.* keys are pubq's own and
// are what `pubqctl trace` (package traceview) searches and prints.
const (
	AttrMessagingSystem    = attribute.Key("messaging.system")
	AttrMessagingMessageID = attribute.Key("messaging.message.id")

	AttrJobQueue   = attribute.Key("pubq.job.queue")
	AttrJobKind    = attribute.Key("pubq.job.kind")
	AttrJobKey     = attribute.Key("pubq.job.key")
	AttrJobID      = attribute.Key("pubq.job.id")
	AttrJobAttempt = attribute.Key("pubq.job.attempt")

	// AttrLink says what a span link points at: previous_attempt (a retry's earlier attempt), claim or
	// completion (the batched round trip that carried the job's claim or completion).
	AttrLink = attribute.Key("pubq.link")
	// On a batched round trip's span (pubq batch): how many claims and completions it carried.
	AttrBatchClaims      = attribute.Key("pubq.batch.claims")
	AttrBatchCompletions = attribute.Key("pubq.batch.completions")
)

// MessagingSystem is the messaging.system value for Google Cloud Pub/Sub.
const MessagingSystem = "gcp_pubsub"

// JobAttributes returns the span attributes that identify a job: messaging.system plus pubq.job.*.
// Empty strings and a non-positive attempt are left out, so the producer (which has no attempt yet)
// and the worker can share it.
func JobAttributes(queue, kind, key, id string, attempt int) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, AttrMessagingSystem.String(MessagingSystem))
	attrs = appendString(attrs, AttrJobQueue, queue)
	attrs = appendString(attrs, AttrJobKind, kind)
	attrs = appendString(attrs, AttrJobKey, key)
	attrs = appendString(attrs, AttrJobID, id)
	if attempt > 0 {
		attrs = append(attrs, AttrJobAttempt.Int(attempt))
	}
	return attrs
}

func appendString(attrs []attribute.KeyValue, k attribute.Key, v string) []attribute.KeyValue {
	if v == "" {
		return attrs
	}
	return append(attrs, k.String(v))
}

// Job identifies one attempt of a job in logs and spans.
type Job struct {
	Queue   string
	Kind    string
	Key     string
	ID      string
	Attempt int // 1-based; 0 when unknown (e.g. at enqueue)
}

// Log attribute keys that WithJob adds to every record logged with the job's context.
const (
	LogKeyJobQueue   = "job_queue"
	LogKeyJobKind    = "job_kind"
	LogKeyJobKey     = "job_key"
	LogKeyJobID      = "job_id"
	LogKeyJobAttempt = "job_attempt"
)

// SpanAttributes returns JobAttributes for j.
func (j Job) SpanAttributes() []attribute.KeyValue {
	return JobAttributes(j.Queue, j.Kind, j.Key, j.ID, j.Attempt)
}

// LogAttrs returns j as flat slog attributes (job_queue, job_kind, job_key, job_id, job_attempt);
// flat keys are easy to filter on in Cloud Logging (jsonPayload.job_key="…").
func (j Job) LogAttrs() []slog.Attr {
	attrs := make([]slog.Attr, 0, 5)
	for _, kv := range [...]struct{ k, v string }{
		{LogKeyJobQueue, j.Queue}, {LogKeyJobKind, j.Kind}, {LogKeyJobKey, j.Key}, {LogKeyJobID, j.ID},
	} {
		if kv.v != "" {
			attrs = append(attrs, slog.String(kv.k, kv.v))
		}
	}
	if j.Attempt > 0 {
		attrs = append(attrs, slog.Int(LogKeyJobAttempt, j.Attempt))
	}
	return attrs
}

// String is a compact form for messages: "queue/kind/key#attempt".
func (j Job) String() string {
	s := j.Queue + "/" + j.Kind + "/" + j.Key
	if j.Attempt > 0 {
		s += "#" + strconv.Itoa(j.Attempt)
	}
	return s
}
