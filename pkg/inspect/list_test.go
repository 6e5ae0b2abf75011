package inspect_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

func TestListPaginatesWithoutGapsOrRepeats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// 95 dead jobs, many sharing a finished_at, plus other states and queues.
	if _, err := b.pool.Exec(b.ctx, `
		INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, finished_at)
		SELECT 'dead-' || lpad(g::text, 3, '0'), 'i', 'default', CASE WHEN g % 2 = 0 THEN 'email.send' ELSE 'report.build' END,
			'dead', '{}', timestamptz '2026-11-01 12:00:00Z' + make_interval(mins => g / 10)
		FROM generate_series(1, 95) g;
		INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, finished_at) VALUES
			('crit-dead', 'i', 'critical', 'payment.capture', 'dead', '{}', timestamptz '2026-11-01 12:05:00Z'),
			('done', 'i', 'default', 'email.send', 'succeeded', '{}', timestamptz '2026-11-01 12:05:00Z');
		INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, created_at, run_at) VALUES
			('later', 'i', 'default', 'email.send', 'scheduled', '{}', timestamptz '2026-11-01 11:00:00Z', timestamptz '2030-01-01 00:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var prev time.Time
	cursor, pages := "", 0
	for {
		p, err := b.insp.List(b.ctx, inspect.Filter{State: "dead", Queue: "default", Limit: 10, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, j := range p.Jobs {
			if seen[j.Key] {
				t.Fatalf("page %d repeats %s", pages, j.Key)
			}
			seen[j.Key] = true
			if j.State != "dead" || j.Queue != "default" {
				t.Fatalf("listed %+v", j)
			}
			if !prev.IsZero() && j.At.After(prev) {
				t.Fatalf("not newest first: %v after %v", j.At, prev)
			}
			prev = j.At
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if len(seen) != 95 || pages != 10 {
		t.Fatalf("saw %d jobs in %d pages, want 95 in 10", len(seen), pages)
	}

	p, err := b.insp.List(b.ctx, inspect.Filter{State: "dead", Kind: "email.send", Limit: 1000,
		Since: time.Date(2026, 11, 1, 12, 2, 0, 0, time.UTC), Until: time.Date(2026, 11, 1, 12, 5, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	// Minutes 2, 3, 4 hold g = 20..49; even g are email.send: 15 jobs.
	if len(p.Jobs) != 15 || p.Next != "" {
		t.Fatalf("window: %d jobs (next %q), want 15", len(p.Jobs), p.Next)
	}
	p, err = b.insp.List(b.ctx, inspect.Filter{State: "scheduled"})
	if err != nil || len(p.Jobs) != 1 || p.Jobs[0].NextRetry.Year() != 2030 {
		t.Fatalf("scheduled: %+v, %v", p, err)
	}
	p, err = b.insp.List(b.ctx, inspect.Filter{Keys: []string{"done", "crit-dead", "nope"}})
	if err != nil || len(p.Jobs) != 2 {
		t.Fatalf("keys: %+v, %v", p, err)
	}

	for name, f := range map[string]inspect.Filter{
		"bad state":   {State: "exploded"},
		"bad cursor":  {Cursor: "!!!"},
		"bad cursor2": {Cursor: "bm90IGEgY3Vyc29y"},
		"bad limit":   {Limit: 5000},
		"bad window":  {Since: time.Now(), Until: time.Now().Add(-time.Hour)},
		"blank queue": {Queue: "  "},
	} {
		if _, err := b.insp.List(b.ctx, f); !errors.Is(err, inspect.ErrInvalidFilter) {
			t.Errorf("%s: %v, want ErrInvalidFilter", name, err)
		}
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.pool.Exec(b.ctx, `
		INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, finished_at, run_at, lease_until) VALUES
			('s1', 'i', 'default', 'email.send', 'succeeded', '{}', now() - interval '10 minutes', now(), NULL),
			('s2', 'i', 'default', 'email.send', 'succeeded', '{}', now() - interval '20 minutes', now(), NULL),
			('s-old', 'i', 'default', 'email.send', 'succeeded', '{}', now() - interval '3 hours', now(), NULL),
			('d1', 'i', 'default', 'email.send', 'dead', '{}', now() - interval '5 minutes', now(), NULL),
			('w1', 'i', 'default', 'email.send', 'pending', '{}', NULL, now() - interval '90 seconds', NULL),
			('w2', 'i', 'default', 'email.send', 'pending', '{}', NULL, now() - interval '10 seconds', NULL),
			('later', 'i', 'default', 'email.send', 'scheduled', '{}', NULL, now() + interval '1 hour', NULL),
			('run', 'i', 'critical', 'payment.capture', 'running', '{}', NULL, now(), now() + interval '1 minute'),
			('stuck', 'i', 'critical', 'payment.capture', 'running', '{}', NULL, now(), now() - interval '1 minute'),
			('ghost', 'i', 'retired', 'old.kind', 'dead', '{}', now(), now(), NULL);
		INSERT INTO pubq.claims (owner, keys) VALUES ('w', '{run,stuck}'); -- as the claim records running jobs
		INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, fence, run_at) VALUES
			('replayed', 'i', 'default', 'email.send', 'pending', '{}', 2, now() + interval '1 minute');
		UPDATE pubq.jobs SET fence = 2 WHERE key = 'd1'; -- as the worker leaves it: its dead attempt holds the fence
		INSERT INTO pubq.attempts (job_key, attempt, fence, outcome, error, finished_at) VALUES
			('d1', 1, 1, 'retry', 'x', now() - interval '6 minutes'),
			('d1', 2, 2, 'dead', 'x', now() - interval '5 minutes'),
			('s1', 1, 1, 'snooze', NULL, now() - interval '11 minutes'),
			('s-old', 1, 1, 'retry', 'x', now() - interval '4 hours'),
			('replayed', 1, 1, 'dead', 'x', now() - interval '7 minutes');
		INSERT INTO pubq.outbox (job_key, topic, data, available_at) VALUES ('w1', 't-default', '{}', now() - interval '30 seconds')`); err != nil {
		t.Fatal(err)
	}
	st, err := b.insp.Stats(b.ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]inspect.QueueStats{}
	for _, q := range st.Queues {
		by[q.Queue] = q
	}
	if len(st.Queues) != 3 || !by["default"].Configured || !by["critical"].Configured || by["retired"].Configured {
		t.Fatalf("queues = %+v", st.Queues)
	}
	d := by["default"]
	if d.Counts["succeeded"] != 3 || d.Counts["dead"] != 1 || d.Counts["pending"] != 3 || d.Counts["scheduled"] != 1 || d.Counts["running"] != 0 {
		t.Errorf("default counts = %v", d.Counts)
	}
	// Died counts d1 and "replayed", which died in the window and was replayed since.
	if d.Succeeded != 2 || d.Died != 2 || d.Failed != 3 || d.Due != 2 || d.Stuck != 0 {
		t.Errorf("default window: succeeded %d died %d failed %d due %d stuck %d", d.Succeeded, d.Died, d.Failed, d.Due, d.Stuck)
	}
	if d.OldestWaitingKey != "w1" || d.OldestWaiting < 85*time.Second || d.OldestWaiting > 5*time.Minute {
		t.Errorf("oldest waiting = %s %v", d.OldestWaitingKey, d.OldestWaiting)
	}
	if want := 2.0 / 3600; d.Throughput < want*0.99 || d.Throughput > want*1.01 {
		t.Errorf("throughput = %g, want %g", d.Throughput, want)
	}
	c := by["critical"]
	if c.Counts["running"] != 2 || c.Stuck != 1 || c.OldestWaiting != 0 {
		t.Errorf("critical = %+v", c)
	}
	if st.OutboxDue != 1 || st.OutboxOldest < 25*time.Second {
		t.Errorf("outbox due %d oldest %v", st.OutboxDue, st.OutboxOldest)
	}
	if tot := st.Total(); tot.Counts["running"] != 2 || tot.Stuck != 1 || tot.Succeeded != 2 || tot.OldestWaitingKey != "w1" {
		t.Errorf("total = %+v", tot)
	}
	p, err := b.insp.List(b.ctx, inspect.Filter{State: "stuck"})
	if err != nil || len(p.Jobs) != 1 || p.Jobs[0].Key != "stuck" || !p.Jobs[0].Stuck {
		t.Errorf("list stuck = %+v, %v", p, err)
	}

	// A wider window counts the old success and failure too.
	st, err = b.insp.Stats(b.ctx, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range st.Queues {
		if q.Queue == "default" && (q.Succeeded != 3 || q.Failed != 4) {
			t.Errorf("24h window: %+v", q)
		}
	}
}

func TestRescuerReschedulesAJobWhoseWorkerDied(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "orphan", "email.send", `{"to":"z"}`)
	b.drainOutbox(t)
	res := b.claim(t, "orphan", time.Second, traceparent(7)) // the worker then dies: nothing renews or completes
	var rescued [][]store.Rescued
	var logs pubqtest.SyncBuffer
	metrics, counter := pubqtest.Metrics(t)
	r, err := inspect.NewRescuer(b.st, b.cfg, &inspect.RescuerConfig{Every: 100 * time.Millisecond, Grace: 500 * time.Millisecond,
		Logger: telemetry.NewLogger(&logs, telemetry.LoggerOptions{}), Metrics: metrics,
		OnRescue: func(got []store.Rescued) { rescued = append(rescued, got) }})
	if err != nil {
		t.Fatal(err)
	}
	// Within the lease and the grace, nothing is rescued.
	if got, err := r.RescueOnce(b.ctx); err != nil || len(got) != 0 {
		t.Fatalf("rescued a live job: %v, %v", got, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := b.insp.Stats(b.ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.Total().Stuck == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never showed as stuck")
		}
		time.Sleep(100 * time.Millisecond)
	}
	runUntilScheduled(t, b, r, "orphan")
	if len(rescued) != 1 || len(rescued[0]) != 1 || rescued[0][0].Key != "orphan" || rescued[0][0].Attempt != 1 || rescued[0][0].Dead {
		t.Fatalf("rescued = %+v", rescued)
	}
	if x := rescued[0][0]; x.ID != "id-orphan" || x.TraceParent != traceparent(7) {
		t.Errorf("rescued job's id %q, trace parent %q; want id-orphan, %s", x.ID, x.TraceParent, traceparent(7))
	}
	// The log line names the job with the telemetry.Job fields, once each, and carries the job's trace.
	line := rescueLogLine(t, logs.String())
	want := map[string]any{"job_key": "orphan", "job_queue": "default", "job_kind": "email.send", "job_id": "id-orphan",
		"job_attempt": 1.0, "dead_lettered": false, "trace_id": fmt.Sprintf("%032x", 8), "span_id": fmt.Sprintf("%016x", 8)}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("rescue log %s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"queue", "kind", "attempt", "payload"} {
		if _, ok := line[k]; ok {
			t.Errorf("rescue log has an ad-hoc %q", k)
		}
	}
	if n := counter("pubq.jobs.rescued"); n != 1 {
		t.Errorf("pubq.jobs.rescued = %d, want 1", n)
	}
	out := b.outbox(t, "orphan")
	if len(out) != 1 || out[0].Topic != "t-default" || out[0].Data != `{"to":"z"}` || !out[0].Due {
		t.Fatalf("rescue outbox = %+v", out)
	}
	m, err := job.Decode([]byte(out[0].Data), out[0].Attributes, time.Now())
	if err != nil || m.Attempt != 2 || m.Key != "orphan" || m.Kind != "email.send" || m.ID != "id-orphan" {
		t.Fatalf("rescued delivery decodes as %+v, %v", m, err)
	}
	j, err := b.insp.Job(b.ctx, "orphan", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Attempts) != 1 || j.Attempts[0].Outcome != "lost" || !strings.HasPrefix(j.Attempts[0].Error, "worker lost") || j.Fence != res.Fence+1 {
		t.Fatalf("job after rescue: %+v attempts %+v", j, j.Attempts)
	}
	// The old holder's lease is fenced off.
	if ok, err := b.st.Complete(b.ctx, []store.Lease{{Key: "orphan", Fence: res.Fence}}); err != nil || ok[0] {
		t.Fatalf("the lost worker could still complete: %v %v", ok, err)
	}
}

// A job claimed by a binary older than migration 0006 has no claim record: RescueOnce cannot see it,
// and Run reconciles the table first, then rescues it.
func TestRescuerReconcilesLeaseRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "old-binary", "email.send", `{"to":"z"}`)
	b.drainOutbox(t)
	b.claim(t, "old-binary", time.Second, traceparent(8))
	if _, err := b.pool.Exec(b.ctx, `DELETE FROM pubq.claims`); err != nil {
		t.Fatal(err)
	}
	var warned pubqtest.SyncBuffer
	r, err := inspect.NewRescuer(b.st, b.cfg, &inspect.RescuerConfig{Every: 100 * time.Millisecond, Grace: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&warned, nil))})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1300 * time.Millisecond) // past the lease and the grace
	if got, err := r.RescueOnce(b.ctx); err != nil || len(got) != 0 {
		t.Fatalf("without a claim record the job is invisible to a pass: %v %v", got, err)
	}
	runUntilScheduled(t, b, r, "old-binary")
	if s := warned.String(); !strings.Contains(s, "no claim record") || !strings.Contains(s, "jobs=1") {
		t.Fatalf("reconciliation not logged: %q", s)
	}
	if n, err := b.st.ReconcileClaims(b.ctx); err != nil || n != 0 {
		t.Fatalf("a second reconciliation added %d (%v)", n, err)
	}
}

// rescueLogLine returns the one "rescued stuck job" line of the JSON logs, decoded, after checking no
// key appears in it twice.
func rescueLogLine(t *testing.T, logs string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !strings.Contains(l, "rescued stuck job") {
			continue
		}
		if found != nil {
			t.Fatalf("two rescue lines:\n%s", logs)
		}
		for _, k := range []string{"job_key", "job_id", "trace_id"} {
			if n := strings.Count(l, `"`+k+`":`); n != 1 {
				t.Errorf("%s appears %d times in %s", k, n, l)
			}
		}
		if err := json.Unmarshal([]byte(l), &found); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
	}
	if found == nil {
		t.Fatalf("no rescue line in:\n%s", logs)
	}
	return found
}

// runUntilScheduled runs r until the job key is scheduled again (rescued), at most 10s.
func runUntilScheduled(t *testing.T, b *bundle, r *inspect.Rescuer, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for b.state(t, key) != "scheduled" {
		if ctx.Err() != nil {
			t.Fatal("not rescued in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewRescuerValidates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := inspect.NewRescuer(nil, b.cfg, nil); err == nil {
		t.Error("nil store accepted")
	}
	for _, c := range []inspect.RescuerConfig{{Every: -1}, {Grace: -1}, {Limit: -1}, {ReconcileEvery: -1}} {
		if _, err := inspect.NewRescuer(b.st, b.cfg, &c); err == nil || !strings.HasPrefix(err.Error(), "pubq: rescuer:") {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func ExampleTraceID() {
	fmt.Println(inspect.TraceID("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	// Output: 4bf92f3577b34da6a3ce929d0e0e4736
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                          {},
		"2026-11-01":                time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		"2026-11-01T08:30":          time.Date(2026, 11, 1, 8, 30, 0, 0, time.UTC),
		"2026-11-01 08:30":          time.Date(2026, 11, 1, 8, 30, 0, 0, time.UTC),
		"2026-11-01T08:30:00Z":      time.Date(2026, 11, 1, 8, 30, 0, 0, time.UTC),
		"2026-11-01T09:30:00+01:00": time.Date(2026, 11, 1, 8, 30, 0, 0, time.UTC),
		"90m":                       now.Add(-90 * time.Minute),
		"2d":                        now.Add(-48 * time.Hour),
	} {
		got, err := inspect.ParseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-5m", "-1d", "2026-13-01", "5x"} {
		if _, err := inspect.ParseTime(bad, now); !errors.Is(err, inspect.ErrInvalidFilter) {
			t.Errorf("ParseTime(%q) = %v, want ErrInvalidFilter", bad, err)
		}
	}
}

// A job whose last attempt died with its worker is dead-lettered by the rescuer, and counted as such:
// rescued and dead-lettered (reason exhausted, as a worker says of a job out of attempts), by kind.
func TestRescuerCountsALostLastAttemptAsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "last-orphan", "email.send", `{"to":"y"}`)
	b.drainOutbox(t)
	b.claim(t, "last-orphan", time.Second, "")
	if _, err := b.st.Pool().Exec(b.ctx, `UPDATE pubq.jobs SET max_attempts = 1 WHERE key = 'last-orphan'`); err != nil {
		t.Fatal(err)
	}
	metrics, points := pubqtest.MetricPoints(t)
	r, err := inspect.NewRescuer(b.st, b.cfg, &inspect.RescuerConfig{Every: 100 * time.Millisecond, Grace: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.state(t, "last-orphan") != "dead" {
		if time.Now().After(deadline) {
			t.Fatalf("not dead-lettered in time: state %s", b.state(t, "last-orphan"))
		}
		if _, err := r.RescueOnce(b.ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	series := func(name string, label string) string {
		var out []string
		for _, dp := range points(name) {
			k, _ := dp.Attributes.Value(telemetry.MetricKeyKind)
			v, _ := dp.Attributes.Value(attribute.Key(label))
			out = append(out, fmt.Sprintf("%s/%s=%d", k.AsString(), v.AsString(), dp.Value))
		}
		return fmt.Sprint(out)
	}
	if got := series("pubq.jobs.rescued", telemetry.MetricKeyQueue); got != "[email.send/default=1]" {
		t.Errorf("rescued %s, want [email.send/default=1]", got)
	}
	if got := series("pubq.jobs.dead_lettered", telemetry.MetricKeyReason); got != "[email.send/exhausted=1]" {
		t.Errorf("dead lettered %s, want [email.send/exhausted=1]", got)
	}
}
