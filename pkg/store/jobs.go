package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/job"
)

// ClaimRequest asks to run one delivery of a job.
type ClaimRequest struct {
	Key, ID, Queue, Kind string
	MaxAttempts          int    // from the queue config; 0 means unlimited
	Payload              []byte // stored only if the job row is created here (published outside pubq)
	TraceParent          string // the delivery's trace context, kept for on-call and for linking attempts
	EnqueuedAt           time.Time
}

// ClaimStatus is what the claim found.
type ClaimStatus int

const (
	Claimed ClaimStatus = iota // this delivery holds the lease: run the job
	Done                       // the job is finished (succeeded, dead or cancelled): ack the duplicate
	Busy                       // another delivery holds a live lease: hold this one and ask again later
	NotDue                     // a retry or delayed run is scheduled; the outbox owns it: ack this one
)

func (s ClaimStatus) String() string {
	return [...]string{"claimed", "done", "busy", "not_due"}[s]
}

// ClaimResult is the answer to one ClaimRequest.
type ClaimResult struct {
	Status  ClaimStatus
	Attempt int   // Claimed: the attempt this delivery runs (1-based)
	Fence   int64 // Claimed: present it to complete, retry or dead-letter
	State   string
	Wait    time.Duration // Busy: time left on the other holder's lease
	// Claimed: the pubq.claims record of the round trip. Pass it to Batcher.Done when the attempt's
	// handling ends, so the record can go once all its jobs are settled.
	Record int64
}

// Lease is a claimed job as the holder identifies it.
type Lease struct {
	Key   string
	Fence int64
}

// claimSQL claims a batch. Its arrays arrive as text literals (see arrayLiteral): payloads as hex, the
// enqueue times as microseconds since the epoch. The keys it claims are recorded in one pubq.claims row
// (none when it claims nothing), whose id every returned row carries.
const claimSQL = `
WITH claimed AS (
INSERT INTO pubq.jobs AS j (key, id, queue, kind, state, attempt, max_attempts, fence, lease_owner, lease_until,
                            payload, trace_parent, enqueued_at, started_at, run_at)
SELECT r.k, r.i, r.q, r.kd, 'running', 1, r.ma, 1, $9, now() + make_interval(secs => $10), decode(r.p, 'hex'), r.tp,
       timestamptz 'epoch' + r.ea * interval '1 microsecond', now(), now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[], $8::int8[])
     AS r(k, i, q, kd, ma, p, tp, ea)
ON CONFLICT (key) DO UPDATE SET
    state = 'running', attempt = j.attempt + 1, fence = j.fence + 1,
    lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, started_at = now(),
    trace_parent = excluded.trace_parent, payload = coalesce(j.payload, excluded.payload)
WHERE (j.state IN ('pending', 'scheduled') AND j.run_at <= now())
   OR (j.state = 'running' AND j.lease_until < now())
RETURNING j.key, j.attempt, j.fence),
record AS (INSERT INTO pubq.claims (owner, keys) SELECT $9, array_agg(key) FROM claimed HAVING count(*) > 0 RETURNING id)
SELECT key, attempt, fence, (SELECT id FROM record) FROM claimed`

const classifySQL = `
SELECT key, state, greatest(extract(epoch FROM lease_until - now()), 0)::float8, run_at <= now()
FROM pubq.jobs WHERE key = ANY($1)`

const completeSQL = `
UPDATE pubq.jobs j SET state = 'succeeded', finished_at = now(), lease_owner = NULL, lease_until = NULL
FROM unnest($1::text[], $2::bigint[]) AS c(k, f)
WHERE j.key = c.k AND j.fence = c.f AND j.state = 'running'
RETURNING j.key, j.fence`

// forgetClaimsSQL deletes claim records ($1) whose jobs are all settled. Records the rescuer's sweep
// holds are skipped (it deletes them), so a round trip never waits for a rescue.
const forgetClaimsSQL = `DELETE FROM pubq.claims WHERE id IN (
	SELECT id FROM pubq.claims WHERE id = ANY($1::bigint[]) FOR UPDATE SKIP LOCKED)`

