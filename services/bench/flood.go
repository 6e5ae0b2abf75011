package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/pubq/pubq/pkg/admin"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/worker"
)

// FloodResult is critical's latency idle and during a flood on bulk, measured in one run.
type FloodResult struct {
	Flood           int     `json:"bulk_flood_jobs"`
	FloodSeconds    float64 `json:"bulk_drain_seconds"`
	BulkPerSec      float64 `json:"bulk_jobs_per_sec"`
	CriticalRate    int     `json:"critical_rate"`
	IdleJobs        int     `json:"idle_critical_jobs"`
	IdleP50ms       float64 `json:"idle_p50_ms"`
	IdleP99ms       float64 `json:"idle_p99_ms"`
	FloodJobs       int     `json:"flood_critical_jobs"`
	FloodP50ms      float64 `json:"flood_p50_ms"`
	FloodP99ms      float64 `json:"flood_p99_ms"`
	P99FloodPerIdle float64 `json:"p99_flood_over_idle"`
	BulkMaxRate     float64 `json:"bulk_max_rate"` // bulk's max_rate during the run (0: unlimited)
	BulkStreams     int     `json:"bulk_streams"`  // bulk's streaming pulls (0: the shipped 1)
	RawCritical     bool    `json:"raw_critical"`  // critical consumed by a raw Pub/Sub loop (the emulator's own baseline)
	// Publish → handler start (delivery by Pub/Sub, decode, claim), the part of the latency before the job runs.
	IdleStartP99ms  float64 `json:"idle_start_p99_ms"`
	FloodStartP99ms float64 `json:"flood_start_p99_ms"`
}

