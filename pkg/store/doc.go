// Package store is pubq's Postgres layer: the connection pool (a DSN, or Cloud SQL through cloudsqlconn),
// embedded migrations, and every state change of a job.
//
// One row per idempotency key (pubq.jobs) holds a job's state. A worker claims a key with a lease and a
// fencing token (fence); only the holder of the current fence can complete, retry or dead-letter the job,
// so a worker that was paused past its lease (a zombie) cannot commit. Lease times come from the
// database's clock, never a worker's, so clock skew between machines cannot make two leases overlap.
//
// Messages that must be published after a commit (enqueue in a caller's transaction, delayed jobs,
// retries, dead letters) are written to pubq.outbox in the same transaction as the state change and
// published by the relay (FOR UPDATE SKIP LOCKED, safe with many relays). A retry therefore exists exactly
// once: it is the job row's transition to "scheduled" plus one outbox row, made by the fence holder.
//
// The hot path (claim, complete) is batched across concurrently received messages by Batcher.
package store