// claimArgs builds the arguments of claimSQL for reqs[i] for each i in idx (distinct keys).
func claimArgs(reqs []ClaimRequest, idx []int, owner string, lease time.Duration) []any {
	keys, ids, queues, kinds := newArrayLiteral(32*len(idx)), newArrayLiteral(32*len(idx)), newArrayLiteral(16*len(idx)), newArrayLiteral(16*len(idx))
	maxes, payloads, tps, eas := newArrayLiteral(4*len(idx)), newArrayLiteral(64*len(idx)), newArrayLiteral(58*len(idx)), newArrayLiteral(18*len(idx))
	now := time.Now()
	for _, i := range idx {
		r := &reqs[i]
		keys.addString(r.Key)
		if r.ID != "" {
			ids.addString(r.ID)
		} else {
			ids.addString(r.Key)
		}
		queues.addString(r.Queue)
		kinds.addString(r.Kind)
		maxes.addInt(int64(r.MaxAttempts))
		payloads.addHex(r.Payload)
		tps.addString(r.TraceParent)
		if r.EnqueuedAt.IsZero() {
			eas.addMicros(now)
		} else {
			eas.addMicros(r.EnqueuedAt)
		}
	}
	return []any{keys.String(), ids.String(), queues.String(), kinds.String(), maxes.String(), payloads.String(),
		tps.String(), eas.String(), owner, lease.Seconds()}
}

// Complete marks claimed jobs succeeded. ok[i] is false where the fence no longer matches (lease lost).
func (s *Store) Complete(ctx context.Context, leases []Lease) (ok []bool, err error) {
	keys, fences := leaseArgs(leases)
	rows, err := s.pool.Query(ctx, completeSQL, keys, fences)
	if err != nil {
		return nil, fmt.Errorf("pubq: completing jobs: %w", err)
	}
	done, err := collectLeases(rows)
	if err != nil {
		return nil, fmt.Errorf("pubq: completing jobs: %w", err)
	}
	ok = make([]bool, len(leases))
	for i, l := range leases {
		ok[i] = done[l]
	}
	return ok, nil
}

func collectLeases(rows pgx.Rows) (map[Lease]bool, error) {
	out := map[Lease]bool{}
	var l Lease
	_, err := pgx.ForEachRow(rows, []any{&l.Key, &l.Fence}, func() error {
		out[l] = true
		return nil
	})
	return out, err
}

// leaseArgs is the keys and fences of leases as array literals.
func leaseArgs(leases []Lease) (keys, fences string) {
	idx := make([]int, len(leases))
	for i := range idx {
		idx[i] = i
	}
	return leaseLiterals(leases, idx)
}

// leaseLiterals is the keys and fences of leases[i] for each i in idx, as array literals.
func leaseLiterals(leases []Lease, idx []int) (keys, fences string) {
	k, f := newArrayLiteral(32*len(idx)), newArrayLiteral(8*len(idx))
	for _, i := range idx {
		k.addString(leases[i].Key)
		f.addInt(leases[i].Fence)
	}
	return k.String(), f.String()
}

// matchKeys reads returned keys and reports, per input key, whether it came back.
func matchKeys(rows pgx.Rows, keys []string) ([]bool, error) {
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(got))
	for _, k := range got {
		seen[k] = true
	}
	ok := make([]bool, len(keys))
	for i, k := range keys {
		ok[i] = seen[k]
	}
	return ok, nil
}

