package inspect_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/store"
)

func TestReplayRestartsADeadJobOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dead(t, "order-7", "payment.capture")
	before, err := b.insp.Job(b.ctx, "order-7", false)
	if err != nil {
		t.Fatal(err)
	}

	res, err := b.insp.Replay(b.ctx, "alice", inspect.Filter{Keys: []string{"order-7"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Matched != 1 || res.Changed != 1 || len(res.Jobs) != 1 || res.Jobs[0].From != "dead" || res.Jobs[0].To != "pending" {
		t.Fatalf("replay result = %+v", res)
	}
	after, err := b.insp.Job(b.ctx, "order-7", false)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != "pending" || after.Attempt != 0 || after.Fence != before.Fence+1 || after.DeadReason != "" || !after.FinishedAt.IsZero() {
		t.Fatalf("after replay: %+v (before: fence %d)", after, before.Fence)
	}
	if len(after.Attempts) != 1 || after.Attempts[0].Outcome != "dead" {
		t.Errorf("the dead attempt should stay in the history: %+v", after.Attempts)
	}
	if len(after.History) != 1 || after.History[0].Actor != "alice" || after.History[0].Action != "replay" {
		t.Errorf("history = %+v", after.History)
	}

	out := b.outbox(t, "order-7")
	if len(out) != 1 {
		t.Fatalf("outbox = %+v, want one republish", out)
	}
	m := out[0]
	want := map[string]string{
		job.AttrKind: "payment.capture", job.AttrKey: "order-7", job.AttrVersion: "1", job.AttrID: "id-order-7",
		job.AttrPrevTraceParent: traceparent(1),
		"tenant":                "t-order-7", // the job's own attribute, as enqueued
	}
	for k, v := range want {
		if m.Attributes[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, m.Attributes[k], v)
		}
	}
	if _, ok := m.Attributes[job.AttrAttempt]; ok {
		t.Errorf("pubq_attempt must be absent on a replay: %v", m.Attributes)
	}
	if ts, err := time.Parse(time.RFC3339Nano, m.Attributes[job.AttrEnqueuedAt]); err != nil || !ts.Equal(before.EnqueuedAt) {
		t.Errorf("pubq_enqueued_at = %q, want the original %v", m.Attributes[job.AttrEnqueuedAt], before.EnqueuedAt)
	}
	if m.Topic != "t-critical" || m.Data != `{"n":1}` || !m.Due {
		t.Errorf("republish = %+v", m)
	}
	// The message decodes as a fresh first attempt.
	j, err := job.Decode([]byte(m.Data), m.Attributes, time.Now())
	if err != nil || j.Attempt != 1 || j.Key != "order-7" {
		t.Fatalf("decoding the republished message: %+v, %v", j, err)
	}

	// The worker can claim it as attempt 1.
	r := b.claim(t, "order-7", 30*time.Second, traceparent(30))
	if r.Attempt != 1 || r.Fence != after.Fence+1 {
		t.Errorf("claim after replay: attempt %d fence %d", r.Attempt, r.Fence)
	}

	// Replaying again does nothing and says so.
	res, err = b.insp.Replay(b.ctx, "bob", inspect.Filter{Keys: []string{"order-7"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 0 || res.Matched != 1 || !strings.Contains(res.Jobs[0].Reason, "running, not dead") {
		t.Fatalf("second replay = %+v", res)
	}
	if !strings.Contains(res.Summary(), "nothing to replay") {
		t.Errorf("summary %q does not say why", res.Summary())
	}
	if n := len(b.outbox(t, "order-7")); n != 1 {
		t.Errorf("second replay wrote an outbox row: %d rows", n)
	}
	audit := b.audit(t)
	if len(audit) != 2 || audit[0].Detail["result"] != "replayed" || audit[1].Actor != "bob" || audit[1].Detail["result"] != "noop" {
		t.Fatalf("audit = %+v", audit)
	}
	if audit[0].Detail["prev_traceparent"] != traceparent(1) || audit[0].Detail["last_error"] != "boom: card declined" {
		t.Errorf("audit detail = %v", audit[0].Detail)
	}
}

func TestReplayConcurrentCallsChangeTheJobOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dead(t, "race-1", "email.send")
	var wg sync.WaitGroup
	changed := make([]int, 8)
	errs := make([]error, 8)
	for i := range changed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.insp.Replay(b.ctx, fmt.Sprintf("op-%d", i), inspect.Filter{Keys: []string{"race-1"}}, false)
			errs[i] = err
			if err == nil {
				changed[i] = res.Changed
			}
		}()
	}
	wg.Wait()
	total := 0
	for i := range changed {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		total += changed[i]
	}
	if total != 1 || len(b.outbox(t, "race-1")) != 1 {
		t.Fatalf("%d replays changed the job, %d outbox rows; want exactly one", total, len(b.outbox(t, "race-1")))
	}
	if n := len(b.audit(t)); n != 8 {
		t.Errorf("%d audit rows, want one per call", n)
	}
}

func TestReplayDryRunWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dead(t, "d-1", "email.send")
	b.dead(t, "d-2", "email.send")
	for _, f := range []inspect.Filter{{Keys: []string{"d-1", "d-2"}}, {Queue: "default"}} {
		res, err := b.insp.Replay(b.ctx, "alice", f, true)
		if err != nil {
			t.Fatal(err)
		}
		if !res.DryRun || res.Changed != 2 || res.Matched != 2 {
			t.Fatalf("dry run %+v = %+v", f, res)
		}
	}
	if b.state(t, "d-1") != "dead" || b.state(t, "d-2") != "dead" || len(b.outbox(t, "d-1")) != 0 || len(b.audit(t)) != 0 {
		t.Fatal("a dry run changed something")
	}
}

