// Package demo holds the demo job kinds used by `make demo` and the integration tests. Their effect is
// observable: each successful execution inserts one row into demo_effects in the job's own transaction,
// so the row exists exactly when the job's completion committed. demo_effects has no unique constraint
// on the key on purpose: a job that ran twice would show up as two rows.
package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/worker"
)

// Kinds are the demo kinds, one per queue in queues.yaml plus a flaky one.
var Kinds = []string{"demo.payment", "demo.record", "demo.email", "demo.flaky"}

// Payload controls a demo job's behaviour.
type Payload struct {
	Note       string `json:"note,omitempty"`
	SleepMS    int    `json:"sleep_ms,omitempty"`    // run this long (honouring cancellation)
	FailTimes  int    `json:"fail_times,omitempty"`  // fail the first N attempts (demo.flaky)
	Permanent  bool   `json:"permanent,omitempty"`   // fail permanently (dead-letter at once)
	SnoozeMS   int    `json:"snooze_ms,omitempty"`   // snooze once (on attempt 1) for this long
	EnqueuedNS int64  `json:"enqueued_ns,omitempty"` // client clock at enqueue, for latency measurements
}

// Migrate creates demo_effects.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS demo_effects (
		id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		job_key   text NOT NULL,
		kind      text NOT NULL,
		queue     text NOT NULL,
		attempt   int NOT NULL,
		payload   jsonb NOT NULL,
		latency_us bigint,
		ran_at    timestamptz NOT NULL DEFAULT now());
		CREATE INDEX IF NOT EXISTS demo_effects_key ON demo_effects (job_key)`)
	if err != nil {
		return fmt.Errorf("pubq: demo: migrate: %w", err)
	}
	return nil
}

// ErrDemoFailure is what a demo job fails with when asked to.
var ErrDemoFailure = errors.New("demo: asked to fail")

// Register registers the demo kinds on mux.
func Register(mux *worker.Mux) {
	h := worker.TxHandlerFunc(Work)
	for _, k := range Kinds {
		mux.HandleTx(k, h)
	}
}

// Work runs one demo job inside the job's transaction.
func Work(ctx context.Context, tx pgx.Tx, j *job.Job) error {
	var p Payload
	if err := j.Unmarshal(&p); err != nil {
		return err
	}
	if p.SleepMS > 0 {
		t := time.NewTimer(time.Duration(p.SleepMS) * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
	if p.Permanent {
		return job.Permanent(ErrDemoFailure)
	}
	if p.SnoozeMS > 0 && j.Attempt == 1 {
		if n, _ := countAttempts(ctx, tx, j.Key); n == 0 {
			return job.Snooze(time.Duration(p.SnoozeMS) * time.Millisecond)
		}
	}
	if j.Attempt <= p.FailTimes {
		return fmt.Errorf("%w: attempt %d of %d failing ones", ErrDemoFailure, j.Attempt, p.FailTimes)
	}
	var latency *int64
	if p.EnqueuedNS > 0 {
		us := time.Since(time.Unix(0, p.EnqueuedNS)).Microseconds()
		latency = &us
	}
	_, err := tx.Exec(ctx, `INSERT INTO demo_effects (job_key, kind, queue, attempt, payload, latency_us) VALUES ($1, $2, $3, $4, $5, $6)`,
		j.Key, j.Kind, j.Queue, j.Attempt, []byte(j.Payload), latency)
	return err
}

func countAttempts(ctx context.Context, tx pgx.Tx, key string) (int, error) {
	var n int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM pubq.attempts WHERE job_key = $1 AND outcome = 'snooze'`, key).Scan(&n)
	return n, err
}
