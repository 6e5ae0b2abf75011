package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pubq/pubq/pkg/admin"
	"github.com/pubq/pubq/pkg/demo"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
	"github.com/pubq/pubq/pkg/testenv"
	"github.com/pubq/pubq/pkg/worker"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testQueues = `
version: 1
defaults:
  ack_deadline: 10s
  max_delivery_attempts: 10
  message_retention: 1h
  key_retention: 2h
  concurrency: 16
  streams: 2
  timeout: 30s
  backoff: {initial: 100ms, multiplier: 2, max: 1s, randomization: 0.2, max_attempts: 3}
queues:
  critical:
    topic: pubq-critical
    subscription: pubq-critical-worker
    dead_letter_topic: pubq-critical-dead
    dead_letter_subscription: pubq-critical-dead-inspect
    kinds: [demo.payment]
  default:
    topic: pubq-default
    subscription: pubq-default-worker
    dead_letter_topic: pubq-default-dead
    dead_letter_subscription: pubq-default-dead-inspect
    kinds: [demo.record, demo.flaky, test.slow, test.takeover, test.takeover_tx, test.commitfail, test.fanout]
  bulk:
    topic: pubq-bulk
    subscription: pubq-bulk-worker
    dead_letter_topic: pubq-bulk-dead
    dead_letter_subscription: pubq-bulk-dead-inspect
    kinds: [demo.email, test.nohandler, test.block]
`

type bundle struct {
	project string
	client  *pubsub.Client
	st      *store.Store
	cfg     *queue.Config
	pub     *publish.Client
	mux     *worker.Mux
}

// setup gives a test its own emulator project with the queues bootstrapped, its own database, and a
// mux with the demo handlers. Start the worker with run.
func setup(t *testing.T) *bundle {
	t.Helper()
	e := pubqtest.New(t, testQueues)
	b := &bundle{project: e.Project, client: e.Client, st: e.Store, cfg: e.Queues, pub: e.Pub}
	if err := demo.Migrate(context.Background(), b.st.Pool()); err != nil {
		t.Fatal(err)
	}
	b.mux = worker.NewMux()
	demo.Register(b.mux)
	return b
}