// runFlood runs one worker receiving critical and bulk (the shipped queues' flow control), measures
// critical's publish → done latency while idle, then while `flood` bulk jobs are published and drained.
func runFlood(ctx context.Context, project string, flood, rate int, idleFor time.Duration, bulkMaxRate float64, bulkStreams int, rawCritical bool) (FloodResult, error) {
	res := FloodResult{Flood: flood, CriticalRate: rate, BulkMaxRate: bulkMaxRate, BulkStreams: bulkStreams, RawCritical: rawCritical}
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		return res, err
	}
	defer client.Close()
	qcfg, err := queue.Parse([]byte(`version: 1
queues:
  critical:
    topic: flood-critical
    subscription: flood-critical-sub
    dead_letter_topic: flood-critical-dead
    dead_letter_subscription: flood-critical-dead-sub
    concurrency: 32
    streams: 4
    kinds: [bench.critical]
  bulk:
    topic: flood-bulk
    subscription: flood-bulk-sub
    dead_letter_topic: flood-bulk-dead
    dead_letter_subscription: flood-bulk-dead-sub
    concurrency: 64
    streams: 1
    kinds: [bench.bulk]
`))
	if err != nil {
		return res, err
	}
	if bulk, ok := qcfg.Queue("bulk"); ok {
		bulk.MaxRate = bulkMaxRate
		if bulkStreams > 0 {
			bulk.Streams = bulkStreams
		}
	}
	if _, err := admin.Bootstrap(ctx, client, project, qcfg); err != nil {
		return res, err
	}
	st, err := store.Open(ctx, store.Config{URL: os.Getenv("PUBQ_DATABASE_URL"), MaxConns: 32})
	if err != nil {
		return res, err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return res, err
	}
	mux := worker.NewMux()
	// A bulk job is an e-mail API call (~2 ms); a critical job is quick.
	mux.HandleFunc("bench.bulk", func(context.Context, *job.Job) error { time.Sleep(2 * time.Millisecond); return nil })
	var startMu sync.Mutex
	starts := [2][]time.Duration{}
	var phase atomic.Int32 // 0 idle, 1 flood
	mux.HandleFunc("bench.critical", func(_ context.Context, j *job.Job) error {
		// Publish → handler start: the emulator's delivery, decoding and the claim.
		if sent := sentOf(j.Payload); sent > 0 {
			startMu.Lock()
			starts[phase.Load()] = append(starts[phase.Load()], time.Duration(time.Now().UnixNano()-sent))
			startMu.Unlock()
		}
		return nil
	})

	var mu sync.Mutex
	lat := [2][]time.Duration{}
	var bulkDone atomic.Int64
	var bulkFirst, bulkLast atomic.Int64
	var only []string
	if rawCritical {
		only = []string{"bulk"}
	}
	w, err := worker.New(client, st, mux, &worker.Config{Queues: qcfg, Only: only, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ShutdownTimeout: 5 * time.Second, OnDone: func(j *job.Job, acked bool) {
			if !acked || j == nil {
				return
			}
			now := time.Now().UnixNano()
			if j.Kind == "bench.bulk" {
				bulkFirst.CompareAndSwap(0, now)
				if bulkDone.Add(1) == int64(flood) {
					bulkLast.Store(now)
				}
				return
			}
			if sent := sentOf(j.Payload); sent > 0 {
				mu.Lock()
				lat[phase.Load()] = append(lat[phase.Load()], time.Duration(now-sent))
				mu.Unlock()
			}
		}})
	if err != nil {
		return res, err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	werr := make(chan error, 1)
	go func() { werr <- w.Run(wctx) }()
	if rawCritical {
		// The baseline: what the emulator itself delivers to a plain receive-and-ack loop.
		sub := client.Subscriber("flood-critical-sub")
		sub.ReceiveSettings.NumGoroutines = 4
		go func() {
			_ = sub.Receive(wctx, func(_ context.Context, m *pubsub.Message) {
				m.Ack()
				if sent := sentOf(m.Data); sent > 0 {
					now := time.Now().UnixNano()
					mu.Lock()
					lat[phase.Load()] = append(lat[phase.Load()], time.Duration(now-sent))
					mu.Unlock()
				}
			})
		}()
	}

	critical := func(ctx context.Context, prefix string, until func() bool) error {
		p := client.Publisher("flood-critical")
		defer p.Stop()
		p.PublishSettings.DelayThreshold = time.Millisecond // a payment is sent at once, not batched
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for i := 0; !until(); i++ {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
			data := fmt.Appendf(nil, `{"sent":%d}`, time.Now().UnixNano())
			p.Publish(ctx, &pubsub.Message{Data: data, Attributes: map[string]string{job.AttrKind: "bench.critical", job.AttrKey: fmt.Sprintf("%s-%x-%d", prefix, runStart, i)}})
		}
		return nil
	}
	// Warm up, then idle.
	start := time.Now()
	if err := critical(ctx, "warm", func() bool { return time.Since(start) > time.Second }); err != nil {
		return res, err
	}
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	lat[0] = nil
	mu.Unlock()
	startMu.Lock()
	starts[0] = nil
	startMu.Unlock()
	start = time.Now()
	if err := critical(ctx, "idle", func() bool { return time.Since(start) > idleFor }); err != nil {
		return res, err
	}
	time.Sleep(500 * time.Millisecond)
	// Flood: publish the bulk backlog while critical keeps coming, until bulk is drained.
	phase.Store(1)
	var pubErr error
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		pubErr = publishN(ctx, client, "flood-bulk", "bench.bulk", fmt.Sprintf("bulk-%x", runStart), flood, 0)
	}()
	floodStart := time.Now()
	if err := critical(ctx, "flood", func() bool { return bulkDone.Load() >= int64(flood) || time.Since(floodStart) > 5*time.Minute }); err != nil {
		return res, err
	}
	<-pubDone
	if pubErr != nil {
		return res, pubErr
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	<-werr
	mu.Lock()
	defer mu.Unlock()
	res.IdleJobs, res.IdleP50ms, res.IdleP99ms = pct(lat[0])
	res.FloodJobs, res.FloodP50ms, res.FloodP99ms = pct(lat[1])
	startMu.Lock()
	_, _, res.IdleStartP99ms = pct(starts[0])
	_, _, res.FloodStartP99ms = pct(starts[1])
	startMu.Unlock()
	if bulkLast.Load() > 0 {
		res.FloodSeconds = float64(bulkLast.Load()-floodStart.UnixNano()) / 1e9
		res.BulkPerSec = float64(flood) / (float64(bulkLast.Load()-bulkFirst.Load()) / 1e9)
	}
	if res.IdleP99ms > 0 {
		res.P99FloodPerIdle = res.FloodP99ms / res.IdleP99ms
	}
	return res, nil
}

func pct(d []time.Duration) (n int, p50, p99 float64) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	return len(d), float64(d[len(d)/2]) / 1e6, float64(d[len(d)*99/100]) / 1e6
}
