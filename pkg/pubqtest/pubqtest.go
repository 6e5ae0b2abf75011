// Package pubqtest sets up what pubq's integration tests share: an emulator project of the test's own
// with the queues of a queues.yaml text bootstrapped, a migrated database, a Pub/Sub client and a
// publisher. It builds on testenv (which starts the emulator and the throwaway Postgres).
package pubqtest

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"cloud.google.com/go/pubsub/v2"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/pubq/pubq/pkg/admin"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
	"github.com/pubq/pubq/pkg/testenv"
)

// Env is one test's stack. Everything in it is closed when the test ends.
type Env struct {
	Project string
	DBURL   string
	Client  *pubsub.Client
	Store   *store.Store
	Queues  *queue.Config
	Pub     *publish.Client
}

// New gives t its own emulator project with queuesYAML's queues bootstrapped, and its own migrated
// database.
func New(t testing.TB, queuesYAML string) *Env {
	t.Helper()
	return NewOn(t, queuesYAML, testenv.Postgres(t))
}

// NewOn is New on the database at dbURL (a test that needs two stores on one database, say).
func NewOn(t testing.TB, queuesYAML, dbURL string) *Env {
	t.Helper()
	testenv.Emulator(t)
	ctx := context.Background()
	e := &Env{Project: testenv.ProjectID(t), DBURL: dbURL}
	var err error
	if e.Queues, err = queue.Parse([]byte(queuesYAML)); err != nil {
		t.Fatal(err)
	}
	if e.Client, err = pubsub.NewClient(ctx, e.Project); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Client.Close() })
	if _, err := admin.Bootstrap(ctx, e.Client, e.Project, e.Queues); err != nil {
		t.Fatal(err)
	}
	e.Store = StoreOn(t, dbURL)
	if e.Pub, err = publish.New(e.Store, &publish.Config{Queues: e.Queues}); err != nil {
		t.Fatal(err)
	}
	return e
}

// Store opens a migrated store on a database of t's own (closed when t ends): for tests that need
// Postgres but no Pub/Sub.
func Store(t testing.TB) *store.Store {
	t.Helper()
	return StoreOn(t, testenv.Postgres(t))
}

// StoreOn is Store on the database at dbURL.
func StoreOn(t testing.TB, dbURL string) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// Metrics returns pubq's metrics backed by a manual reader, and a function that collects and sums one
// counter (instrument name, e.g. "pubq.jobs.rescued") over all its label sets.
func Metrics(t testing.TB) (*telemetry.Metrics, func(name string) int64) {
	t.Helper()
	m, points := MetricPoints(t)
	return m, func(name string) int64 {
		var total int64
		for _, dp := range points(name) {
			total += dp.Value
		}
		return total
	}
}

// MetricPoints is Metrics with the counter's data points, one per label set, for tests of labels.
func MetricPoints(t testing.TB) (*telemetry.Metrics, func(name string) []metricdata.DataPoint[int64]) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	m, err := telemetry.NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	return m, func(name string) []metricdata.DataPoint[int64] {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		var out []metricdata.DataPoint[int64]
		for _, sm := range rm.ScopeMetrics {
			for _, md := range sm.Metrics {
				if sum, ok := md.Data.(metricdata.Sum[int64]); ok && md.Name == name {
					out = append(out, sum.DataPoints...)
				}
			}
		}
		return out
	}
}

// SyncBuffer is a bytes.Buffer that a logger on another goroutine and the test can share.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