// run starts a worker and a relay; it returns a function that stops both and waits.
func (b *bundle) run(t *testing.T, cfg worker.Config) (stop func()) {
	t.Helper()
	cfg.Queues = b.cfg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Lease == 0 {
		cfg.Lease = 5 * time.Second
	}
	w, err := worker.New(b.client, b.st, b.mux, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	relay, err := publish.NewRelay(b.client, b.st, &publish.RelayConfig{Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
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
			if err := <-errc; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (b *bundle) effects(t *testing.T, key string) int {
	t.Helper()
	var n int
	if err := b.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM demo_effects WHERE job_key = $1`, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (b *bundle) jobState(t *testing.T, key string) (state string, attempt int) {
	t.Helper()
	_ = b.st.Pool().QueryRow(context.Background(), `SELECT state, attempt FROM pubq.jobs WHERE key = $1`, key).Scan(&state, &attempt)
	return state, attempt
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

func (b *bundle) enqueue(t *testing.T, kind, key string, p demo.Payload) publish.Result {
	t.Helper()
	data, _ := json.Marshal(p)
	r, err := b.pub.Enqueue(context.Background(), publish.Request{Kind: kind, Key: key, Payload: data})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// publishRaw publishes straight to a topic, as a foreign publisher would.
func (b *bundle) publishRaw(t *testing.T, topic string, data []byte, attrs map[string]string) {
	t.Helper()
	p := b.client.Publisher(topic)
	defer p.Stop()
	if _, err := p.Publish(context.Background(), &pubsub.Message{Data: data, Attributes: attrs}).Get(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// pullDead receives n messages from a queue's dead-letter inspection subscription.
func (b *bundle) pullDead(t *testing.T, sub string, n int, timeout time.Duration) []*pubsub.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var mu sync.Mutex
	var got []*pubsub.Message
	err := b.client.Subscriber(sub).Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		got = append(got, m)
		if len(got) == n {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < n {
		t.Fatalf("dead-letter subscription %s: got %d messages, want %d", sub, len(got), n)
	}
	return got
}

func TestJobsRunOnceAcrossQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.run(t, worker.Config{})
	kinds := []string{"demo.payment", "demo.record", "demo.email"}
	for i := range 60 {
		b.enqueue(t, kinds[i%3], fmt.Sprintf("job-%d", i), demo.Payload{Note: fmt.Sprint(i)})
	}
	waitFor(t, 30*time.Second, "60 effects", func() bool {
		var n int
		_ = b.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM demo_effects`).Scan(&n)
		return n >= 60
	})
	var rows, keys int
	var payloadOK bool
	_ = b.st.Pool().QueryRow(context.Background(), `SELECT count(*), count(DISTINCT job_key),
		bool_and(payload->>'note' = substr(job_key, 5)) FROM demo_effects`).Scan(&rows, &keys, &payloadOK)
	if rows != 60 || keys != 60 || !payloadOK {
		t.Fatalf("effects rows %d distinct %d payloads match %v", rows, keys, payloadOK)
	}
	var queues int
	_ = b.st.Pool().QueryRow(context.Background(), `SELECT count(DISTINCT queue) FROM demo_effects`).Scan(&queues)
	if queues != 3 {
		t.Fatalf("jobs ran on %d queues, want 3", queues)
	}
}

func TestRetryThenSucceed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.run(t, worker.Config{})
	b.enqueue(t, "demo.flaky", "flaky-1", demo.Payload{FailTimes: 2})
	waitFor(t, 30*time.Second, "the flaky job to succeed", func() bool { s, _ := b.jobState(t, "flaky-1"); return s == "succeeded" })
	if s, a := b.jobState(t, "flaky-1"); a != 3 {
		t.Fatalf("state %s attempt %d; want succeeded on attempt 3", s, a)
	}
	if n := b.effects(t, "flaky-1"); n != 1 {
		t.Fatalf("effects %d", n)
	}
	var failures int
	_ = b.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pubq.attempts WHERE job_key = 'flaky-1' AND outcome = 'retry' AND error LIKE 'demo: asked to fail%'`).Scan(&failures)
	if failures != 2 {
		t.Fatalf("two failed attempts recorded, got %d", failures)
	}
}

func TestExhaustedAndPermanentAreDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.run(t, worker.Config{})
	b.enqueue(t, "demo.flaky", "always-fails", demo.Payload{FailTimes: 99})
	b.enqueue(t, "demo.record", "permanent", demo.Payload{Permanent: true})
	msgs := b.pullDead(t, "pubq-default-dead-inspect", 2, 30*time.Second)
	byKey := map[string]*pubsub.Message{}
	for _, m := range msgs {
		byKey[m.Attributes[job.AttrKey]] = m
	}
	ex, perm := byKey["always-fails"], byKey["permanent"]
	if ex == nil || perm == nil {
		t.Fatalf("dead letters: %v", byKey)
	}
	if ex.Attributes[job.AttrDeadReason] != job.ReasonExhausted || ex.Attributes[job.AttrDeadAttempts] != "3" ||
		!strings.Contains(ex.Attributes[job.AttrDeadError], "asked to fail") || ex.Attributes[job.AttrKind] != "demo.flaky" {
		t.Errorf("exhausted dead letter attributes: %v", ex.Attributes)
	}
	if _, err := time.Parse(time.RFC3339Nano, ex.Attributes[job.AttrDeadAt]); err != nil || ex.Attributes[job.AttrDeadQueue] != "default" {
		t.Errorf("dead letter time and queue: %v", ex.Attributes)
	}
	if perm.Attributes[job.AttrDeadReason] != job.ReasonPermanent || perm.Attributes[job.AttrDeadAttempts] != "1" {
		t.Errorf("permanent dead letter attributes: %v", perm.Attributes)
	}
	if string(perm.Data) != `{"permanent":true}` {
		t.Errorf("dead letter keeps the payload, got %s", perm.Data)
	}
	for _, k := range []string{"always-fails", "permanent"} {
		if s, _ := b.jobState(t, k); s != "dead" {
			t.Errorf("%s: state %s, want dead", k, s)
		}
		if b.effects(t, k) != 0 {
			t.Errorf("%s: a failed job has no effect", k)
		}
	}
}

func TestBadMessagesAreDeadLetteredAndWorkerKeepsRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m, points := pubqtest.MetricPoints(t)
	var logs pubqtest.SyncBuffer
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	b.run(t, worker.Config{Metrics: m, Logger: telemetry.NewLogger(&logs, telemetry.LoggerOptions{}), TracerProvider: tp})
	b.publishRaw(t, "pubq-bulk", []byte("not a job"), map[string]string{"origin": "legacy"})
	b.publishRaw(t, "pubq-bulk", []byte(`{}`), map[string]string{job.AttrKind: "test.nohandler", job.AttrKey: "nh-1"})
	b.publishRaw(t, "pubq-bulk", []byte(`{}`), map[string]string{job.AttrKind: "demo.record", job.AttrKey: "wrong-queue"})
	msgs := b.pullDead(t, "pubq-bulk-dead-inspect", 3, 30*time.Second)
	reasons := map[string]string{}
	for _, m := range msgs {
		k := m.Attributes[job.AttrKey]
		if k == "" {
			k = "raw:" + m.Attributes["origin"]
		}
		reasons[k] = m.Attributes[job.AttrDeadReason]
		if m.Attributes[job.AttrDeadError] == "" || m.Attributes[job.AttrDeadQueue] != "bulk" {
			t.Errorf("dead letter %s lacks error/queue: %v", k, m.Attributes)
		}
	}
	want := map[string]string{"raw:legacy": job.ReasonUndecodable, "nh-1": job.ReasonUnknownKind, "wrong-queue": job.ReasonUnknownKind}
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Fatalf("reasons %v, want %v", reasons, want)
	}
	// Kinds a publisher made up are not metric labels (each would be a series for ever).
	var dead int64
	for _, dp := range points("pubq.jobs.dead_lettered") {
		if k, _ := dp.Attributes.Value(telemetry.MetricKeyKind); k.AsString() != "unknown" {
			t.Errorf("dead-lettered counted under kind %q", k.AsString())
		}
		dead += dp.Value
	}
	if dead != 3 {
		t.Errorf("pubq.jobs.dead_lettered = %d, want 3", dead)
	}
	// Each line says which job it was where the message named one, and which trace. (A line is written
	// just after its dead letter is durable, so the last may trail the topic by a moment.)
	waitFor(t, 10*time.Second, "three dead-letter log lines", func() bool {
		return strings.Count(logs.String(), `"msg":"message dead-lettered"`) >= 3
	})
	lines := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil || l["msg"] != "message dead-lettered" {
			continue
		}
		lines++
		if l["trace_id"] == nil || l["span_id"] == nil || l["job_queue"] != nil && l["job_queue"] != "bulk" {
			t.Errorf("dead-letter line without its trace: %s", line)
		}
		if l["reason"] == job.ReasonUnknownKind && (l["job_key"] == nil || l["job_kind"] == nil) {
			t.Errorf("unknown-kind dead-letter line without the job's key and kind: %s", line)
		}
		if strings.Contains(line, "not a job") {
			t.Errorf("a payload reached the log: %s", line)
		}
	}
	if lines != 3 {
		t.Errorf("%d dead-letter log lines, want 3:\n%s", lines, logs.String())
	}
	// Still running: a good job after the bad ones succeeds.
	b.enqueue(t, "demo.email", "after-bad", demo.Payload{})
	waitFor(t, 20*time.Second, "a job after bad messages", func() bool { s, _ := b.jobState(t, "after-bad"); return s == "succeeded" })

	// A redelivery of the dead-lettered unknown kind (as after a lost ack), and an unknown kind under
	// the key of a finished job (as from a worker version that handles it): duplicates, not dead letters.
	b.publishRaw(t, "pubq-bulk", []byte(`{}`), map[string]string{job.AttrKind: "test.nohandler", job.AttrKey: "nh-1"})
	b.publishRaw(t, "pubq-bulk", []byte(`{}`), map[string]string{job.AttrKind: "test.nohandler", job.AttrKey: "after-bad"})
	sum := func(name string) (n int64) {
		for _, dp := range points(name) {
			n += dp.Value
		}
		return n
	}
	waitFor(t, 20*time.Second, "two duplicates skipped", func() bool { return sum("pubq.jobs.duplicate_skipped") >= 2 })
	if n := sum("pubq.jobs.dead_lettered"); n != 3 {
		t.Errorf("pubq.jobs.dead_lettered = %d after two duplicates, want still 3", n)
	}
	if s, _ := b.jobState(t, "after-bad"); s != "succeeded" {
		t.Errorf("a finished job's key was dead-lettered by an unknown kind: state %s", s)
	}
}

// 50 deliveries of one key published concurrently by a foreign publisher: one execution.
func TestDuplicateDeliveriesRunOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m, counter := pubqtest.Metrics(t)
	b.run(t, worker.Config{Metrics: m})
	p := b.client.Publisher("pubq-default")
	var results []*pubsub.PublishResult
	for range 50 {
		results = append(results, p.Publish(context.Background(), &pubsub.Message{Data: []byte(`{"sleep_ms":300}`),
			Attributes: map[string]string{job.AttrKind: "demo.record", job.AttrKey: "dup"}}))
	}
	for _, r := range results {
		if _, err := r.Get(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop()
	waitFor(t, 30*time.Second, "the job to succeed", func() bool { s, _ := b.jobState(t, "dup"); return s == "succeeded" })
	waitFor(t, 20*time.Second, "every duplicate to be skipped", func() bool { return counter("pubq.jobs.duplicate_skipped") >= 49 })
	if n := b.effects(t, "dup"); n != 1 {
		t.Fatalf("50 deliveries ran the job %d times", n)
	}
	if skipped := counter("pubq.jobs.duplicate_skipped"); skipped != 49 {
		t.Fatalf("49 duplicates must be skipped, metric says %d", skipped)
	}
}

// The ack deadline runs out while the handler still runs (no extension): Pub/Sub redelivers, and the
// redelivery waits on the lease instead of running the job a second time.
func TestRedeliveryDuringRunIsNotRunTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m, counter := pubqtest.Metrics(t)
	b.run(t, worker.Config{MaxExtension: -1, BusyPoll: 500 * time.Millisecond, Metrics: m})
	b.enqueue(t, "demo.record", "slow", demo.Payload{SleepMS: 13000})
	waitFor(t, 40*time.Second, "the slow job", func() bool { s, _ := b.jobState(t, "slow"); return s == "succeeded" })
	time.Sleep(time.Second)
	if n := b.effects(t, "slow"); n != 1 {
		t.Fatalf("effects %d, want 1", n)
	}
	// The test is only meaningful if Pub/Sub did redeliver while the job ran.
	if started, skipped := counter("pubq.jobs.started"), counter("pubq.jobs.duplicate_skipped"); started != 1 || skipped < 1 {
		t.Fatalf("started %d (want 1), duplicates skipped %d (want ≥ 1: no redelivery happened)", started, skipped)
	}
}

func TestSnooze(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m, counter := pubqtest.Metrics(t)
	b.run(t, worker.Config{Metrics: m})
	start := time.Now()
	b.enqueue(t, "demo.record", "snoozer", demo.Payload{SnoozeMS: 1500})
	waitFor(t, 20*time.Second, "the snoozed job", func() bool { return b.effects(t, "snoozer") == 1 })
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("ran after %s, before its snooze ended", d)
	}
	if _, a := b.jobState(t, "snoozer"); a != 1 {
		t.Fatalf("a snooze does not use an attempt: attempt %d", a)
	}
	// Asking for later is not a failure: no error rate, no retry.
	waitFor(t, 5*time.Second, "the second run to be counted", func() bool { return counter("pubq.jobs.succeeded") == 1 })
	if st, sn, f, r := counter("pubq.jobs.started"), counter("pubq.jobs.snoozed"), counter("pubq.jobs.failed"), counter("pubq.jobs.retried"); st != 2 || sn != 1 || f != 0 || r != 0 {
		t.Errorf("started %d, snoozed %d, failed %d, retried %d; want 2, 1, 0, 0", st, sn, f, r)
	}
}

func TestDelayedJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.run(t, worker.Config{})
	start := time.Now()
	if _, err := b.pub.Enqueue(context.Background(), publish.Request{Kind: "demo.record", Key: "later", Payload: []byte(`{}`), RunIn: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if s, _ := b.jobState(t, "later"); s != "scheduled" {
		t.Fatalf("state %s", s)
	}
	waitFor(t, 20*time.Second, "the delayed job", func() bool { return b.effects(t, "later") == 1 })
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("ran after %s, before it was due", d)
	}
}

// A panicking handler and a handler that outlives its timeout both fail the attempt; the worker lives on.
func TestPanicAndTimeoutFailTheAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var mu sync.Mutex
	calls := map[int]int{}
	b.mux.HandleFunc("test.slow", func(ctx context.Context, j *job.Job) error {
		mu.Lock()
		calls[j.Attempt]++
		mu.Unlock()
		switch j.Attempt {
		case 1:
			panic("boom")
		case 2:
			<-ctx.Done() // the per-job timeout (30s in the config) is shortened below
			return ctx.Err()
		}
		return nil
	})
	cfg := worker.Config{}
	def, _ := b.cfg.Queue("default")
	def.KindOverrides["test.slow"] = queue.KindOverride{Timeout: 300 * time.Millisecond}
	stop := b.run(t, cfg)
	b.enqueue(t, "test.slow", "p1", demo.Payload{})
	waitFor(t, 20*time.Second, "third attempt to succeed", func() bool { s, _ := b.jobState(t, "p1"); return s == "succeeded" })
	// Every attempt was settled (two retries recorded, one success), so the worker deleted their
	// claim records, the last one as it stopped.
	stop()
	var records int
	if err := b.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pubq.claims`).Scan(&records); err != nil || records != 0 {
		t.Fatalf("claim records left after settled attempts: %d %v", records, err)
	}
	var errs []string
	rows, _ := b.st.Pool().Query(context.Background(), `SELECT error FROM pubq.attempts WHERE job_key = 'p1' ORDER BY attempt`)
	for rows.Next() {
		var e string
		_ = rows.Scan(&e)
		errs = append(errs, e)
	}
	if len(errs) != 2 || !strings.Contains(errs[0], "panicked: boom") || !strings.Contains(errs[1], "timed out") {
		t.Fatalf("attempt errors: %q", errs)
	}
}

