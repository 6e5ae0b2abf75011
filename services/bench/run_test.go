package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/testenv"
)

// TestRunModes runs every measured mode at a small size on the real emulator and PostgreSQL, in both
// throughput shapes, and checks that each consumed every message and that pubq's modes really claimed
// and completed every job in the database: the benchmark's numbers mean nothing if a mode can finish
// without doing its work.
func TestRunModes(t *testing.T) {
	testenv.Emulator(t)
	dsn := testenv.Postgres(t)
	t.Setenv("PUBQ_DATABASE_URL", dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	project := testenv.ProjectID(t)
	done := 0 // pubq jobs succeeded so far in this database
	for si, shape := range []struct {
		name           string
		subs, window   int
		messages, rate int
	}{
		{"pre-published, one queue", 1, 0, 300, 50},
		// 301 and 3 queues: the split over queues must not lose the remainder.
		{"windowed, three queues", 3, 40, 301, 50},
	} {
		o := options{messages: shape.messages, streams: 6, outstanding: 60, rate: shape.rate, latencyFor: time.Second,
			subs: shape.subs, window: shape.window}
		for round, mode := range []string{"raw", "raw-claim", "pubq", "pubq-traced", "pubq-traced-lite"} {
			t.Run(shape.name+"/"+mode, func(t *testing.T) {
				// Distinct rounds keep topics and job keys apart: a repeated key would be skipped as done.
				r, err := runMode(ctx, o, project, mode, 10*si+round+1)
				if err != nil {
					t.Fatal(err)
				}
				if r.Messages != shape.messages || r.JobsPerSec <= 0 || r.Seconds <= 0 {
					t.Errorf("throughput phase: %+v", r)
				}
				if r.LatencyJobs != shape.rate || r.P50ms <= 0 || r.P99ms < r.P50ms {
					t.Errorf("latency phase: %d jobs (want %d), p50 %.1f ms, p99 %.1f ms", r.LatencyJobs, shape.rate, r.P50ms, r.P99ms)
				}
				if mode == "raw" || mode == "raw-claim" {
					return
				}
				done += shape.messages + shape.rate
				var n int
				if err := conn.QueryRow(ctx, `SELECT count(*) FROM pubq.jobs WHERE state = 'succeeded'`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != done {
					t.Errorf("%d jobs succeeded in the database, want %d", n, done)
				}
			})
		}
	}
}
