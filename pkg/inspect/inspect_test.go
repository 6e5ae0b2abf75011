package inspect_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testQueues = `
version: 1
queues:
  critical:
    topic: t-critical
    subscription: t-critical-worker
    dead_letter_topic: t-critical-dead
    dead_letter_subscription: t-critical-dead-inspect
    kinds: [payment.capture]
  default:
    topic: t-default
    subscription: t-default-worker
    dead_letter_topic: t-default-dead
    dead_letter_subscription: t-default-dead-inspect
    kinds: [email.send, report.build]
`

// bundle is what every test here starts from: a fresh database with pubq's schema.
type bundle struct {
	ctx  context.Context
	st   *store.Store
	pool *pgxpool.Pool
	cfg  *queue.Config
	insp *inspect.Inspector
}

func setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t), MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	cfg, err := queue.Parse([]byte(testQueues))
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{ctx: ctx, st: st, pool: st.Pool(), cfg: cfg, insp: inspect.New(st.Pool(), cfg)}
}

func traceparent(n int) string { return fmt.Sprintf("00-%032x-%016x-01", n+1, n+1) }

// enqueue enqueues one job through the store, as the producer does.
func (b *bundle) enqueue(t *testing.T, key, kind string, payload string) {
	t.Helper()
	q, err := b.cfg.Route(kind)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Enqueue(b.ctx, b.pool, []store.NewJob{{Key: key, ID: "id-" + key, Queue: q.Name, Kind: kind, Topic: q.Topic,
		Payload: []byte(payload), Attributes: map[string]string{"pubq_kind": kind, "pubq_key": key, "pubq_version": "1", "pubq_id": "id-" + key,
			"tenant": "t-" + key, job.AttrTraceParent: traceparent(0)},
		MaxAttempts: 5, TraceParent: traceparent(0)}})
	if err != nil {
		t.Fatal(err)
	}
}