func TestNewValidates(t *testing.T) {
	cfg, _ := queue.Parse([]byte(testQueues))
	st := &store.Store{}
	client := &pubsub.Client{}
	if _, err := worker.New(client, st, worker.NewMux(), &worker.Config{Queues: cfg}); err == nil {
		t.Error("a mux without handlers for any configured kind must be rejected")
	}
	mux := worker.NewMux()
	demo.Register(mux)
	if _, err := worker.New(client, st, mux, &worker.Config{}); err == nil {
		t.Error("missing Queues must be rejected")
	}
	if _, err := worker.New(client, st, mux, &worker.Config{Queues: cfg, Only: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown queue in Only: %v", err)
	}
	if _, err := worker.New(client, st, mux, &worker.Config{Queues: cfg, Lease: time.Millisecond}); err == nil {
		t.Error("a sub-second lease must be rejected")
	}
}

// When one queue's receive fails, the worker shuts down: the other queues' running jobs get
// ShutdownTimeout, then their contexts end, and Run returns the failure. (It used to wait for the
// other queues' handlers with no limit, so a handler waiting on its context kept it up for ever.)
func TestReceiveFailureShutsDownTheOtherQueues(t *testing.T) {
	b := setup(t)
	m, counter := pubqtest.Metrics(t)
	var logs pubqtest.SyncBuffer
	errc, _ := b.runBlockJobWith(t, worker.Config{ShutdownTimeout: time.Second, Metrics: m,
		Logger: telemetry.NewLogger(&logs, telemetry.LoggerOptions{})}, "blocker", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	// critical's subscription goes away under the running worker: its receive fails.
	if err := b.client.SubscriptionAdminClient.DeleteSubscription(context.Background(), &pubsubpb.DeleteSubscriptionRequest{
		Subscription: admin.SubscriptionName(b.project, "pubq-critical-worker")}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), `"critical"`) {
			t.Fatalf("Run returned %v, want critical's receive error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after a queue's receive failed")
	}
	if s, _ := b.jobState(t, "blocker"); s != "pending" {
		t.Errorf("the job cut off by the shutdown is %s, want pending (released for the next delivery)", s)
	}
	// Cut off, not failed: no retry follows from it, and the log says so.
	if a, f := counter("pubq.jobs.abandoned"), counter("pubq.jobs.failed"); a != 1 || f != 0 {
		t.Errorf("abandoned %d, failed %d; want 1 and 0", a, f)
	}
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"job attempt finished"`) {
			_ = json.Unmarshal([]byte(l), &line)
		}
	}
	if line["outcome"] != "abandoned" || !strings.Contains(fmt.Sprint(line["cause"]), "shut") || line["job_key"] != "blocker" {
		t.Errorf("the attempt's end is logged as %v, want outcome abandoned with the shutdown as cause:\n%s", line, logs.String())
	}
}

// A handler that succeeds after the shutdown timeout fired (it did not watch its context) still
// completes its job: running it again would repeat a finished job's side effects.
func TestJobFinishedPastShutdownTimeoutIsCompleted(t *testing.T) {
	b := setup(t)
	errc, cancel := b.runBlockJob(t, 500*time.Millisecond, "late-finisher", func(context.Context) error {
		time.Sleep(1500 * time.Millisecond) // ignores ctx, which ends after 500ms
		return nil
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if s, _ := b.jobState(t, "late-finisher"); s != "succeeded" {
		t.Errorf("state %s, want succeeded", s)
	}
}

// runBlockJob runs a worker with the given ShutdownTimeout and h as the handler of test.block (on
// bulk), publishes one such job under key, and returns once h has started: Run's result arrives on
// the channel; cancel asks the worker to stop.
func (b *bundle) runBlockJob(t *testing.T, shutdown time.Duration, key string, h func(context.Context) error) (<-chan error, context.CancelFunc) {
	t.Helper()
	return b.runBlockJobWith(t, worker.Config{ShutdownTimeout: shutdown}, key, h)
}

// runBlockJobWith is runBlockJob with cfg (its Queues, Lease and a missing Logger filled in).
func (b *bundle) runBlockJobWith(t *testing.T, cfg worker.Config, key string, h func(context.Context) error) (<-chan error, context.CancelFunc) {
	t.Helper()
	started := make(chan struct{}, 1)
	b.mux.HandleFunc("test.block", func(ctx context.Context, _ *job.Job) error {
		started <- struct{}{}
		return h(ctx)
	})
	cfg.Queues, cfg.Lease = b.cfg, 5*time.Second
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w, err := worker.New(b.client, b.st, b.mux, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	b.publishRaw(t, "pubq-bulk", []byte(`{}`), map[string]string{job.AttrKind: "test.block", job.AttrKey: key})
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatalf("job %s never started", key)
	}
	return errc, cancel
}

// A run whose job is taken over while it runs (its lease lapsed and a new holder claimed it, which
// bumps the fence) finds out at its own fenced statement: the completion, the failure, or a
// transactional handler's commit. Each such run counts one lost lease, settles without an outcome of
// its own (its claim record can go), and the redelivery runs the job to its end under the new fence.
func TestTakenOverRunCountsOneLostLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var mu sync.Mutex
	attempts := map[string][]int{}
	// As a new holder's claim of the lapsed lease would, leaving a lease that has run out again, so the
	// redelivery can claim the job in turn.
	takeOver := func(ctx context.Context, j *job.Job) error {
		mu.Lock()
		attempts[j.Key] = append(attempts[j.Key], j.Attempt)
		mu.Unlock()
		if j.Attempt > 1 {
			return nil
		}
		_, err := b.st.Pool().Exec(ctx, `UPDATE pubq.jobs SET fence = fence + 1, lease_until = now() - interval '1 second' WHERE key = $1`, j.Key)
		return err
	}
	b.mux.HandleFunc("test.takeover", func(ctx context.Context, j *job.Job) error {
		if err := takeOver(ctx, j); err != nil || j.Attempt > 1 {
			return err
		}
		if strings.HasSuffix(j.Key, "-fail") {
			return fmt.Errorf("failed after losing the job")
		}
		return nil
	})
	b.mux.HandleTx("test.takeover_tx", worker.TxHandlerFunc(func(ctx context.Context, _ pgx.Tx, j *job.Job) error {
		return takeOver(ctx, j)
	}))
	m, counter := pubqtest.Metrics(t)
	var logs pubqtest.SyncBuffer
	// A long lease: no renewal runs while a test handler moves the fence, so each run finds out at its
	// own statement.
	stop := b.run(t, worker.Config{Metrics: m, Lease: time.Minute, Logger: telemetry.NewLogger(&logs, telemetry.LoggerOptions{})})
	keys := map[string]string{"lost-complete": "test.takeover", "lost-fail": "test.takeover", "lost-commit": "test.takeover_tx"}
	for key, kind := range keys {
		b.enqueue(t, kind, key, demo.Payload{})
	}
	for key := range keys {
		waitFor(t, 30*time.Second, key+" to succeed", func() bool { s, _ := b.jobState(t, key); return s == "succeeded" })
	}
	stop() // the batcher's last round trip deletes the settled claim records

	mu.Lock()
	defer mu.Unlock()
	for key := range keys {
		if got := fmt.Sprint(attempts[key]); got != "[1 2]" {
			t.Errorf("%s ran attempts %s, want [1 2]: the taken-over run, then the redelivery", key, got)
		}
		if _, attempt := b.jobState(t, key); attempt != 2 {
			t.Errorf("%s finished at attempt %d, want 2", key, attempt)
		}
	}
	if lost := counter("pubq.leases.lost"); lost != 3 {
		t.Errorf("pubq.leases.lost = %d, want 3 (one per taken-over run)", lost)
	}
	// Every started attempt ends in exactly one outcome: the two taken over before their completion
	// landed are abandoned; lost-fail's handler did fail.
	st, s, f, a := counter("pubq.jobs.started"), counter("pubq.jobs.succeeded"), counter("pubq.jobs.failed"), counter("pubq.jobs.abandoned")
	if st != 6 || s != 3 || f != 1 || a != 2 {
		t.Errorf("started %d, succeeded %d, failed %d, abandoned %d; want 6, 3 (the attempts 2), 1 (lost-fail's attempt 1), 2", st, s, f, a)
	}
	if n := counter("pubq.jobs.retried") + counter("pubq.jobs.dead_lettered"); n != 0 {
		t.Errorf("%d retries or dead letters recorded by runs that had lost their job", n)
	}
	if strings.Contains(logs.String(), "recording the failure failed") || strings.Count(logs.String(), "lease lost before the failure was recorded") != 1 {
		t.Errorf("want the failed run's takeover logged as such, once:\n%s", logs.String())
	}
	var records int
	if err := b.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pubq.claims`).Scan(&records); err != nil {
		t.Fatal(err)
	}
	if records != 0 {
		t.Errorf("%d claim records left: a taken-over run did not count as settled", records)
	}
}

