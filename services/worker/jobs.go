package main

import (
	"context"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/schema"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
	"github.com/pubq/pubq/pkg/worker"
)

// platform is what the platform's jobs need from the worker's setup.
type platform struct {
	queues  *queue.Config
	metrics *telemetry.Metrics
	tracer  trace.TracerProvider
	log     *slog.Logger
	getenv  func(string) string
}

// registerPlatformJobs registers the edtech platform's jobs: account.merge, and the nightly
// duplicate scan students.scan with its students.scan_range fan-out. Their follow-up jobs are
// enqueued in the running job's transaction through a publish client of this worker's store.
//
// PUBQ_EDTECH_VERIFY picks the verification after each real merge: pair (the default,
// merge.Verify: the pair's rows through indexes, milliseconds), full (merge.VerifyDatabase: also
// sweeps every row below students for orphans, about 70 merges' worth of database time at 200k
// students) or off.
func registerPlatformJobs(mux *worker.Mux, st *store.Store, p platform) error {
	var cfg jobs.Config
	switch v := p.getenv("PUBQ_EDTECH_VERIFY"); v {
	case "", "pair":
	case "full":
		cfg.VerifyDatabase = true
	case "off":
		cfg.SkipVerify = true
	default:
		return usageError{fmt.Errorf("PUBQ_EDTECH_VERIFY: %q (want pair, full or off)", v)}
	}
	pub, err := publish.New(st, &publish.Config{Queues: p.queues, Metrics: p.metrics, TracerProvider: p.tracer})
	if err != nil {
		return err
	}
	h, err := jobs.New(jobs.Config{Publisher: pub, SkipVerify: cfg.SkipVerify, VerifyDatabase: cfg.VerifyDatabase, Logger: p.log})
	if err != nil {
		return err
	}
	h.Register(mux)
	return nil
}

// migratePlatform applies the edtech schema (idempotent, advisory-locked, so replicas starting
// together with PUBQ_MIGRATE=true apply it once).
func migratePlatform(ctx context.Context, st *store.Store) error {
	if err := schema.Apply(ctx, st.Pool()); err != nil {
		return fmt.Errorf("edtech schema: %w", err)
	}
	return nil
}
