package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/job"
)

// PublishFunc publishes messages and returns one error (nil on success) per message, in order.
type PublishFunc func(ctx context.Context, msgs []OutboxMessage) []error

// Relay publishes up to limit due outbox messages and deletes those that were published, in one
// transaction that holds their rows (FOR UPDATE SKIP LOCKED: relays running side by side take disjoint
// rows). A message whose publish failed stays, with its next try pushed back by retryIn(attempts).
// If the process dies after publishing but before committing, the messages are published again; the
// worker's claim absorbs the duplicate. It returns how many were published.
func (s *Store) Relay(ctx context.Context, limit int, publish PublishFunc, retryIn func(attempts int) time.Duration) (int, error) {
	published := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, coalesce(job_key, ''), topic, data, attributes, coalesce(trace_parent, ''), available_at, publish_attempts
			FROM pubq.outbox WHERE available_at <= now() ORDER BY available_at, id LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		var msgs []OutboxMessage
		for rows.Next() {
			var m OutboxMessage
			var attrs []byte
			if err := rows.Scan(&m.ID, &m.JobKey, &m.Topic, &m.Data, &attrs, &m.TraceParent, &m.AvailableAt, &m.Attempts); err != nil {
				rows.Close()
				return err
			}
			if err := json.Unmarshal(attrs, &m.Attributes); err != nil {
				rows.Close()
				return fmt.Errorf("outbox row %d attributes: %w", m.ID, err)
			}
			msgs = append(msgs, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(msgs) == 0 {
			return nil
		}
		errs := publish(ctx, msgs)
		var done []int64
		var failed []int64
		var delays []float64
		var texts []string
		for i, m := range msgs {
			// A row is deleted only on a result that says it was published; no result is a failure.
			var err error
			if i >= len(errs) {
				err = errors.New("pubq: the publish function returned no result for this message")
			} else {
				err = errs[i]
			}
			if err != nil {
				failed = append(failed, m.ID)
				delays = append(delays, retryIn(m.Attempts+1).Seconds())
				texts = append(texts, err.Error())
				continue
			}
			done = append(done, m.ID)
		}
		if len(done) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM pubq.outbox WHERE id = ANY($1)`, done); err != nil {
				return err
			}
		}
		if len(failed) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE pubq.outbox o SET publish_attempts = publish_attempts + 1,
				available_at = now() + make_interval(secs => f.d), last_error = f.e
				FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS f(id, d, e) WHERE o.id = f.id`, failed, delays, texts); err != nil {
				return err
			}
		}
		published = len(done)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("pubq: relaying outbox: %w", err)
	}
	return published, nil
}

// OutboxStats reports the outbox backlog: due messages, and the age of the oldest due one.
func (s *Store) OutboxStats(ctx context.Context) (backlog int64, oldest time.Duration, err error) {
	return OutboxBacklog(ctx, s.pool)
}