// A transactional handler whose own commit fails (here a deferred constraint) has neither succeeded
// nor failed: the attempt is abandoned, nothing is scheduled, and the redelivery takes the job over
// once the lease runs out and runs it again.
func TestFailedCommitIsAbandonedNotFailed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mux.HandleTx("test.commitfail", worker.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, j *job.Job) error {
		if j.Attempt > 1 {
			return nil
		}
		_, err := tx.Exec(ctx, `CREATE TEMP TABLE commit_fails (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP;
			INSERT INTO commit_fails VALUES (1), (1)`) // checked, and refused, at commit
		return err
	}))
	m, counter := pubqtest.Metrics(t)
	b.run(t, worker.Config{Metrics: m, Lease: 2 * time.Second, BusyPoll: 200 * time.Millisecond})
	b.enqueue(t, "test.commitfail", "commit-fails", demo.Payload{})
	waitFor(t, 30*time.Second, "the job to succeed", func() bool { s, _ := b.jobState(t, "commit-fails"); return s == "succeeded" })
	if _, attempt := b.jobState(t, "commit-fails"); attempt != 2 {
		t.Errorf("finished at attempt %d, want 2", attempt)
	}
	waitFor(t, 5*time.Second, "the success to be counted", func() bool { return counter("pubq.jobs.succeeded") == 1 })
	st, a, f, r := counter("pubq.jobs.started"), counter("pubq.jobs.abandoned"), counter("pubq.jobs.failed"), counter("pubq.jobs.retried")
	if st != 2 || a != 1 || f != 0 || r != 0 {
		t.Errorf("started %d, abandoned %d, failed %d, retried %d; want 2, 1, 0, 0", st, a, f, r)
	}
}

