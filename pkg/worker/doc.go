// Package worker is pubq's runtime: it receives each configured queue's Pub/Sub subscription with the
// queue's own flow control, decodes each message into a job, claims the job's idempotency key with a
// fenced lease (batched across concurrently received messages), runs the kind's handler through the
// middleware chain while renewing the lease, and makes the outcome durable — succeeded, retry scheduled,
// dead-lettered or cancelled — before it acknowledges the message.
//
// The worker surface reads like net/http: a Handler (or HandlerFunc, or TxHandler for database work that
// must commit with the job's completion) is registered per kind on a Mux, and Middleware wraps handlers.
//
// What the worker never does: ack a message whose outcome is not committed; run a job whose key another
// worker holds; let a duplicate delivery of a finished job run again; redeliver a message that cannot
// be decoded forever (it goes to the queue's dead-letter topic with the reason in its attributes).
package worker