// OutboxBacklog is OutboxStats through q (inside a caller's snapshot, say).
func OutboxBacklog(ctx context.Context, q Querier) (backlog int64, oldest time.Duration, err error) {
	var secs float64
	err = q.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(available_at)), 0)::float8
		FROM pubq.outbox WHERE available_at <= now()`).Scan(&backlog, &secs)
	if err != nil {
		return 0, 0, fmt.Errorf("pubq: outbox stats: %w", err)
	}
	return backlog, time.Duration(secs * float64(time.Second)), nil
}

// Prune deletes up to batch finished jobs (succeeded, cancelled, dead) of queue that finished more than
// keep ago, with their attempts, among the jobs created at or after from. It walks the queue's jobs in
// creation order (a job finishes after it is created; no index names finish times, see migration
// 0006) and returns the creation time of the last job it deleted: pass it as the next call's from, so
// that old jobs that cannot be pruned yet (scheduled far ahead, still pending) are read once per pass
// rather than once per batch. Small batches and SKIP LOCKED keep locks short; call it until it returns
// fewer than batch.
func (s *Store) Prune(ctx context.Context, queue string, keep time.Duration, batch int, from time.Time) (n int, last time.Time, err error) {
	var lastAt *time.Time
	err = s.pool.QueryRow(ctx, `WITH doomed AS (
			SELECT key, created_at FROM pubq.jobs
			WHERE queue = $1 AND created_at >= $4 AND created_at < now() - make_interval(secs => $2)
				AND state IN ('succeeded', 'cancelled', 'dead') AND finished_at < now() - make_interval(secs => $2)
			ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED),
		gone_attempts AS (DELETE FROM pubq.attempts a USING doomed d WHERE a.job_key = d.key),
		gone AS (DELETE FROM pubq.jobs j USING doomed d WHERE j.key = d.key RETURNING d.created_at)
		SELECT count(*), max(created_at) FROM gone`, queue, keep.Seconds(), batch, from).Scan(&n, &lastAt)
	if err != nil {
		return 0, from, fmt.Errorf("pubq: pruning %s: %w", queue, err)
	}
	if lastAt == nil {
		return 0, from, nil
	}
	return n, *lastAt, nil
}

// ReconcileClaims records the running jobs that no pubq.claims row lists in a new row, and returns how
// many it found. Rescue finds running jobs through those rows, and only a binary older than migration
// 0006 (still running during a rolling deploy) claims without writing one. It reads the whole jobs
// table: the rescuer runs it at start and then rarely.
func (s *Store) ReconcileClaims(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `WITH missing AS (
			SELECT j.key FROM pubq.jobs j WHERE j.state = 'running'
			AND NOT EXISTS (SELECT 1 FROM pubq.claims c, unnest(c.keys) k WHERE k = j.key)),
		record AS (INSERT INTO pubq.claims (owner, keys) SELECT 'reconcile', array_agg(key) FROM missing HAVING count(*) > 0)
		SELECT count(*) FROM missing`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pubq: reconciling claim records: %w", err)
	}
	return n, nil
}

// ClaimedKeysSQL selects the keys of the claim records: every running job's key is among them (no
// index tells a running job from a finished one, see migration 0006).
const ClaimedKeysSQL = `SELECT unnest(keys) FROM pubq.claims`

// SweepClaims deletes the claim records none of whose jobs runs, older than a minute: those of workers
// that died, or that could not record a job's outcome. A job runs again only under a new claim, which
// writes its own record. Younger records are left to their workers, which delete them once their jobs
// are settled; SKIP LOCKED leaves a record a worker or another replica is deleting to them.
func (s *Store) SweepClaims(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM pubq.claims WHERE id IN (
			SELECT c.id FROM pubq.claims c
			WHERE c.at < now() - interval '1 minute'
			AND NOT EXISTS (SELECT 1 FROM pubq.jobs j WHERE j.key = ANY(c.keys) AND j.state = 'running')
			FOR UPDATE OF c SKIP LOCKED)`); err != nil {
		return fmt.Errorf("pubq: sweeping claim records: %w", err)
	}
	return nil
}

// LostErrorPrefix starts the last error Rescue records for an attempt whose worker vanished.
const LostErrorPrefix = "worker lost"

// Rescued is a job whose worker vanished, put back by Rescue.
type Rescued struct {
	Key, Queue, Kind string
	ID               string // the job's id
	TraceParent      string // the W3C traceparent stored with the job ("" if none)
	Attempt          int
	Dead             bool // it had used its last attempt: dead-lettered instead
}

// RescueTarget tells Rescue where a queue's messages go.
type RescueTarget struct {
	Topic, DeadLetterTopic string
	// Attributes builds the wire attributes for the job's next delivery.
	Attributes func(key, id, kind string, attempt int, enqueuedAt time.Time) map[string]string
}