// spanStarts counts the started spans of one name.
type spanStarts struct {
	name string
	n    atomic.Int64
}

func (c *spanStarts) OnStart(_ context.Context, s sdktrace.ReadWriteSpan) {
	if s.Name() == c.name {
		c.n.Add(1)
	}
}
func (*spanStarts) OnEnd(sdktrace.ReadOnlySpan)      {}
func (*spanStarts) Shutdown(context.Context) error   { return nil }
func (*spanStarts) ForceFlush(context.Context) error { return nil }

// In flight counts attempts running, not deliveries: a second delivery of a running job, parked on its
// lease, is not a job in flight.
func TestInFlightCountsRunningAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	b.mux.HandleFunc("test.slow", func(ctx context.Context, _ *job.Job) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	starts := &spanStarts{name: "pubq job test.slow"} // started by every delivery before its claim
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(starts))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	m, counter := pubqtest.Metrics(t)
	b.run(t, worker.Config{Metrics: m, TracerProvider: tp})
	r := b.enqueue(t, "test.slow", "in-flight", demo.Payload{})
	waitFor(t, 20*time.Second, "the job to run", func() bool { return counter("pubq.jobs.started") == 1 })
	b.publishRaw(t, "pubq-default", []byte(`{}`), map[string]string{job.AttrKind: "test.slow", job.AttrKey: "in-flight", job.AttrID: r.ID})
	waitFor(t, 20*time.Second, "the second delivery", func() bool { return starts.n.Load() == 2 })
	if n := counter("pubq.jobs.in_flight"); n != 1 {
		t.Errorf("in flight %d with one attempt running and a duplicate delivery waiting, want 1", n)
	}
	close(release)
	waitFor(t, 20*time.Second, "the duplicate to be skipped", func() bool { return counter("pubq.jobs.duplicate_skipped") >= 1 })
	if n := counter("pubq.jobs.in_flight"); n != 0 {
		t.Errorf("in flight %d at rest, want 0", n)
	}
}