func TestReplaySelection(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dead(t, "a", "email.send")
	b.dead(t, "b", "report.build")
	b.dead(t, "c", "payment.capture")
	// "old" died two days ago; "future" has a finished_at past the action's start (clock skew, or a
	// job dying while the replay runs) and must not be picked up.
	b.dead(t, "old", "email.send")
	b.dead(t, "future", "email.send")
	b.enqueue(t, "p", "email.send", `{}`) // pending: never replayed
	if _, err := b.pool.Exec(b.ctx, `UPDATE pubq.jobs SET finished_at = now() - interval '2 days' WHERE key = 'old';
		UPDATE pubq.jobs SET finished_at = now() + interval '1 hour' WHERE key = 'future'`); err != nil {
		t.Fatal(err)
	}

	if _, err := b.insp.Replay(b.ctx, "alice", inspect.Filter{}, false); !errors.Is(err, inspect.ErrUnboundedFilter) {
		t.Fatalf("empty filter: %v, want ErrUnboundedFilter", err)
	}
	if _, err := b.insp.Replay(b.ctx, "alice", inspect.Filter{Queue: "default", State: "succeeded"}, false); !errors.Is(err, inspect.ErrInvalidFilter) {
		t.Fatalf("state succeeded: %v, want ErrInvalidFilter", err)
	}

	var progress [][2]int
	res, err := b.insp.ReplayProgress(b.ctx, "alice", inspect.Filter{Queue: "default", Since: time.Now().Add(-time.Hour)}, false,
		func(done, total int) { progress = append(progress, [2]int{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 2 || b.state(t, "a") != "pending" || b.state(t, "b") != "pending" {
		t.Fatalf("queue default since 1h: %+v", res)
	}
	for _, k := range []string{"c", "old", "future"} {
		if b.state(t, k) != "dead" {
			t.Errorf("%s was replayed but is outside the selection", k)
		}
	}
	if len(progress) < 2 || progress[0] != [2]int{0, 2} || progress[len(progress)-1] != [2]int{2, 2} {
		t.Errorf("progress = %v", progress)
	}
	last := b.audit(t)
	if s := last[len(last)-1]; s.Key != "" || s.Detail["result"] != "bulk" || s.Detail["changed"] != float64(2) {
		t.Errorf("bulk summary audit = %+v", s)
	}

	// All: everything dead up to now, "future" excluded.
	res, err = b.insp.Replay(b.ctx, "alice", inspect.Filter{All: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 2 || b.state(t, "c") != "pending" || b.state(t, "old") != "pending" || b.state(t, "future") != "dead" {
		t.Fatalf("all: %+v", res)
	}
	if b.state(t, "p") != "pending" || len(b.outbox(t, "p")) != 1 {
		t.Error("the pending job was touched")
	}
}

func TestReplayManyJobsInBatches(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// 1234 dead jobs in one go; several share a finished_at so the (time, key) keyset is exercised.
	if _, err := b.pool.Exec(b.ctx, `INSERT INTO pubq.jobs (key, id, queue, kind, state, attempt, payload, finished_at, trace_parent)
		SELECT 'bulk-' || g, 'id-' || g, 'default', 'email.send', 'dead', 3, '{"g":1}'::bytea,
			date_trunc('second', now()) - make_interval(secs => g / 7), $1
		FROM generate_series(1, 1234) g`, traceparent(5)); err != nil {
		t.Fatal(err)
	}
	var calls int
	res, err := b.insp.ReplayProgress(b.ctx, "alice", inspect.Filter{Kind: "email.send"}, false, func(done, total int) {
		calls++
		if total != 1234 || done > total {
			t.Errorf("progress %d/%d", done, total)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 1234 || calls < 4 {
		t.Fatalf("replayed %d, %d progress calls", res.Changed, calls)
	}
	var dead, outbox, audits int
	if err := b.pool.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM pubq.jobs WHERE state = 'dead'),
		(SELECT count(DISTINCT job_key) FROM pubq.outbox), (SELECT count(*) FROM pubq.audit WHERE job_key IS NOT NULL)`).Scan(&dead, &outbox, &audits); err != nil {
		t.Fatal(err)
	}
	if dead != 0 || outbox != 1234 || audits != 1234 {
		t.Fatalf("after bulk replay: %d dead, %d outbox keys, %d audit rows", dead, outbox, audits)
	}
}

func TestReplayLeavesUnreplayableJobsDead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.pool.Exec(b.ctx, `INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, finished_at) VALUES
		('gone-queue', 'x', 'retired', 'old.kind', 'dead', '{}', now()),
		('no-payload', 'y', 'default', 'email.send', 'dead', NULL, now())`); err != nil {
		t.Fatal(err)
	}
	res, err := b.insp.Replay(b.ctx, "alice", inspect.Filter{Keys: []string{"gone-queue", "no-payload", "missing"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed != 0 || res.Matched != 3 || res.Failed != 2 {
		t.Fatalf("result = %+v", res)
	}
	if s := res.Summary(); !strings.Contains(s, "(1 left alone)") || !strings.Contains(s, "(2 failed)") {
		t.Errorf("summary %q", s)
	}
	reasons := map[string]string{}
	for _, j := range res.Jobs {
		reasons[j.Key] = j.Reason
	}
	if !strings.Contains(reasons["gone-queue"], `queue "retired" is not in the queue configuration`) ||
		!strings.Contains(reasons["no-payload"], "no payload") || !strings.Contains(reasons["missing"], "no job has this key") {
		t.Errorf("reasons = %v", reasons)
	}
	if b.state(t, "gone-queue") != "dead" || b.state(t, "no-payload") != "dead" {
		t.Error("an unreplayable job left the dead state")
	}
	// A single unknown key is not found (exit code 3 in pubqctl), not an empty success.
	if _, err := b.insp.Replay(b.ctx, "alice", inspect.Filter{Keys: []string{"missing"}}, false); !errors.Is(err, inspect.ErrNotFound) {
		t.Errorf("replay of a missing key: %v", err)
	}
}

func TestActionsRequireAnActor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dead(t, "k", "email.send")
	for name, act := range map[string]func(actor string) error{
		"retry":  func(a string) error { _, err := b.insp.RetryNow(b.ctx, a, "k"); return err },
		"cancel": func(a string) error { _, err := b.insp.CancelRetry(b.ctx, a, "k"); return err },
		"replay": func(a string) error {
			_, err := b.insp.Replay(b.ctx, a, inspect.Filter{Keys: []string{"k"}}, false)
			return err
		},
		"purge": func(a string) error {
			_, err := b.insp.Purge(b.ctx, a, inspect.Filter{Keys: []string{"k"}}, false)
			return err
		},
	} {
		for _, actor := range []string{"", "   ", "bad\nactor", strings.Repeat("x", 201)} {
			if err := act(actor); !errors.Is(err, inspect.ErrNoActor) {
				t.Errorf("%s by %q: %v, want ErrNoActor", name, actor, err)
			}
		}
	}
	if b.state(t, "k") != "dead" || len(b.audit(t)) != 0 {
		t.Fatal("an anonymous action changed something")
	}
}

func TestRetryNowAndCancelRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "r1", "email.send", `{"to":"x"}`)
	res := b.claim(t, "r1", 30*time.Second, traceparent(3))
	b.fail(t, "r1", res, store.FailRetry, "smtp 451", traceparent(3))
	if out := b.outbox(t, "r1"); len(out) != 2 || out[1].Due {
		t.Fatalf("setup: outbox %+v, want the enqueue and a retry due in an hour", out)
	}
	b.drainOutbox(t)
	// Put back only the retry, plus a dead-letter copy that RetryNow must not touch.
	if _, err := b.pool.Exec(b.ctx, `INSERT INTO pubq.outbox (job_key, topic, data, attributes, available_at) VALUES
		('r1', 't-default', '{"to":"x"}', '{"pubq_key":"r1","pubq_attempt":"2"}', now() + interval '1 hour'),
		('r1', 't-default-dead', '{"to":"x"}', '{"pubq_key":"r1","pubq_dead_reason":"exhausted"}', now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}

	got, err := b.insp.RetryNow(b.ctx, "alice", "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Changed != 1 {
		t.Fatalf("retry now = %+v", got)
	}
	j, _ := b.insp.Job(b.ctx, "r1", false)
	if j.State != "scheduled" || j.RunAt.After(j.Now) {
		t.Fatalf("after retry now: state %s run_at %v now %v", j.State, j.RunAt, j.Now)
	}
	out := b.outbox(t, "r1")
	if len(out) != 2 || !out[0].Due || out[1].Due {
		t.Fatalf("outbox after retry now = %+v: the delivery is due, the dead-letter copy is not", out)
	}

	// Cancel: the delivery goes, the job is cancelled; a second cancel is a no-op.
	if _, err := b.pool.Exec(b.ctx, `UPDATE pubq.jobs SET run_at = now() + interval '1 hour' WHERE key = 'r1'`); err != nil {
		t.Fatal(err)
	}
	got, err = b.insp.CancelRetry(b.ctx, "bob", "r1")
	if err != nil || got.Changed != 1 || got.Jobs[0].To != "cancelled" {
		t.Fatalf("cancel = %+v, %v", got, err)
	}
	if b.state(t, "r1") != "cancelled" {
		t.Fatal("not cancelled")
	}
	if out := b.outbox(t, "r1"); len(out) != 1 || out[0].Topic != "t-default-dead" {
		t.Fatalf("outbox after cancel = %+v", out)
	}
	got, err = b.insp.CancelRetry(b.ctx, "bob", "r1")
	if err != nil || got.Changed != 0 || !strings.Contains(got.Jobs[0].Reason, "cancelled, not scheduled") {
		t.Fatalf("second cancel = %+v, %v", got, err)
	}
	got, err = b.insp.RetryNow(b.ctx, "bob", "r1")
	if err != nil || got.Changed != 0 {
		t.Fatalf("retry now of a cancelled job = %+v, %v", got, err)
	}
	actions := []string{}
	for _, a := range b.audit(t) {
		actions = append(actions, a.Actor+":"+a.Action+":"+fmt.Sprint(a.Detail["result"]))
	}
	if strings.Join(actions, ",") != "alice:retry:retry_now,bob:cancel:cancelled,bob:cancel:noop,bob:retry:noop" {
		t.Errorf("audit = %v", actions)
	}

	for _, f := range []func() error{
		func() error { _, err := b.insp.RetryNow(b.ctx, "a", "missing"); return err },
		func() error { _, err := b.insp.CancelRetry(b.ctx, "a", "missing"); return err },
	} {
		if err := f(); !errors.Is(err, inspect.ErrNotFound) {
			t.Errorf("missing key: %v, want ErrNotFound", err)
		}
	}
}

func TestRetryNowRewritesALostDelivery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(t, "r2", "email.send", `{"to":"y"}`)
	res := b.claim(t, "r2", 30*time.Second, traceparent(4))
	b.fail(t, "r2", res, store.FailRetry, "smtp 451", traceparent(4))
	b.drainOutbox(t) // the scheduled delivery is gone (published early, or deleted by hand)

	got, err := b.insp.RetryNow(b.ctx, "alice", "r2")
	if err != nil || got.Changed != 1 {
		t.Fatalf("retry now = %+v, %v", got, err)
	}
	out := b.outbox(t, "r2")
	if len(out) != 1 || !out[0].Due || out[0].Attributes[job.AttrAttempt] != "2" ||
		out[0].Attributes[job.AttrPrevTraceParent] != traceparent(4) || out[0].Topic != "t-default" {
		t.Fatalf("rewritten delivery = %+v", out)
	}
	if a := b.audit(t); a[0].Detail["outbox"] != "rewritten" {
		t.Errorf("audit = %+v", a)
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dead(t, "dead-1", "email.send")
	b.dead(t, "dead-2", "payment.capture")
	b.enqueue(t, "pending-1", "email.send", `{}`)
	b.enqueue(t, "done-1", "email.send", `{}`)
	r := b.claim(t, "done-1", 30*time.Second, traceparent(9))
	if ok, err := b.st.Complete(b.ctx, []store.Lease{{Key: "done-1", Fence: r.Fence}}); err != nil || !ok[0] {
		t.Fatal(err)
	}

	if _, err := b.insp.Purge(b.ctx, "alice", inspect.Filter{}, false); !errors.Is(err, inspect.ErrUnboundedFilter) {
		t.Fatalf("empty filter: %v", err)
	}
	if _, err := b.insp.Purge(b.ctx, "alice", inspect.Filter{State: "pending", Queue: "default"}, false); !errors.Is(err, inspect.ErrInvalidFilter) {
		t.Fatalf("purging pending: %v", err)
	}
	res, err := b.insp.Purge(b.ctx, "alice", inspect.Filter{Queue: "default"}, true)
	if err != nil || res.Changed != 2 {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	res, err = b.insp.Purge(b.ctx, "alice", inspect.Filter{Keys: []string{"pending-1", "dead-2"}, Queue: "default"}, false)
	if err != nil || res.Changed != 0 || res.Matched != 2 {
		t.Fatalf("purge of keys outside the filter = %+v, %v", res, err)
	}
	res, err = b.insp.Purge(b.ctx, "alice", inspect.Filter{Queue: "default"}, false)
	if err != nil || res.Changed != 2 {
		t.Fatalf("purge = %+v, %v", res, err)
	}
	for _, k := range []string{"dead-1", "done-1"} {
		if _, err := b.insp.Job(b.ctx, k, false); !errors.Is(err, inspect.ErrNotFound) {
			t.Errorf("%s still there: %v", k, err)
		}
	}
	var attempts int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM pubq.attempts WHERE job_key = 'dead-1'`).Scan(&attempts); err != nil || attempts != 0 {
		t.Errorf("attempts of a purged job: %d, %v", attempts, err)
	}
	if b.state(t, "pending-1") != "pending" || b.state(t, "dead-2") != "dead" {
		t.Error("purge deleted outside its selection")
	}
	res, err = b.insp.Purge(b.ctx, "alice", inspect.Filter{Keys: []string{"dead-2"}}, false)
	if err != nil || res.Changed != 1 {
		t.Fatalf("purge by key = %+v, %v", res, err)
	}
	if _, err := b.insp.Purge(b.ctx, "alice", inspect.Filter{Keys: []string{"dead-2"}}, false); !errors.Is(err, inspect.ErrNotFound) {
		t.Errorf("purging a purged key: %v, want ErrNotFound", err)
	}
}

// A key purged and used again names a new job: its history starts empty, not with the old job's
// replay and purge.
func TestHistoryOfAReusedKeyIsTheNewJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dead(t, "reused", "email.send")
	if _, err := b.insp.Replay(b.ctx, "alice", inspect.Filter{Keys: []string{"reused"}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(b.ctx, `UPDATE pubq.jobs SET state = 'dead', finished_at = now() WHERE key = 'reused'`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.insp.Purge(b.ctx, "bob", inspect.Filter{Keys: []string{"reused"}}, false); err != nil {
		t.Fatal(err)
	}
	if j, err := b.insp.Job(b.ctx, "reused", false); !errors.Is(err, inspect.ErrNotFound) {
		t.Fatalf("after purge: %+v %v", j, err)
	}
	time.Sleep(5 * time.Millisecond) // the new job is created after the purge's audit row, as in life
	b.enqueue(t, "reused", "email.send", `{"to":"new"}`)
	j, err := b.insp.Job(b.ctx, "reused", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.History) != 0 {
		t.Errorf("the new job's history holds the old job's actions: %+v", j.History)
	}
}

// A bulk action stopped part way (Ctrl-C) has committed its first batches: its summary audit row is
// written all the same, saying so and how far it got.
func TestInterruptedBulkReplayIsAudited(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.pool.Exec(b.ctx, `INSERT INTO pubq.jobs (key, id, queue, kind, state, attempt, payload, finished_at)
		SELECT 'cut-' || g, 'id-' || g, 'default', 'email.send', 'dead', 3, '{}'::bytea, now() - make_interval(secs => g)
		FROM generate_series(1, 1100) g`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	res, err := b.insp.ReplayProgress(ctx, "alice", inspect.Filter{Kind: "email.send"}, false, func(done, total int) {
		if done > 0 {
			cancel() // the operator's Ctrl-C, after the first batch
		}
	})
	if !errors.Is(err, context.Canceled) || res == nil || res.Changed == 0 || res.Changed >= 1100 {
		t.Fatalf("interrupted replay: %+v, %v", res, err)
	}
	var result, errText string
	var changed int
	if err := b.pool.QueryRow(b.ctx, `SELECT detail->>'result', detail->>'error', (detail->>'changed')::int
		FROM pubq.audit WHERE job_key IS NULL AND action = 'replay'`).Scan(&result, &errText, &changed); err != nil {
		t.Fatalf("no summary audit row: %v", err)
	}
	if result != "bulk_interrupted" || !strings.Contains(errText, "canceled") || changed != res.Changed {
		t.Errorf("summary row: result %q, error %q, changed %d (result says %d)", result, errText, changed, res.Changed)
	}
}
