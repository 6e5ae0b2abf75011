package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/demo"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/worker"
)

// A flood on bulk must not hold back critical. Here the flood is as bad as it gets: every bulk handler
// holds its database transaction and never finishes (until the test ends), with more bulk messages
// waiting behind them. Critical jobs — transactional too — must still all run. If the queues shared a
// subscription, flow control or database pool, the critical jobs could never get a slot or a connection
// and this test would fail; it asserts no timing. (Latency numbers come from `bench --modes flood`.)
func TestFloodOnBulkDoesNotStarveCritical(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	held := make(chan struct{}, 1000)
	b.mux.HandleTx("test.block", worker.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, j *job.Job) error {
		if _, err := tx.Exec(ctx, `SELECT 1`); err != nil { // really hold a connection
			return err
		}
		held <- struct{}{}
		<-release // stuck past its timeout too, as a hung dependency call would be
		return nil
	}))
	b.run(t, worker.Config{})
	t.Cleanup(func() { close(release) }) // runs before the worker stops (cleanups are LIFO)
	ctx := context.Background()

	p := b.client.Publisher("pubq-bulk")
	var results []*pubsub.PublishResult
	for i := range 200 {
		results = append(results, p.Publish(ctx, &pubsub.Message{Data: []byte(`{}`),
			Attributes: map[string]string{job.AttrKind: "test.block", job.AttrKey: fmt.Sprintf("bulk-%d", i)}}))
	}
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop()
	// Wait until bulk's whole concurrency (16) holds a transaction.
	for range 16 {
		select {
		case <-held:
		case <-time.After(30 * time.Second):
			t.Fatal("the bulk flood never filled its concurrency")
		}
	}
	for i := range 30 {
		b.enqueue(t, "demo.payment", fmt.Sprintf("pay-%d", i), demo.Payload{})
	}
	waitFor(t, 60*time.Second, "30 critical jobs during the flood", func() bool {
		var n int
		_ = b.st.Pool().QueryRow(ctx, `SELECT count(*) FROM demo_effects WHERE queue = 'critical'`).Scan(&n)
		return n == 30
	})
	if n := len(held); n > 0 {
		t.Fatalf("bulk ran %d more handlers than its concurrency allows", n)
	}
}

// max_rate caps how fast a queue's jobs start in one worker. A lower bound on time cannot flake on a
// slow machine: 40 jobs at 20/s (burst 2) need at least 1.9 s.
func TestMaxRateCapsAQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bulk, _ := b.cfg.Queue("bulk")
	bulk.MaxRate = 20
	b.run(t, worker.Config{})
	start := time.Now()
	for i := range 40 {
		b.enqueue(t, "demo.email", fmt.Sprintf("rated-%d", i), demo.Payload{})
	}
	waitFor(t, 60*time.Second, "40 rate-limited jobs", func() bool {
		var n int
		_ = b.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM demo_effects WHERE queue = 'bulk'`).Scan(&n)
		return n == 40
	})
	if d := time.Since(start); d < 1800*time.Millisecond {
		t.Fatalf("40 jobs at max_rate 20/s ran in %s", d)
	}
}