// CompleteTx marks a claimed job succeeded inside the handler's transaction, so the handler's writes and
// the completion commit together. ErrLeaseLost means the caller must roll back.
func CompleteTx(ctx context.Context, tx pgx.Tx, l Lease) error {
	tag, err := tx.Exec(ctx, `UPDATE pubq.jobs SET state = 'succeeded', finished_at = now(), lease_owner = NULL, lease_until = NULL
		WHERE key = $1 AND fence = $2 AND state = 'running'`, l.Key, l.Fence)
	if err != nil {
		return fmt.Errorf("pubq: completing job %q: %w", l.Key, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// RenewLeases extends the leases of running jobs in one statement; it returns the leases it could not
// renew (fence moved on or job no longer running), whose handlers must stop. Leases are matched on key
// and fence, so a stale run of a key is not renewed by a newer one.
func (s *Store) RenewLeases(ctx context.Context, leases []Lease, lease time.Duration) (lost []Lease, err error) {
	if len(leases) == 0 {
		return nil, nil
	}
	keys, fences := leaseArgs(leases)
	rows, err := s.pool.Query(ctx, `UPDATE pubq.jobs j SET lease_until = now() + make_interval(secs => $3)
		FROM unnest($1::text[], $2::bigint[]) AS c(k, f)
		WHERE j.key = c.k AND j.fence = c.f AND j.state = 'running' RETURNING j.key, j.fence`, keys, fences, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("pubq: renewing leases: %w", err)
	}
	renewed, err := collectLeases(rows)
	if err != nil {
		return nil, fmt.Errorf("pubq: renewing leases: %w", err)
	}
	for _, l := range leases {
		if !renewed[l] {
			lost = append(lost, l)
		}
	}
	return lost, nil
}

// OutboxMessage is a message to publish after the transaction that wrote it commits.
type OutboxMessage struct {
	ID          int64
	JobKey      string // empty for messages that are not jobs (an undecodable delivery)
	Topic       string
	Data        []byte
	Attributes  map[string]string
	TraceParent string
	AvailableAt time.Time // zero: now
	Attempts    int       // publish attempts so far (read side)
}

// InsertOutbox writes msgs to pubq.outbox and wakes the relays when the transaction commits (NOTIFY is
// transactional), in one round trip. It returns the rows' ids in msgs' order.
func InsertOutbox(ctx context.Context, q Querier, msgs ...OutboxMessage) ([]int64, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	n := len(msgs)
	keys, topics, datas, attrs, tps, ats := make([]string, n), make([]string, n), make([][]byte, n), make([]string, n), make([]string, n), make([]*time.Time, n)
	for i, m := range msgs {
		a, err := json.Marshal(m.Attributes)
		if err != nil {
			return nil, fmt.Errorf("pubq: writing outbox: %w", err)
		}
		keys[i], topics[i], datas[i], attrs[i], tps[i] = m.JobKey, m.Topic, m.Data, string(a), m.TraceParent
		if !m.AvailableAt.IsZero() {
			t := m.AvailableAt
			ats[i] = &t
		}
	}
	batch := &pgx.Batch{}
	batch.Queue(`INSERT INTO pubq.outbox (job_key, topic, data, attributes, trace_parent, available_at)
		SELECT nullif(r.k, ''), r.t, r.d, r.a::jsonb, nullif(r.tp, ''), coalesce(r.at, now())
		FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::timestamptz[]) WITH ORDINALITY AS r(k, t, d, a, tp, at, n)
		ORDER BY r.n RETURNING id`, keys, topics, datas, attrs, tps, ats)
	batch.Queue(notifySQL)
	br := q.SendBatch(ctx, batch)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("pubq: writing outbox: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("pubq: writing outbox: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("pubq: notifying relays: %w", err)
	}
	return ids, br.Close()
}

const notifySQL = `SELECT pg_notify('pubq_outbox', '')`

// NotifyOutbox wakes the relays when the transaction commits, for rows already in the outbox.
func NotifyOutbox(ctx context.Context, q Querier) error {
	if _, err := q.Exec(ctx, notifySQL); err != nil {
		return fmt.Errorf("pubq: notifying relays: %w", err)
	}
	return nil
}

// Outcome of a failed attempt, as recorded by Finish.
type FailKind string

const (
	FailRetry  FailKind = "retry"     // scheduled again after Delay, using an attempt
	FailSnooze FailKind = "snooze"    // scheduled again after Delay, attempt not used
	FailDead   FailKind = "dead"      // dead-lettered now
	FailCancel FailKind = "cancelled" // stopped, not dead-lettered
)

// Failure records the end of an attempt that did not succeed.
type Failure struct {
	Lease
	Kind        FailKind
	Attempt     int
	Delay       time.Duration // retry, snooze
	Error       string
	DeadReason  string
	Worker      string
	StartedAt   time.Time
	TraceParent string        // the failed attempt's span, linked from the next attempt
	Message     OutboxMessage // retry/snooze: to the queue's topic; dead: to the dead-letter topic
}

// Fail records a failed attempt and its consequence — the retry, the dead letter or the cancellation —
// atomically, fenced by the lease. It returns the retry's due time. ErrLeaseLost: another worker owns
// the job now and nothing was written.
func (s *Store) Fail(ctx context.Context, f Failure) (runAt time.Time, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var e error
		runAt, e = FailTx(ctx, tx, f)
		return e
	})
	return runAt, err
}

// FailTx is Fail inside the caller's transaction.
func FailTx(ctx context.Context, tx pgx.Tx, f Failure) (time.Time, error) {
	var runAt time.Time
	var err error
	switch f.Kind {
	case FailRetry, FailSnooze:
		used := 0
		if f.Kind == FailSnooze {
			used = 1 // a snooze gives its attempt back
		}
		err = tx.QueryRow(ctx, `UPDATE pubq.jobs SET state = 'scheduled', run_at = now() + make_interval(secs => $3),
			attempt = attempt - $4, last_error = $5, lease_owner = NULL, lease_until = NULL
			WHERE key = $1 AND fence = $2 AND state = 'running' RETURNING run_at`,
			f.Key, f.Fence, f.Delay.Seconds(), used, nullString(f.Error)).Scan(&runAt)
	case FailDead, FailCancel:
		state := "dead"
		if f.Kind == FailCancel {
			state = "cancelled"
		}
		err = tx.QueryRow(ctx, `UPDATE pubq.jobs SET state = $3, finished_at = now(), last_error = $4, dead_reason = $5,
			lease_owner = NULL, lease_until = NULL, payload = coalesce(payload, $6)
			WHERE key = $1 AND fence = $2 AND state = 'running' RETURNING now()`,
			f.Key, f.Fence, state, nullString(f.Error), nullString(f.DeadReason), f.Message.Data).Scan(&runAt)
	default:
		return time.Time{}, fmt.Errorf("pubq: unknown failure kind %q", f.Kind)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, ErrLeaseLost
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("pubq: recording %s of job %q: %w", f.Kind, f.Key, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO pubq.attempts (job_key, attempt, fence, worker, started_at, outcome, error, trace_parent)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
		f.Key, f.Attempt, f.Fence, f.Worker, nullTime(f.StartedAt), string(f.Kind), nullString(f.Error), nullString(f.TraceParent)); err != nil {
		return time.Time{}, fmt.Errorf("pubq: recording attempt of %q: %w", f.Key, err)
	}
	if f.Kind == FailCancel {
		return runAt, nil
	}
	m := f.Message
	m.JobKey = f.Key
	m.AvailableAt = runAt
	if _, err := InsertOutbox(ctx, tx, m); err != nil {
		return time.Time{}, err
	}
	return runAt, nil
}

// DeadLetter dead-letters a delivery that is not a runnable job (undecodable, or a kind this worker has no
// handler for). With a key, the job row (created if absent) says dead, and the dead letter is written,
// only if the job is not finished or running under a live lease elsewhere; otherwise the delivery is a
// duplicate (a redelivery of one already dead-lettered, or of a job another worker version handles)
// and nothing is written: DeadLetter returns false.
func (s *Store) DeadLetter(ctx context.Context, key, queue, kind, reason, errText string, m OutboxMessage) (bool, error) {
	written := true
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if key != "" {
			var k string
			err := tx.QueryRow(ctx, `INSERT INTO pubq.jobs AS j (key, id, queue, kind, state, payload, last_error, dead_reason, finished_at)
				VALUES ($1, $1, $2, $3, 'dead', $4, $5, $6, now())
				ON CONFLICT (key) DO UPDATE SET state = 'dead', last_error = excluded.last_error,
					dead_reason = excluded.dead_reason, finished_at = now(), payload = coalesce(j.payload, excluded.payload),
					lease_owner = NULL, lease_until = NULL
				WHERE j.state IN ('pending', 'scheduled') OR (j.state = 'running' AND j.lease_until < now())
				RETURNING j.key`,
				key, queue, kind, m.Data, errText, reason).Scan(&k)
			if errors.Is(err, pgx.ErrNoRows) {
				written = false
				return nil
			}
			if err != nil {
				return fmt.Errorf("pubq: dead-lettering %q: %w", key, err)
			}
		}
		m.JobKey = key
		_, err := InsertOutbox(ctx, tx, m)
		return err
	})
	if err != nil {
		return false, err
	}
	return written, nil
}

