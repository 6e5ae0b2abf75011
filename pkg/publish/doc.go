// Package publish is pubq's producer side: a Client that enqueues jobs (one, many, or inside the
// caller's own database transaction) with producer-side idempotency, and the Relay that publishes
// committed outbox rows to Pub/Sub.
//
// Enqueue never publishes directly. It commits the job row and an outbox row in one transaction (so the
// answer "accepted" is durable, and a repeated key finds the first job), and the relay — woken by
// LISTEN/NOTIFY at commit — publishes in batches, retrying transient errors with jittered backoff. One
// publisher path serves fresh jobs, delayed jobs, retries and dead letters alike.
package publish
