package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
	"github.com/pubq/pubq/pkg/worker"
)

// The end-to-end queues: short deadlines and backoff so a test finishes in seconds.
const e2eQueues = `
version: 1
defaults:
  ack_deadline: 10s
  max_delivery_attempts: 10
  message_retention: 1h
  key_retention: 2h
  concurrency: 8
  streams: 1
  timeout: 30s
  backoff: {initial: 100ms, multiplier: 2, max: 1s, randomization: 0.2, max_attempts: 3}
queues:
  default:
    topic: e2e-default
    subscription: e2e-default-worker
    dead_letter_topic: e2e-default-dead
    dead_letter_subscription: e2e-default-dead-inspect
    kinds: [test.flip]
`

// execution is one run of the test handler.
type execution struct {
	key      string
	attempt  int
	prevTP   string // pubq_prev_traceparent as the handler saw it
	hadRetry bool   // pubq_attempt was present (it must not be on a replay)
}

// flipper is a handler that fails permanently until flipped, and records every execution.
type flipper struct {
	ok   atomic.Bool
	mu   sync.Mutex
	runs []execution
}

func (f *flipper) work(_ context.Context, j *job.Job) error {
	f.mu.Lock()
	_, retry := j.Attributes[job.AttrAttempt]
	f.runs = append(f.runs, execution{key: j.Key, attempt: j.Attempt, prevTP: j.Attributes[job.AttrPrevTraceParent], hadRetry: retry})
	f.mu.Unlock()
	if f.ok.Load() {
		return nil
	}
	return job.Permanent(errors.New("downstream rejected the request (test handler not flipped yet)"))
}

func (f *flipper) executions(key string) []execution {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []execution
	for _, e := range f.runs {
		if e.key == key {
			out = append(out, e)
		}
	}
	return out
}

// e2e is a test's whole system: emulator project with the queues bootstrapped, its own database, a
// producer client, and (after start) a worker and a relay in this process.
type e2e struct {
	*env
	project string
	client  *pubsub.Client
	st      *store.Store
	cfg     *queue.Config
	pub     *publish.Client
	handler *flipper
}

func setupE2E(t *testing.T) *e2e {
	t.Helper()
	s := pubqtest.New(t, e2eQueues)
	e := &e2e{project: s.Project, handler: &flipper{}, client: s.Client, st: s.Store, cfg: s.Queues, pub: s.Pub}
	path := filepath.Join(t.TempDir(), "queues.yaml")
	if err := os.WriteFile(path, []byte(e2eQueues), 0o644); err != nil {
		t.Fatal(err)
	}
	e.env = &env{vars: map[string]string{"PUBQ_DATABASE_URL": s.DBURL, "PUBQ_QUEUES": path, "PUBQ_ACTOR": "oncall@example.com"}, pool: e.st.Pool()}
	return e
}

