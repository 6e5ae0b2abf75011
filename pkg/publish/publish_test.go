package publish_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/admin"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const queues = `
version: 1
queues:
  default:
    topic: pubq-default
    subscription: pubq-default-worker
    dead_letter_topic: pubq-default-dead
    dead_letter_subscription: pubq-default-dead-inspect
    kinds: [demo.record]
    backoff: {max_attempts: 4}
`

func setup(t *testing.T) (*publish.Client, *store.Store, *queue.Config) {
	t.Helper()
	ctx := context.Background()
	cfg, err := queue.Parse([]byte(queues))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := publish.New(st, &publish.Config{Queues: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return c, st, cfg
}

func rows(t *testing.T, st *store.Store, table string) int {
	t.Helper()
	var n int
	if err := st.Pool().QueryRow(context.Background(), "SELECT count(*) FROM pubq."+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestValidation(t *testing.T) {
	c, st, _ := setup(t)
	ctx := context.Background()
	long := strings.Repeat("v", 1025)
	cases := []struct {
		name string
		r    publish.Request
		is   error
	}{
		{"unknown kind", publish.Request{Kind: "nope.nope", Key: "k"}, publish.ErrUnknownKind},
		{"bad kind", publish.Request{Kind: "Bad Kind", Key: "k"}, publish.ErrInvalid},
		{"no key", publish.Request{Kind: "demo.record"}, publish.ErrInvalid},
		{"bad json", publish.Request{Kind: "demo.record", Key: "k", Payload: []byte(`{"a":`)}, publish.ErrInvalid},
		{"reserved attribute", publish.Request{Kind: "demo.record", Key: "k", Attributes: map[string]string{"pubq_kind": "x"}}, publish.ErrInvalid},
		{"goog attribute", publish.Request{Kind: "demo.record", Key: "k", Attributes: map[string]string{"googclient_x": "x"}}, publish.ErrInvalid},
		{"long attribute", publish.Request{Kind: "demo.record", Key: "k", Attributes: map[string]string{"team": long}}, publish.ErrInvalid},
	}
	for _, tc := range cases {
		if _, err := c.Enqueue(ctx, tc.r); !errors.Is(err, tc.is) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.is)
		}
	}
	if n := rows(t, st, "jobs"); n != 0 {
		t.Fatalf("rejected jobs were written: %d", n)
	}
}

func TestEnqueueManyIsAtomic(t *testing.T) {
	c, st, _ := setup(t)
	ctx := context.Background()
	_, err := c.EnqueueMany(ctx, []publish.Request{
		{Kind: "demo.record", Key: "a", Payload: []byte(`{}`)},
		{Kind: "demo.record", Key: "b", Payload: []byte(`{}`)},
		{Kind: "demo.record", Key: "a", Payload: []byte(`{"other":1}`)}, // same key, different payload
	})
	var de *job.DecodeError
	if !errors.As(err, &de) || de.Field != "key" {
		t.Fatalf("want a key error naming the repeated key, got %v", err)
	}
	if n := rows(t, st, "jobs") + rows(t, st, "outbox"); n != 0 {
		t.Fatalf("a failed batch wrote %d rows", n)
	}
	res, err := c.EnqueueMany(ctx, []publish.Request{
		{Kind: "demo.record", Key: "a", Payload: []byte(`{}`)},
		{Kind: "demo.record", Key: "a", Payload: []byte(`{}`)},
	})
	if err != nil || res[0].Duplicate || !res[1].Duplicate || res[0].ID != res[1].ID {
		t.Fatalf("same job twice in a batch is one job: %+v %v", res, err)
	}
	if n := rows(t, st, "outbox"); n != 1 {
		t.Fatalf("one message, got %d", n)
	}
	if _, err := c.Enqueue(ctx, publish.Request{Kind: "demo.record", Key: "a", Payload: []byte(`{"x":2}`)}); !errors.Is(err, publish.ErrKeyConflict) {
		t.Fatalf("reused key: %v", err)
	}
}

func TestEnqueueTx(t *testing.T) {
	c, st, _ := setup(t)
	ctx := context.Background()
	if _, err := st.Pool().Exec(ctx, `CREATE TABLE orders (id int)`); err != nil {
		t.Fatal(err)
	}
	// Rolled back: neither the platform's row nor the job exist.
	tx, _ := st.Pool().Begin(ctx)
	_, _ = tx.Exec(ctx, `INSERT INTO orders VALUES (1)`)
	if _, err := c.EnqueueTx(ctx, tx, publish.Request{Kind: "demo.record", Key: "order-1", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)
	if rows(t, st, "jobs")+rows(t, st, "outbox") != 0 {
		t.Fatal("a rolled-back transaction left a job")
	}
	// A failed enqueue leaves the caller's transaction usable (savepoint), and the commit has both.
	tx, _ = st.Pool().Begin(ctx)
	_, _ = tx.Exec(ctx, `INSERT INTO orders VALUES (2)`)
	if _, err := c.EnqueueTx(ctx, tx, publish.Request{Kind: "nope.nope", Key: "x"}); err == nil {
		t.Fatal("want an error")
	}
	if _, err := c.EnqueueTx(ctx, tx, publish.Request{Kind: "demo.record", Key: "order-2", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var orders int
	_ = st.Pool().QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&orders)
	if orders != 1 || rows(t, st, "jobs") != 1 || rows(t, st, "outbox") != 1 {
		t.Fatalf("orders %d jobs %d outbox %d", orders, rows(t, st, "jobs"), rows(t, st, "outbox"))
	}
}

func TestDelayedJobWaitsInOutbox(t *testing.T) {
	c, st, _ := setup(t)
	ctx := context.Background()
	r, err := c.Enqueue(ctx, publish.Request{Kind: "demo.record", Key: "later", Payload: []byte(`{}`), RunIn: time.Hour})
	if err != nil || r.State != "scheduled" || time.Until(r.RunAt) < 59*time.Minute {
		t.Fatalf("%+v %v", r, err)
	}
	backlog, _, err := st.OutboxStats(ctx)
	if err != nil || backlog != 0 {
		t.Fatalf("a delayed job is not due: backlog %d %v", backlog, err)
	}
	var max int
	_ = st.Pool().QueryRow(ctx, `SELECT max_attempts FROM pubq.jobs WHERE key = 'later'`).Scan(&max)
	if max != 4 {
		t.Fatalf("max attempts from the queue config: %d", max)
	}
	// A retry of the same enqueue answers with the first job, due when the first call said.
	for _, in := range []time.Duration{2 * time.Hour, 0} {
		d, err := c.Enqueue(ctx, publish.Request{Kind: "demo.record", Key: "later", Payload: []byte(`{}`), RunIn: in})
		if err != nil || !d.Duplicate || d.ID != r.ID || d.State != "scheduled" || !d.RunAt.Equal(r.RunAt) {
			t.Errorf("retry with run_in %s: %+v %v; want the first job, due at %s", in, d, err, r.RunAt)
		}
	}
}

// The relay publishes the committed job with its envelope to the queue's topic, once.
func TestRelayPublishesToTopic(t *testing.T) {
	testenv.Emulator(t)
	c, st, cfg := setup(t)
	ctx := context.Background()
	project := testenv.ProjectID(t)
	ps, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if _, err := admin.Bootstrap(ctx, ps, project, cfg); err != nil {
		t.Fatal(err)
	}
	r, err := c.Enqueue(ctx, publish.Request{Kind: "demo.record", Key: "k1", Payload: []byte(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := publish.NewRelay(ps, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := relay.RelayOnce(ctx); err != nil || n != 1 {
		t.Fatalf("relay: %d %v", n, err)
	}
	if n, _ := relay.RelayOnce(ctx); n != 0 {
		t.Fatal("published twice")
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var got *pubsub.Message
	_ = ps.Subscriber("pubq-default-worker").Receive(rctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		got = m
		cancel()
	})
	if got == nil {
		t.Fatal("nothing received")
	}
	j, err := job.Decode(got.Data, got.Attributes, got.PublishTime)
	if err != nil || j.Key != "k1" || j.ID != r.ID || j.Kind != "demo.record" || string(j.Payload) != `{"n":1}` {
		t.Fatalf("received %+v %v", j, err)
	}
}

// A job with the most attributes allowed still fits Pub/Sub's 100 on its fullest message: the dead
// letter of a retried, traced delivery, once the relay's publish has added its trace context.
func TestMaxAttributesFitTheDeadLetter(t *testing.T) {
	attrs := map[string]string{}
	for i := range publish.MaxAttributes {
		attrs[fmt.Sprintf("custom_%d", i)] = "v"
	}
	j := &job.Job{ID: "id", Kind: "email.send", Key: "k", Payload: []byte(`{}`), EnqueuedAt: time.Now(), Attempt: 3, Attributes: attrs}
	_, delivered := j.Envelope()
	delivered[job.AttrPrevTraceParent] = "00-prev"
	delivered[job.AttrPubSubTraceParent], delivered[job.AttrPubSubTraceState] = "00-this", "s"
	dead := job.DeadLetterAttributes(delivered, "bulk", job.ReasonExhausted, "boom", 3, time.Now())
	if n := len(dead) + 2; n > 100 { // + the relay's googclient_traceparent and tracestate
		t.Fatalf("the dead letter would carry %d attributes; Pub/Sub allows 100", n)
	}
}

// A publish the relay gives up on (here: the topic does not exist) is logged with the job's key, kind
// and the trace the job was enqueued in.
func TestRelayLogsFailedPublishWithTheJob(t *testing.T) {
	testenv.Emulator(t)
	c, st, _ := setup(t)
	ctx := context.Background()
	ps, err := pubsub.NewClient(ctx, testenv.ProjectID(t)) // no topics: every publish fails
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	tctx := trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	res, err := c.Enqueue(tctx, publish.Request{Kind: "demo.record", Key: "k-fail", Payload: []byte(`{"secret":"s3"}`)})
	if err != nil {
		t.Fatal(err)
	}
	// A retry's message names its attempt; a malformed attempt is left out.
	if _, err := store.InsertOutbox(ctx, st.Pool(),
		store.OutboxMessage{JobKey: "k-retry", Topic: "pubq-default", Data: []byte(`{}`), Attributes: map[string]string{
			job.AttrKind: "demo.record", job.AttrKey: "k-retry", job.AttrID: "id-retry", job.AttrAttempt: "3"}},
		store.OutboxMessage{JobKey: "k-bad", Topic: "pubq-default", Data: []byte(`{}`), Attributes: map[string]string{
			job.AttrKind: "demo.record", job.AttrKey: "k-bad", job.AttrAttempt: "x"}}); err != nil {
		t.Fatal(err)
	}
	var logs pubqtest.SyncBuffer
	relay, err := publish.NewRelay(ps, st, &publish.RelayConfig{Logger: telemetry.NewLogger(&logs, telemetry.LoggerOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := relay.RelayOnce(ctx); n != 0 {
		t.Fatalf("relayed %d to a missing topic", n)
	}
	lines := map[string]map[string]any{}
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "publish failed; will retry from the outbox" {
			key, _ := m["job_key"].(string)
			lines[key] = m
		}
	}
	line := lines["k-fail"]
	if line == nil {
		t.Fatalf("no publish-failed line for k-fail in:\n%s", logs.String())
	}
	if line["job_kind"] != "demo.record" || line["job_id"] != res.ID || res.ID == "" || line["trace_id"] != tid.String() {
		t.Errorf("publish-failed line %v, want the job's key, kind, id %q and trace", line, res.ID)
	}
	if _, ok := line["job_attempt"]; ok {
		t.Errorf("a first delivery's line names an attempt: %v", line)
	}
	if l := lines["k-retry"]; l == nil || l["job_attempt"] != 3.0 || l["job_id"] != "id-retry" {
		t.Errorf("retry's publish-failed line %v, want job_attempt 3 and job_id id-retry", l)
	}
	if l := lines["k-bad"]; l == nil || l["job_attempt"] != nil || l["job_id"] != nil {
		t.Errorf("publish-failed line %v, want no job_attempt or job_id", l)
	}
	if strings.Contains(logs.String(), "s3") {
		t.Errorf("the payload reached the log:\n%s", logs.String())
	}
}