// NewJob is a job to enqueue.
type NewJob struct {
	Key, ID, Queue, Kind string
	Topic                string
	Payload              []byte
	Attributes           map[string]string // wire attributes (the envelope) for the outbox message
	RunAt                time.Time         // zero or past: now
	MaxAttempts          int
	TraceParent          string
}

// EnqueueResult is the answer to one NewJob.
type EnqueueResult struct {
	ID        string
	Duplicate bool // the key existed with the same payload: nothing new was enqueued
	State     string
	RunAt     time.Time // when the job is due, for a scheduled one (a duplicate's as first enqueued)
}

// KeyConflictError says which key was reused for a different job.
type KeyConflictError struct{ Key, ExistingID string }

func (e *KeyConflictError) Error() string {
	return fmt.Sprintf("pubq: idempotency key %q already used by job %s with a different kind or payload", e.Key, e.ExistingID)
}
func (e *KeyConflictError) Is(target error) bool { return target == ErrKeyConflict }

// Enqueue records jobs and their outbox messages in q (a pool or the caller's transaction): one job per
// key, whatever the concurrency. Keys must be distinct within one call. A key already used with the same kind and payload returns the first
// job's id; with a different one, a *KeyConflictError (and, in a transaction the caller owns, nothing is
// written by this call).
func Enqueue(ctx context.Context, q Querier, jobs []NewJob) ([]EnqueueResult, error) {
	n := len(jobs)
	keys, ids, queues, kinds, states := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	payloads, hashes, runAts := make([][]byte, n), make([][]byte, n), make([]*time.Time, n)
	maxes, tps, attrs := make([]int32, n), make([]string, n), make([]string, n)
	for i, j := range jobs {
		if own := ownAttributes(j.Attributes); own != nil {
			b, err := json.Marshal(own)
			if err != nil {
				return nil, fmt.Errorf("pubq: enqueueing %q: attributes: %w", j.Key, err)
			}
			attrs[i] = string(b)
		}
		h := sha256.Sum256(append([]byte(j.Kind+"\x00"), j.Payload...))
		keys[i], ids[i], queues[i], kinds[i], payloads[i], hashes[i] = j.Key, j.ID, j.Queue, j.Kind, j.Payload, h[:]
		maxes[i], tps[i], states[i] = int32(j.MaxAttempts), j.TraceParent, "pending"
		if !j.RunAt.IsZero() && j.RunAt.After(time.Now()) {
			t := j.RunAt.Round(time.Microsecond) // as Postgres stores it, so a duplicate's answer is the same
			runAts[i], states[i] = &t, "scheduled"
		}
	}
	rows, err := q.Query(ctx, `INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, payload_hash, run_at, max_attempts, trace_parent, attributes)
		SELECT r.k, r.i, r.q, r.kd, r.st, r.p, r.h, coalesce(r.ra, now()), r.ma, nullif(r.tp, ''), nullif(r.at, '')::jsonb
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::bytea[], $8::timestamptz[], $9::int[], $10::text[], $11::text[])
		     AS r(k, i, q, kd, st, p, h, ra, ma, tp, at)
		ORDER BY r.k COLLATE "C" -- byte order, as the claim sorts keys: overlapping batches cannot deadlock
		ON CONFLICT (key) DO NOTHING RETURNING key`, keys, ids, queues, kinds, states, payloads, hashes, runAts, maxes, tps, attrs)
	if err != nil {
		return nil, fmt.Errorf("pubq: enqueueing: %w", err)
	}
	inserted, err := matchKeys(rows, keys)
	if err != nil {
		return nil, fmt.Errorf("pubq: enqueueing: %w", err)
	}
	out := make([]EnqueueResult, n)
	var dupKeys []string
	for i := range jobs {
		if inserted[i] {
			out[i] = EnqueueResult{ID: ids[i], State: states[i]}
			if runAts[i] != nil {
				out[i].RunAt = *runAts[i]
			}
			continue
		}
		dupKeys = append(dupKeys, keys[i])
	}
	if len(dupKeys) > 0 {
		// A new statement sees rows committed by concurrent enqueues of the same key.
		type existing struct {
			id, state string
			hash      []byte
			runAt     time.Time
		}
		found := map[string]existing{}
		rows, err := q.Query(ctx, `SELECT key, id, state, payload_hash, run_at FROM pubq.jobs WHERE key = ANY($1)`, dupKeys)
		if err != nil {
			return nil, fmt.Errorf("pubq: enqueueing: %w", err)
		}
		for rows.Next() {
			var k string
			var e existing
			if err := rows.Scan(&k, &e.id, &e.state, &e.hash, &e.runAt); err != nil {
				rows.Close()
				return nil, fmt.Errorf("pubq: enqueueing: %w", err)
			}
			found[k] = e
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("pubq: enqueueing: %w", err)
		}
		for i := range jobs {
			if inserted[i] {
				continue
			}
			e, ok := found[keys[i]]
			if !ok {
				return nil, fmt.Errorf("pubq: enqueueing %q: key vanished while enqueueing (pruned?)", keys[i])
			}
			if e.hash != nil && string(e.hash) != string(hashes[i]) {
				return nil, &KeyConflictError{Key: keys[i], ExistingID: e.id}
			}
			out[i] = EnqueueResult{ID: e.id, Duplicate: true, State: e.state}
			if e.state == "scheduled" {
				out[i].RunAt = e.runAt
			}
		}
	}
	var msgs []OutboxMessage
	for i, j := range jobs {
		if !inserted[i] {
			continue
		}
		m := OutboxMessage{JobKey: j.Key, Topic: j.Topic, Data: j.Payload, Attributes: j.Attributes, TraceParent: j.TraceParent}
		if runAts[i] != nil {
			m.AvailableAt = *runAts[i]
		}
		msgs = append(msgs, m)
	}
	if _, err := InsertOutbox(ctx, q, msgs...); err != nil {
		return nil, err
	}
	return out, nil
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Release gives a claimed job back without using its attempt (the worker is shutting down before the
// handler finished): the next delivery can claim it at once instead of waiting for the lease to expire.
// ErrLeaseLost: the job was no longer running under l (taken over); nothing was written.
func (s *Store) Release(ctx context.Context, l Lease) error {
	tag, err := s.pool.Exec(ctx, `UPDATE pubq.jobs SET state = 'pending', attempt = attempt - 1, run_at = now(),
		lease_owner = NULL, lease_until = NULL WHERE key = $1 AND fence = $2 AND state = 'running'`, l.Key, l.Fence)
	if err != nil {
		return fmt.Errorf("pubq: releasing job %q: %w", l.Key, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// ownAttributes is attrs without the envelope (which the row's columns hold) and trace context (which
// a later delivery writes anew), or nil if nothing is left.
func ownAttributes(attrs map[string]string) map[string]string {
	var own map[string]string
	for k, v := range attrs {
		if job.EnvelopeAttribute(k) || job.TraceContextAttribute(k) {
			continue
		}
		if own == nil {
			own = make(map[string]string, len(attrs))
		}
		own[k] = v
	}
	return own
}