// Rescue finds running jobs whose lease expired more than grace ago — their worker died and no
// redelivery took them over — and schedules them again through the outbox (or dead-letters those that
// used their last attempt). The lost attempt is recorded in pubq.attempts. Each rescue is fenced like a
// claim, so it happens once per expired lease. Jobs on queues missing from targets are left alone.
func (s *Store) Rescue(ctx context.Context, grace time.Duration, limit int, targets map[string]RescueTarget) ([]Rescued, error) {
	queues := make([]string, 0, len(targets))
	for q := range targets {
		queues = append(queues, q)
	}
	var out []Rescued
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `WITH due AS (
				SELECT key, fence, lease_owner, started_at, lease_until FROM pubq.jobs
				WHERE key IN (`+ClaimedKeysSQL+`)
				AND state = 'running' AND lease_until < now() - make_interval(secs => $1) AND queue = ANY($3)
				ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED)
			UPDATE pubq.jobs j SET
				state = CASE WHEN j.max_attempts > 0 AND j.attempt >= j.max_attempts THEN 'dead' ELSE 'scheduled' END,
				finished_at = CASE WHEN j.max_attempts > 0 AND j.attempt >= j.max_attempts THEN now() END,
				dead_reason = CASE WHEN j.max_attempts > 0 AND j.attempt >= j.max_attempts THEN 'exhausted' END,
				last_error = '`+LostErrorPrefix+`: lease expired at ' || due.lease_until::text,
				run_at = now(), lease_owner = NULL, lease_until = NULL, fence = j.fence + 1
			FROM due WHERE j.key = due.key
			RETURNING j.key, j.id, j.queue, j.kind, j.attempt, j.state = 'dead', coalesce(j.payload, '\x7b7d'::bytea),
				coalesce(j.trace_parent, ''), j.enqueued_at, due.fence, coalesce(due.lease_owner, ''), due.started_at, j.last_error,
				j.attributes`,
			grace.Seconds(), limit, queues)
		if err != nil {
			return err
		}
		type row struct {
			r                    Rescued
			id, tp, owner, lastE string
			payload              []byte
			enqueuedAt           time.Time
			startedAt            *time.Time
			fence                int64
			attrs                map[string]string
		}
		var got []row
		for rows.Next() {
			var x row
			if err := rows.Scan(&x.r.Key, &x.id, &x.r.Queue, &x.r.Kind, &x.r.Attempt, &x.r.Dead, &x.payload, &x.tp,
				&x.enqueuedAt, &x.fence, &x.owner, &x.startedAt, &x.lastE, &x.attrs); err != nil {
				rows.Close()
				return err
			}
			x.r.ID, x.r.TraceParent = x.id, x.tp
			got = append(got, x)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// The lost attempts, in one statement: the rows stay locked until the transaction ends.
		n := len(got)
		keys, attempts, fences, owners, starts, errs, tps := make([]string, n), make([]int32, n), make([]int64, n),
			make([]string, n), make([]*time.Time, n), make([]string, n), make([]string, n)
		msgs := make([]OutboxMessage, 0, n)
		for i, x := range got {
			keys[i], attempts[i], fences[i], owners[i], starts[i], errs[i], tps[i] = x.r.Key, int32(x.r.Attempt), x.fence, x.owner, x.startedAt, x.lastE, x.tp
			t := targets[x.r.Queue]
			m := OutboxMessage{JobKey: x.r.Key, Topic: t.Topic, Data: x.payload, TraceParent: x.tp}
			if x.r.Dead {
				m.Topic = t.DeadLetterTopic
				m.Attributes = job.DeadLetterAttributes(withOwn(x.attrs, t.Attributes(x.r.Key, x.id, x.r.Kind, x.r.Attempt, x.enqueuedAt)),
					x.r.Queue, job.ReasonExhausted, "worker lost during the last attempt", x.r.Attempt, time.Now())
			} else {
				m.Attributes = withOwn(x.attrs, t.Attributes(x.r.Key, x.id, x.r.Kind, x.r.Attempt+1, x.enqueuedAt))
			}
			msgs = append(msgs, m)
			out = append(out, x.r)
		}
		if n > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO pubq.attempts (job_key, attempt, fence, worker, started_at, outcome, error, trace_parent)
				SELECT r.k, r.a, r.f, nullif(r.w, ''), r.s, 'lost', r.e, nullif(r.tp, '')
				FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::timestamptz[], $6::text[], $7::text[]) AS r(k, a, f, w, s, e, tp)
				ON CONFLICT DO NOTHING`, keys, attempts, fences, owners, starts, errs, tps); err != nil {
				return err
			}
		}
		_, err = InsertOutbox(ctx, tx, msgs...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pubq: rescuing stuck jobs: %w", err)
	}
	return out, nil
}

// withOwn returns envelope plus a job's own attributes (stored at enqueue) under it: the envelope's
// values win.
func withOwn(own, envelope map[string]string) map[string]string {
	for k, v := range own {
		if _, set := envelope[k]; !set {
			envelope[k] = v
		}
	}
	return envelope
}
