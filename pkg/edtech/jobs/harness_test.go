package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/schema"
	"github.com/pubq/pubq/pkg/edtech/seed"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
	"github.com/pubq/pubq/pkg/worker"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testQueues routes the edtech kinds as queues.yaml does, with short backoffs and enough attempts
// that a test can hold a job failing for a while and then let it through.
const testQueues = `
version: 1
defaults:
  ack_deadline: 10s
  max_delivery_attempts: 100
  message_retention: 1h
  key_retention: 2h
  concurrency: 16
  streams: 2
  timeout: 60s
  backoff: {initial: 50ms, multiplier: 2, max: 300ms, randomization: 0.2, max_attempts: 100}
queues:
  default:
    topic: pubq-default
    subscription: pubq-default-worker
    dead_letter_topic: pubq-default-dead
    dead_letter_subscription: pubq-default-dead-inspect
    kinds: [account.merge, students.scan]
  bulk:
    topic: pubq-bulk
    subscription: pubq-bulk-worker
    dead_letter_topic: pubq-bulk-dead
    dead_letter_subscription: pubq-bulk-dead-inspect
    kinds: [students.scan_range]
`

type bundle struct {
	project string
	dbURL   string
	client  *pubsub.Client
	st      *store.Store
	pool    *pgxpool.Pool
	cfg     *queue.Config
	pub     *publish.Client
	h       *jobs.Handlers
}

// setup gives a test its own emulator project with the queues bootstrapped and its own database
// with pubq's and the edtech schema. Start workers with run.
func setup(t testing.TB, queues string, hcfg jobs.Config) *bundle {
	t.Helper()
	return setupOn(t, queues, testenv.Postgres(t), hcfg)
}

// setupOn is setup on the database at dbURL.
func setupOn(t testing.TB, queues, dbURL string, hcfg jobs.Config) *bundle {
	t.Helper()
	e := pubqtest.NewOn(t, queues, dbURL)
	b := &bundle{project: e.Project, dbURL: dbURL, client: e.Client, st: e.Store, pool: e.Store.Pool(), cfg: e.Queues, pub: e.Pub}
	if err := schema.Apply(context.Background(), b.pool); err != nil {
		t.Fatal(err)
	}
	if hcfg.Publisher == nil {
		hcfg.Publisher = b.pub
	}
	if hcfg.Logger == nil {
		hcfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if b.h, err = jobs.New(hcfg); err != nil {
		t.Fatal(err)
	}
	return b
}

// run starts a worker (its own Pub/Sub client and store, as a separate process would have) and a
// relay; the returned function stops both and waits.
func (b *bundle) run(t testing.TB) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client, err := pubsub.NewClient(ctx, b.project)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{URL: b.dbURL, MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	mux := worker.NewMux()
	b.h.Register(mux)
	w, err := worker.New(client, st, mux, &worker.Config{Queues: b.cfg, Lease: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := publish.NewRelay(client, st, &publish.RelayConfig{Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = relay.Run(ctx) }()
	errc := make(chan error, 1)
	go func() { defer wg.Done(); errc <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			st.Close()
			client.Close()
			if err := <-errc; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (b *bundle) enqueue(t testing.TB, kind, key string, payload any) {
	t.Helper()
	data, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.pub.Enqueue(context.Background(), publish.Request{Kind: kind, Key: key, Payload: data}); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) seed(t testing.TB, students int, rate float64) *seed.Result {
	t.Helper()
	res, err := seed.Generate(context.Background(), b.pool, seed.Options{Students: students, DuplicateRate: rate, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Duplicates) == 0 {
		t.Fatal("the seed planted no duplicates")
	}
	return res
}

func (b *bundle) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (b *bundle) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := b.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (b *bundle) state(t testing.TB, key string) (state string, attempt int, deadReason string) {
	t.Helper()
	var reason *string
	err := b.pool.QueryRow(context.Background(), `SELECT state, attempt, dead_reason FROM pubq.jobs WHERE key = $1`, key).Scan(&state, &attempt, &reason)
	if err != nil && err != pgx.ErrNoRows {
		t.Fatal(err)
	}
	if reason != nil {
		deadReason = *reason
	}
	return state, attempt, deadReason
}

// keys lists the keys of kind's jobs with their states, sorted.
func (b *bundle) keys(t testing.TB, kind string) map[string]string {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `SELECT key, state FROM pubq.jobs WHERE kind = $1`, kind)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var k, s string
		if err := rows.Scan(&k, &s); err != nil {
			t.Fatal(err)
		}
		out[k] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitSettled waits until root has finished and no job is left unfinished: every job of a fan-out
// is enqueued in the transaction that finishes its parent, so nothing can appear after that.
func (b *bundle) waitSettled(t testing.TB, timeout time.Duration, roots ...string) {
	t.Helper()
	waitFor(t, timeout, "the fan-out to settle", func() bool {
		for _, r := range roots {
			if s, _, _ := b.state(t, r); s != "succeeded" && s != "dead" && s != "cancelled" {
				return false
			}
		}
		return b.count(t, `SELECT count(*) FROM pubq.jobs WHERE state NOT IN ('succeeded', 'dead', 'cancelled')`) == 0
	})
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fingerprint hashes every row of every edtech table except the merge audit: equal fingerprints
// mean no data changed.
func (b *bundle) fingerprint(t testing.TB) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := b.pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public'
		AND tablename NOT IN ('merge_audit', $1) ORDER BY 1`, schema.VersionTable)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tb := range tables {
		var sum *string
		q := fmt.Sprintf(`SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM %s t`, pgx.Identifier{tb}.Sanitize())
		if err := b.pool.QueryRow(ctx, q).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		out[tb] = "empty"
		if sum != nil {
			out[tb] = *sum
		}
	}
	return out
}

func diffFingerprints(before, after map[string]string) string {
	var changed []string
	for k, v := range before {
		if after[k] != v {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	return strings.Join(changed, ", ")
}

// runHandler runs one handler in its own transaction, as the worker would, and commits on success.
func runHandler(t testing.TB, pool *pgxpool.Pool, h func(context.Context, pgx.Tx, *job.Job) error, kind, key string, payload any) error {
	t.Helper()
	data, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return h(ctx, tx, &job.Job{ID: key, Kind: kind, Key: key, Payload: data, Attempt: 1})
	})
}