// start runs a worker (with a tracer, so attempts have traceparents) and a relay until the test ends.
func (e *e2e) start(t *testing.T, lease time.Duration) {
	t.Helper()
	mux := worker.NewMux()
	mux.HandleFunc("test.flip", e.handler.work)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	w, err := worker.New(e.client, e.st, mux, &worker.Config{Queues: e.cfg, Lease: lease, Logger: quiet, TracerProvider: tp,
		ShutdownTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := publish.NewRelay(e.client, e.st, &publish.RelayConfig{Poll: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = relay.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func (e *e2e) enqueue(t *testing.T, key string) {
	t.Helper()
	if _, err := e.pub.Enqueue(context.Background(), publish.Request{Kind: "test.flip", Key: key, Payload: []byte(`{"order":42}`)}); err != nil {
		t.Fatal(err)
	}
}

func (e *e2e) job(t *testing.T, key string) *inspect.JobInfo {
	t.Helper()
	j, err := inspect.New(e.st.Pool(), e.cfg).Job(context.Background(), key, false)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReplayEndToEnd(t *testing.T) {
	t.Parallel()
	e := setupE2E(t)
	e.start(t, 5*time.Second)
	e.enqueue(t, "order-42")

	waitFor(t, 30*time.Second, "the job to be dead-lettered", func() bool { return e.state(t, "order-42") == "dead" })
	dead := e.job(t, "order-42")
	if n := len(e.handler.executions("order-42")); n != 1 {
		t.Fatalf("%d executions before the replay, want 1 (a permanent failure is not retried)", n)
	}
	if dead.DeadReason != job.ReasonPermanent || dead.TraceParent == "" || len(dead.Attempts) != 1 || dead.Attempts[0].Outcome != "dead" {
		t.Fatalf("dead job = %+v, attempts %+v", dead, dead.Attempts)
	}

	e.handler.ok.Store(true)
	code, stdout, stderr := e.run(t, "replay", "order-42")
	if code != 0 || !strings.Contains(stdout, "replayed 1 of 1") {
		t.Fatalf("pubqctl replay: %d %q %q", code, stdout, stderr)
	}
	waitFor(t, 30*time.Second, "the replayed job to succeed", func() bool { return e.state(t, "order-42") == "succeeded" })
	runs := e.handler.executions("order-42")
	if len(runs) != 2 {
		t.Fatalf("%d executions after the replay, want 2", len(runs))
	}
	if r := runs[1]; r.attempt != 1 || r.hadRetry || r.prevTP != dead.TraceParent {
		t.Errorf("the replayed execution = %+v; want attempt 1, no pubq_attempt, pubq_prev_traceparent %q", r, dead.TraceParent)
	}
	done := e.job(t, "order-42")
	if done.Attempt != 1 || done.Fence <= dead.Fence || done.TraceID == "" || done.TraceID == dead.TraceID {
		t.Errorf("after the replay: attempt %d fence %d (was %d), trace %s (dead attempt's %s)", done.Attempt, done.Fence, dead.Fence, done.TraceID, dead.TraceID)
	}

	// Replaying again does nothing: the job is not dead any more.
	code, stdout, _ = e.run(t, "replay", "order-42")
	if code != 0 || !strings.Contains(stdout, "job is succeeded, not dead: nothing to replay") {
		t.Fatalf("second replay: %d %q", code, stdout)
	}
	time.Sleep(time.Second) // a stray republish would run within this
	if n := len(e.handler.executions("order-42")); n != 2 {
		t.Fatalf("%d executions after the second replay, want still 2", n)
	}

	rows, err := e.st.Pool().Query(context.Background(), `SELECT actor, action, detail->>'result' FROM pubq.audit WHERE job_key = 'order-42' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var audit []string
	for rows.Next() {
		var actor, action, result string
		if err := rows.Scan(&actor, &action, &result); err != nil {
			t.Fatal(err)
		}
		audit = append(audit, actor+" "+action+" "+result)
	}
	if want := "oncall@example.com replay replayed,oncall@example.com replay noop"; strings.Join(audit, ",") != want {
		t.Errorf("audit = %v, want %s", audit, want)
	}
	// The job page shows both generations of attempts and the operator history.
	code, stdout, _ = e.run(t, "job", "order-42")
	if code != 0 || !strings.Contains(stdout, "downstream rejected the request") || !strings.Contains(stdout, "succeeded") || !strings.Contains(stdout, "oncall@example.com") {
		t.Errorf("pubqctl job after the replay:\n%s", stdout)
	}
}

func TestStuckJobIsRescued(t *testing.T) {
	t.Parallel()
	e := setupE2E(t)
	e.handler.ok.Store(true)
	e.enqueue(t, "orphan-1")
	// The message reached a worker that then died: no outbox row is left to publish, no redelivery
	// will come, and the job is held under a lease nobody renews.
	e.exec(t, `DELETE FROM pubq.outbox WHERE job_key = 'orphan-1'`)
	b, err := store.NewBatcher(e.st, store.BatcherConfig{Owner: "doomed-worker", Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	j := e.job(t, "orphan-1")
	b.Enter()
	claim, err := b.Claim(context.Background(), store.ClaimRequest{Key: j.Key, ID: j.ID, Queue: j.Queue, Kind: j.Kind, MaxAttempts: 3})
	b.Leave()
	b.Close()
	if err != nil || claim.Status != store.Claimed {
		t.Fatalf("claim: %+v %v", claim, err)
	}
	claimedAt := time.Now()

	const every, grace = 200 * time.Millisecond, 500 * time.Millisecond
	e.start(t, 5*time.Second)
	var logs pubqtest.SyncBuffer
	r, err := inspect.NewRescuer(e.st, e.cfg, &inspect.RescuerConfig{Every: every, Grace: grace,
		Logger: telemetry.NewLogger(&logs, telemetry.LoggerOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rescuerDone := make(chan error, 1)
	go func() { rescuerDone <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-rescuerDone })

	// While the lease runs the job shows as running; once it expires, as stuck.
	if s := e.job(t, "orphan-1"); s.State != "running" || s.Stuck {
		t.Fatalf("freshly claimed job: %s stuck=%v", s.State, s.Stuck)
	}
	// Lease (1s) + grace + one period, plus the relay, the emulator and a busy machine.
	limit := time.Second + grace + every + 10*time.Second
	waitFor(t, limit, "the rescued job to succeed", func() bool { return e.state(t, "orphan-1") == "succeeded" })
	t.Logf("rescued and finished %s after the claim", time.Since(claimedAt).Round(time.Millisecond))
	if n := len(e.handler.executions("orphan-1")); n != 1 {
		t.Fatalf("%d executions, want 1 (the dead worker never ran it)", n)
	}
	done := e.job(t, "orphan-1")
	if done.Attempt != 2 || done.Fence != claim.Fence+2 {
		t.Errorf("after the rescue: attempt %d fence %d; want attempt 2 (the lost one counts) and fence %d", done.Attempt, done.Fence, claim.Fence+2)
	}
	if !strings.Contains(logs.String(), "rescued stuck job") || !strings.Contains(logs.String(), `"job_key":"orphan-1"`) {
		t.Errorf("rescuer log: %s", logs.String())
	}
}