// A job whose last allowed attempt died with its worker (running, lease lapsed) is dead-lettered as
// exhausted when a delivery takes it over, as the rescuer would: it is not run again.
func TestTakeoverPastLastAttemptIsExhausted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "demo.record", "worn-out", demo.Payload{})
	if _, err := b.st.Pool().Exec(context.Background(), `UPDATE pubq.jobs SET state = 'running', attempt = 3, fence = 3,
		lease_owner = 'a lost worker', lease_until = now() - interval '1 second' WHERE key = 'worn-out'`); err != nil {
		t.Fatal(err)
	}
	m, points := pubqtest.MetricPoints(t)
	b.run(t, worker.Config{Metrics: m})
	msgs := b.pullDead(t, "pubq-default-dead-inspect", 1, 30*time.Second)
	if a := msgs[0].Attributes; a[job.AttrKey] != "worn-out" || a[job.AttrDeadReason] != job.ReasonExhausted || !strings.Contains(a[job.AttrDeadError], "exceeds max attempts") {
		t.Errorf("dead letter attributes: %v", a)
	}
	if s, _ := b.jobState(t, "worn-out"); s != "dead" || b.effects(t, "worn-out") != 0 {
		t.Errorf("state %s, effects %d; want dead and not run", s, b.effects(t, "worn-out"))
	}
	var reasons []string
	for _, dp := range points("pubq.jobs.dead_lettered") {
		r, _ := dp.Attributes.Value(telemetry.MetricKeyReason)
		reasons = append(reasons, fmt.Sprintf("%s=%d", r.AsString(), dp.Value))
	}
	if got := fmt.Sprint(reasons); got != "[exhausted=1]" {
		t.Errorf("dead lettered by reason %s, want [exhausted=1]", got)
	}
}