// claim claims key as a worker would and returns its lease.
func (b *bundle) claim(t *testing.T, key string, lease time.Duration, tp string) store.ClaimResult {
	t.Helper()
	bt, err := store.NewBatcher(b.st, store.BatcherConfig{Owner: "test-worker", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	defer bt.Close()
	j, err := b.insp.Job(b.ctx, key, false)
	if err != nil {
		t.Fatal(err)
	}
	bt.Enter()
	res, err := bt.Claim(b.ctx, store.ClaimRequest{Key: key, ID: j.ID, Queue: j.Queue, Kind: j.Kind, MaxAttempts: 5, TraceParent: tp})
	bt.Leave()
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != store.Claimed {
		t.Fatalf("claim %q: status %s, want claimed", key, res.Status)
	}
	return res
}

// fail records a failed attempt of a claimed job.
func (b *bundle) fail(t *testing.T, key string, res store.ClaimResult, kind store.FailKind, errText, tp string) {
	t.Helper()
	j, err := b.insp.Job(b.ctx, key, true)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := b.cfg.Queue(j.Queue)
	f := store.Failure{Lease: store.Lease{Key: key, Fence: res.Fence}, Kind: kind, Attempt: res.Attempt, Error: errText,
		Worker: "test-worker", StartedAt: time.Now().Add(-time.Second), TraceParent: tp}
	switch kind {
	case store.FailRetry:
		f.Delay = time.Hour
		f.Message = store.OutboxMessage{Topic: q.Topic, Data: j.Payload, Attributes: map[string]string{"pubq_key": key, "pubq_attempt": fmt.Sprint(res.Attempt + 1)}, TraceParent: tp}
	case store.FailDead:
		f.DeadReason = "permanent"
		f.Message = store.OutboxMessage{Topic: q.DeadLetterTopic, Data: j.Payload, Attributes: map[string]string{"pubq_key": key, "pubq_dead_reason": "permanent"}, TraceParent: tp}
	}
	if _, err := b.st.Fail(b.ctx, f); err != nil {
		t.Fatal(err)
	}
}

// dead makes a dead job the way the worker does: enqueue, claim, fail permanently.
func (b *bundle) dead(t *testing.T, key, kind string) {
	t.Helper()
	b.enqueue(t, key, kind, `{"n":1}`)
	res := b.claim(t, key, 30*time.Second, traceparent(1))
	b.fail(t, key, res, store.FailDead, "boom: card declined", traceparent(1))
	b.drainOutbox(t)
}

// drainOutbox deletes every outbox row, as if a relay had published them all.
func (b *bundle) drainOutbox(t *testing.T) {
	t.Helper()
	if _, err := b.pool.Exec(b.ctx, `DELETE FROM pubq.outbox`); err != nil {
		t.Fatal(err)
	}
}

type outboxRow struct {
	Topic       string
	Data        string
	Attributes  map[string]string
	TraceParent string
	Due         bool
}

func (b *bundle) outbox(t *testing.T, key string) []outboxRow {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT topic, convert_from(data, 'UTF8'), attributes, coalesce(trace_parent, ''), available_at <= now()
		FROM pubq.outbox WHERE job_key = $1 ORDER BY id`, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		var attrs []byte
		if err := rows.Scan(&r.Topic, &r.Data, &attrs, &r.TraceParent, &r.Due); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(attrs, &r.Attributes); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

type auditRecord struct {
	Actor, Action, Key string
	Detail             map[string]any
}

func (b *bundle) audit(t *testing.T) []auditRecord {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, `SELECT actor, action, coalesce(job_key, ''), detail FROM pubq.audit ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRecord
	for rows.Next() {
		var r auditRecord
		var d []byte
		if err := rows.Scan(&r.Actor, &r.Action, &r.Key, &d); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(d, &r.Detail); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func (b *bundle) state(t *testing.T, key string) string {
	t.Helper()
	var s string
	if err := b.pool.QueryRow(b.ctx, `SELECT state FROM pubq.jobs WHERE key = $1`, key).Scan(&s); err != nil {
		t.Fatalf("state of %q: %v", key, err)
	}
	return s
}

func TestJobNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.insp.Job(b.ctx, "nope", false)
	if !errors.Is(err, inspect.ErrNotFound) {
		t.Fatalf("Job(nope) = %v, want ErrNotFound", err)
	}
}

func TestJobShowsEveryAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "order-1", "payment.capture", `{"amount":42}`)

	j, err := b.insp.Job(b.ctx, "order-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != "pending" || j.Queue != "critical" || j.Kind != "payment.capture" || len(j.Attempts) != 0 || j.Payload != nil {
		t.Fatalf("fresh job = %+v", j)
	}
	if j.TraceID != fmt.Sprintf("%032x", 1) {
		t.Errorf("trace id = %q, want the enqueue's", j.TraceID)
	}

	r1 := b.claim(t, "order-1", 30*time.Second, traceparent(10))
	b.fail(t, "order-1", r1, store.FailRetry, "timeout talking to the bank", traceparent(10))
	j, err = b.insp.Job(b.ctx, "order-1", true)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != "scheduled" || j.NextRetry.IsZero() || !j.NextRetry.Equal(j.RunAt) || j.NextRetry.Before(j.Now.Add(50*time.Minute)) {
		t.Fatalf("after a retry: state %s next retry %v (now %v)", j.State, j.NextRetry, j.Now)
	}
	if string(j.Payload) != `{"amount": 42}` && string(j.Payload) != `{"amount":42}` {
		t.Errorf("payload = %s", j.Payload)
	}
	if len(j.Attempts) != 1 || j.Attempts[0].Number != 1 || j.Attempts[0].Outcome != "retry" ||
		j.Attempts[0].Error != "timeout talking to the bank" || j.Attempts[0].TraceID != fmt.Sprintf("%032x", 11) ||
		j.Attempts[0].StartedAt.IsZero() || j.Attempts[0].FinishedAt.IsZero() {
		t.Fatalf("attempts after a retry = %+v", j.Attempts)
	}

	// Make the retry due and run it: the running attempt is the current one.
	if _, err := b.pool.Exec(b.ctx, `UPDATE pubq.jobs SET run_at = now() WHERE key = 'order-1'`); err != nil {
		t.Fatal(err)
	}
	r2 := b.claim(t, "order-1", 30*time.Second, traceparent(20))
	j, err = b.insp.Job(b.ctx, "order-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Attempts) != 2 || j.Attempts[1].Outcome != "running" || j.Attempts[1].Number != 2 || j.Attempts[1].Worker != "test-worker" ||
		j.TraceID != fmt.Sprintf("%032x", 21) || j.NextRetry != (time.Time{}) || j.Stuck {
		t.Fatalf("while running: %+v attempts %+v", j, j.Attempts)
	}

	b.fail(t, "order-1", r2, store.FailDead, "card declined", traceparent(20))
	j, err = b.insp.Job(b.ctx, "order-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != "dead" || j.DeadReason != "permanent" || j.LastError != "card declined" || len(j.Attempts) != 2 ||
		j.Attempts[1].Outcome != "dead" || j.Attempts[1].Error != "card declined" {
		t.Fatalf("dead: %+v attempts %+v", j, j.Attempts)
	}
	if j.Payload != nil {
		t.Error("payload returned without being asked for")
	}
}

func TestTraceID(t *testing.T) {
	t.Parallel()
	for tp, want := range map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "4bf92f3577b34da6a3ce929d0e0e4736",
		"": "", "garbage": "", "00-00000000000000000000000000000000-00f067aa0ba902b7-01": "",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01": "", "00-abc-def-01": "",
	} {
		if got := inspect.TraceID(tp); got != want {
			t.Errorf("TraceID(%q) = %q, want %q", tp, got, want)
		}
	}
}
