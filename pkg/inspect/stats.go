package inspect

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/store"
)

// QueueStats summarises one queue.
type QueueStats struct {
	Queue string `json:"queue"`
	// Configured is false for a queue that has jobs in the database but is not in the queue config.
	Configured bool `json:"configured"`
	// Counts holds the number of jobs in each stored state (every state is present, zeros included).
	Counts map[string]int64 `json:"counts"`
	// Stuck counts running jobs whose lease has expired: their worker is gone and neither a redelivery
	// nor the rescuer has taken them over yet. They are included in Counts["running"].
	Stuck int64 `json:"stuck"`
	// Due counts pending and scheduled jobs whose run time has come (waiting for a worker).
	Due int64 `json:"due"`
	// In the window:
	Succeeded int64 `json:"succeeded"` // jobs that succeeded
	Failed    int64 `json:"failed"`    // attempts that failed (retried, dead-lettered or cancelled)
	Died      int64 `json:"died"`      // jobs dead-lettered (including those replayed since)
	// Throughput is Succeeded per second over the window.
	Throughput float64 `json:"throughput_per_sec"`
	// OldestWaiting is how long the oldest due job has waited past its run time; zero when none waits.
	OldestWaiting    time.Duration `json:"oldest_waiting_ns"`
	OldestWaitingKey string        `json:"oldest_waiting_key,omitempty"`
}

// Stats is a snapshot of every queue.
type Stats struct {
	At     time.Time     `json:"at"` // the database's clock
	Window time.Duration `json:"window_ns"`
	Queues []QueueStats  `json:"queues"`
	// Outbox backlog: messages due for publishing and the age of the oldest; a growing backlog means
	// no relay is running or Pub/Sub refuses publishes.
	OutboxDue    int64         `json:"outbox_due"`
	OutboxOldest time.Duration `json:"outbox_oldest_ns"`
}

// Total adds up the queues.
func (s *Stats) Total() QueueStats {
	t := QueueStats{Queue: "total", Counts: map[string]int64{}}
	for _, q := range s.Queues {
		for k, v := range q.Counts {
			t.Counts[k] += v
		}
		t.Stuck += q.Stuck
		t.Due += q.Due
		t.Succeeded += q.Succeeded
		t.Failed += q.Failed
		t.Died += q.Died
		t.Throughput += q.Throughput
		if q.OldestWaiting > t.OldestWaiting {
			t.OldestWaiting, t.OldestWaitingKey = q.OldestWaiting, q.OldestWaitingKey
		}
	}
	return t
}

// Stats summarises every queue; window (default 1h) bounds the succeeded, failed and dead counts.
func (i *Inspector) Stats(ctx context.Context, window time.Duration) (*Stats, error) {
	if window <= 0 {
		window = time.Hour
	}
	st := &Stats{Window: window}
	byQueue := map[string]*QueueStats{}
	get := func(name string) *QueueStats {
		q, ok := byQueue[name]
		if !ok {
			q = &QueueStats{Queue: name, Counts: map[string]int64{}}
			for _, s := range States {
				q.Counts[s] = 0
			}
			byQueue[name] = q
		}
		return q
	}
	for _, name := range i.Queues() {
		get(name).Configured = true
	}
	secs := window.Seconds()
	err := pgx.BeginTxFunc(ctx, i.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&st.At); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT queue, state, count(*),
				count(*) FILTER (WHERE state = 'running' AND lease_until < now()),
				count(*) FILTER (WHERE state IN ('pending', 'scheduled') AND run_at <= now()),
				count(*) FILTER (WHERE state IN ('succeeded', 'dead') AND finished_at >= now() - make_interval(secs => $1))
			FROM pubq.jobs GROUP BY queue, state`, secs)
		if err != nil {
			return err
		}
		var name, state string
		var n, stuck, due, recent int64
		_, err = pgx.ForEachRow(rows, []any{&name, &state, &n, &stuck, &due, &recent}, func() error {
			q := get(name)
			q.Counts[state] += n
			q.Stuck += stuck
			q.Due += due
			switch state {
			case StateSucceeded:
				q.Succeeded += recent
			case StateDead:
				q.Died += recent
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Dead attempts of jobs no longer dead (replayed since) count as deaths in the window too.
		rows, err = tx.Query(ctx, `SELECT j.queue, count(*),
				count(*) FILTER (WHERE a.outcome = 'dead' AND NOT (j.state = 'dead' AND j.fence = a.fence))
			FROM pubq.attempts a JOIN pubq.jobs j ON j.key = a.job_key
			WHERE a.finished_at >= now() - make_interval(secs => $1) AND a.outcome <> 'snooze' GROUP BY j.queue`, secs)
		if err != nil {
			return err
		}
		var replayed int64
		_, err = pgx.ForEachRow(rows, []any{&name, &n, &replayed}, func() error {
			q := get(name)
			q.Failed += n
			q.Died += replayed
			return nil
		})
		if err != nil {
			return err
		}
		// The oldest due job per queue; DISTINCT ON keeps one row per queue.
		rows, err = tx.Query(ctx, `SELECT DISTINCT ON (queue) queue, key, extract(epoch FROM now() - run_at)::float8
			FROM pubq.jobs WHERE indexed_state IN ('pending', 'scheduled') AND run_at <= now() ORDER BY queue, run_at, key`)
		if err != nil {
			return err
		}
		var key string
		var age float64
		_, err = pgx.ForEachRow(rows, []any{&name, &key, &age}, func() error {
			q := get(name)
			q.OldestWaiting, q.OldestWaitingKey = time.Duration(age*float64(time.Second)), key
			return nil
		})
		if err != nil {
			return err
		}
		st.OutboxDue, st.OutboxOldest, err = store.OutboxBacklog(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pubq: queue stats: %w", err)
	}
	for _, q := range byQueue {
		q.Throughput = float64(q.Succeeded) / secs
		st.Queues = append(st.Queues, *q)
	}
	sort.Slice(st.Queues, func(a, b int) bool { return st.Queues[a].Queue < st.Queues[b].Queue })
	return st, nil
}