// A transactional handler's enqueues are counted when its transaction commits: the first attempt's
// follow-up job rolls back with it and is not counted, the second's is, once.
func TestEnqueuedInRolledBackAttemptIsNotCounted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m, counter := pubqtest.Metrics(t)
	pub, err := publish.New(b.st, &publish.Config{Queues: b.cfg, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	b.mux.HandleTx("test.fanout", worker.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, j *job.Job) error {
		if _, err := pub.EnqueueTx(ctx, tx, publish.Request{Kind: "demo.record", Key: j.Key + "-child", Payload: []byte(`{}`)}); err != nil {
			return err
		}
		if j.Attempt == 1 {
			return fmt.Errorf("fail after enqueueing")
		}
		return nil
	}))
	b.run(t, worker.Config{Metrics: m})
	b.enqueue(t, "test.fanout", "fanout", demo.Payload{})
	waitFor(t, 30*time.Second, "the child job", func() bool { s, _ := b.jobState(t, "fanout-child"); return s == "succeeded" })
	if n := counter("pubq.jobs.enqueued"); n != 1 {
		t.Errorf("pubq.jobs.enqueued = %d, want 1: the rolled-back attempt's enqueue is not a job", n)
	}
	if n := counter("pubq.jobs.duplicate_skipped"); n != 0 {
		t.Errorf("pubq.jobs.duplicate_skipped = %d, want 0", n)
	}
}
