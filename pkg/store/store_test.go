package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func open(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

func batcher(t *testing.T, st *store.Store, owner string, lease time.Duration) *store.Batcher {
	t.Helper()
	b, err := store.NewBatcher(st, store.BatcherConfig{Owner: owner, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func claim(t *testing.T, b *store.Batcher, key string) store.ClaimResult {
	t.Helper()
	b.Enter()
	defer b.Leave()
	r, err := b.Claim(context.Background(), store.ClaimRequest{Key: key, Queue: "default", Kind: "demo.record", MaxAttempts: 3, Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func state(t *testing.T, st *store.Store, key string) (state string, attempt int) {
	t.Helper()
	if err := st.Pool().QueryRow(context.Background(), `SELECT state, attempt FROM pubq.jobs WHERE key = $1`, key).Scan(&state, &attempt); err != nil {
		t.Fatalf("job %q: %v", key, err)
	}
	return state, attempt
}

func count(t *testing.T, st *store.Store, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []store.Config{
		{},
		{URL: "postgres://x", CloudSQLInstance: "p:r:i"},
		{CloudSQLInstance: "p-r-i", User: "u", Database: "d"},
		{CloudSQLInstance: "p:r:i"},
	} {
		if _, err := store.Open(context.Background(), c); err == nil {
			t.Errorf("Open(%+v): want an error", c)
		}
	}
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	dsn := testenv.Postgres(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	applied := make([][]int, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := store.Open(ctx, store.Config{URL: dsn})
			if err != nil {
				errs[i] = err
				return
			}
			defer st.Close()
			applied[i], errs[i] = st.Migrate(ctx)
		}()
	}
	wg.Wait()
	total := 0
	for i := range 3 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		total += len(applied[i])
	}
	ms, _ := store.Migrations()
	if total != len(ms) {
		t.Fatalf("each migration must be applied exactly once, applied %d of %d", total, len(ms))
	}
}

func newJob(key, payload string) store.NewJob {
	return store.NewJob{Key: key, ID: "id-" + key, Queue: "default", Kind: "demo.record", Topic: "pubq-default",
		Payload: []byte(payload), Attributes: map[string]string{"pubq_kind": "demo.record", "pubq_key": key}}
}

func TestEnqueueIdempotency(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	r1, err := store.Enqueue(ctx, st.Pool(), []store.NewJob{newJob("k1", `{"a":1}`)})
	if err != nil || r1[0].Duplicate || r1[0].ID != "id-k1" {
		t.Fatalf("first enqueue: %+v %v", r1, err)
	}
	second := newJob("k1", `{"a":1}`)
	second.ID = "another-id"
	r2, err := store.Enqueue(ctx, st.Pool(), []store.NewJob{second})
	if err != nil || !r2[0].Duplicate || r2[0].ID != "id-k1" {
		t.Fatalf("same key again must answer the first job: %+v %v", r2, err)
	}
	_, err = store.Enqueue(ctx, st.Pool(), []store.NewJob{newJob("k1", `{"a":2}`)})
	var kc *store.KeyConflictError
	if !errors.As(err, &kc) || !errors.Is(err, store.ErrKeyConflict) || kc.ExistingID != "id-k1" {
		t.Fatalf("different payload under a used key: %v", err)
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.outbox WHERE job_key = 'k1'`); n != 1 {
		t.Fatalf("one outbox message for the key, got %d", n)
	}
}

func TestEnqueueConcurrentSameKey(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	ids := make(chan string, 20)
	var dups atomic.Int32
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := newJob("same", `{"x":true}`)
			j.ID = fmt.Sprintf("id-%d", i)
			r, err := store.Enqueue(ctx, st.Pool(), []store.NewJob{j})
			if err != nil {
				t.Error(err)
				return
			}
			if r[0].Duplicate {
				dups.Add(1)
			}
			ids <- r[0].ID
		}()
	}
	wg.Wait()
	close(ids)
	first := ""
	for id := range ids {
		if first == "" {
			first = id
		}
		if id != first {
			t.Fatalf("all callers must get one job id, got %s and %s", first, id)
		}
	}
	if dups.Load() != 19 {
		t.Fatalf("19 duplicates expected, got %d", dups.Load())
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.outbox`); n != 1 {
		t.Fatalf("exactly one message to publish, got %d", n)
	}
}

func TestEnqueueInRolledBackTxLeavesNothing(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	tx, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Enqueue(ctx, tx, []store.NewJob{newJob("tx1", `{}`)}); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)
	if n := count(t, st, `SELECT count(*) FROM pubq.jobs`) + count(t, st, `SELECT count(*) FROM pubq.outbox`); n != 0 {
		t.Fatalf("rolled back enqueue left %d rows", n)
	}
}

// 50 concurrent deliveries of one key: one claims it, every other one is told to wait.
func TestConcurrentClaimsOneWinner(t *testing.T) {
	st := open(t)
	b := batcher(t, st, "w1", 30*time.Second)
	var wg sync.WaitGroup
	var claimed, busy atomic.Int32
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch claim(t, b, "hot").Status {
			case store.Claimed:
				claimed.Add(1)
			case store.Busy:
				busy.Add(1)
			}
		}()
	}
	wg.Wait()
	if claimed.Load() != 1 || busy.Load() != 49 {
		t.Fatalf("claimed %d busy %d; want 1 and 49", claimed.Load(), busy.Load())
	}
	// Two batchers (two workers) racing on the same keys.
	b2 := batcher(t, st, "w2", 30*time.Second)
	claimed.Store(0)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bb := b
			if i%2 == 1 {
				bb = b2
			}
			if claim(t, bb, fmt.Sprintf("k%d", i%10)).Status == store.Claimed {
				claimed.Add(1)
			}
		}()
	}
	wg.Wait()
	if claimed.Load() != 10 {
		t.Fatalf("10 keys must be claimed exactly once each across two workers, got %d claims", claimed.Load())
	}
}

func TestCompleteThenDuplicateIsDone(t *testing.T) {
	st := open(t)
	b := batcher(t, st, "w1", 30*time.Second)
	r := claim(t, b, "k")
	if r.Status != store.Claimed || r.Attempt != 1 || r.Fence != 1 {
		t.Fatalf("first claim: %+v", r)
	}
	b.Enter()
	if err := b.Complete(context.Background(), store.Lease{Key: "k", Fence: r.Fence}); err != nil {
		t.Fatal(err)
	}
	b.Leave()
	if s, _ := state(t, st, "k"); s != "succeeded" {
		t.Fatalf("state %s", s)
	}
	if r := claim(t, b, "k"); r.Status != store.Done {
		t.Fatalf("duplicate of a finished job must be Done, got %v", r.Status)
	}
}

// A worker paused past its lease cannot complete: the taker-over holds a newer fence, and a
// transactional handler's writes roll back with the rejected completion.
// Release gives a running job back under its own fence only; a stale fence is told ErrLeaseLost.
func TestReleaseIsFenced(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	b := batcher(t, st, "w", 30*time.Second)
	r := claim(t, b, "rel")
	if err := st.Release(ctx, store.Lease{Key: "rel", Fence: r.Fence + 1}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("release under another fence: %v, want ErrLeaseLost", err)
	}
	if s, a := state(t, st, "rel"); s != "running" || a != 1 {
		t.Fatalf("after a refused release: %s attempt %d", s, a)
	}
	if err := st.Release(ctx, store.Lease{Key: "rel", Fence: r.Fence}); err != nil {
		t.Fatal(err)
	}
	if s, a := state(t, st, "rel"); s != "pending" || a != 0 {
		t.Fatalf("after release: %s attempt %d, want pending with the attempt given back", s, a)
	}
	if err := st.Release(ctx, store.Lease{Key: "rel", Fence: r.Fence}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("releasing twice: %v, want ErrLeaseLost", err)
	}
}

func TestExpiredLeaseTakeoverFencesZombie(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	zombie := batcher(t, st, "zombie", time.Second)
	fresh := batcher(t, st, "fresh", 30*time.Second)
	old := claim(t, zombie, "k")
	if r := claim(t, fresh, "k"); r.Status != store.Busy || r.Wait <= 0 {
		t.Fatalf("live lease must make others wait: %+v", r)
	}
	time.Sleep(1200 * time.Millisecond)
	taken := claim(t, fresh, "k")
	if taken.Status != store.Claimed || taken.Fence != old.Fence+1 || taken.Attempt != 2 {
		t.Fatalf("takeover after expiry: %+v (old %+v)", taken, old)
	}
	if _, err := st.Pool().Exec(ctx, `CREATE TABLE effects (k text)`); err != nil {
		t.Fatal(err)
	}
	tx, err := st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO effects VALUES ('zombie')`); err != nil {
		t.Fatal(err)
	}
	if err := store.CompleteTx(ctx, tx, store.Lease{Key: "k", Fence: old.Fence}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("zombie completion: %v", err)
	}
	_ = tx.Rollback(ctx)
	if _, err := st.Fail(ctx, store.Failure{Lease: store.Lease{Key: "k", Fence: old.Fence}, Kind: store.FailRetry, Attempt: 1,
		Message: store.OutboxMessage{Topic: "t", Data: []byte(`{}`)}}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("zombie cannot schedule a retry: %v", err)
	}
	ok, err := st.Complete(ctx, []store.Lease{{Key: "k", Fence: old.Fence}, {Key: "k", Fence: taken.Fence}})
	if err != nil || ok[0] || !ok[1] {
		t.Fatalf("only the current fence completes: %v %v", ok, err)
	}
	if n := count(t, st, `SELECT count(*) FROM effects`); n != 0 {
		t.Fatalf("zombie's writes must roll back, found %d", n)
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.outbox`); n != 0 {
		t.Fatalf("zombie must not schedule anything, found %d outbox rows", n)
	}
}

// A retry is scheduled once: a second Fail with the same fence is rejected, and a stale duplicate
// delivered before the retry is due is told NotDue.
func TestRetryScheduledExactlyOnce(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	b := batcher(t, st, "w", 30*time.Second)
	r := claim(t, b, "k")
	f := store.Failure{Lease: store.Lease{Key: "k", Fence: r.Fence}, Kind: store.FailRetry, Attempt: 1, Delay: time.Hour,
		Error: "boom", Message: store.OutboxMessage{Topic: "pubq-default", Data: []byte(`{}`), Attributes: map[string]string{"pubq_attempt": "2"}}}
	runAt, err := st.Fail(ctx, f)
	if err != nil || time.Until(runAt) < 59*time.Minute {
		t.Fatalf("Fail: %v %v", runAt, err)
	}
	var wg sync.WaitGroup
	var okCount atomic.Int32
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := st.Fail(ctx, f); err == nil {
				okCount.Add(1)
			} else if !errors.Is(err, store.ErrLeaseLost) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if okCount.Load() != 0 {
		t.Fatalf("the same attempt's retry was scheduled %d more times", okCount.Load())
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.outbox WHERE job_key = 'k'`); n != 1 {
		t.Fatalf("one retry message, got %d", n)
	}
	if s, _ := state(t, st, "k"); s != "scheduled" {
		t.Fatalf("state %s", s)
	}
	if r := claim(t, b, "k"); r.Status != store.NotDue {
		t.Fatalf("a stale duplicate before the retry is due: %v", r.Status)
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.attempts WHERE job_key = 'k' AND error = 'boom'`); n != 1 {
		t.Fatalf("the failed attempt is recorded once, got %d", n)
	}
}

func TestSnoozeKeepsAttemptAndDeadIsFinal(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	b := batcher(t, st, "w", 30*time.Second)
	r := claim(t, b, "k")
	if _, err := st.Fail(ctx, store.Failure{Lease: store.Lease{Key: "k", Fence: r.Fence}, Kind: store.FailSnooze, Attempt: 1,
		Message: store.OutboxMessage{Topic: "t", Data: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if _, a := state(t, st, "k"); a != 0 {
		t.Fatalf("a snooze must give its attempt back, attempt = %d", a)
	}
	r = claim(t, b, "k")
	if r.Status != store.Claimed || r.Attempt != 1 {
		t.Fatalf("after a snooze the next run is attempt 1 again: %+v", r)
	}
	if _, err := st.Fail(ctx, store.Failure{Lease: store.Lease{Key: "k", Fence: r.Fence}, Kind: store.FailDead, DeadReason: "permanent",
		Attempt: 1, Error: "bad", Message: store.OutboxMessage{Topic: "dead", Data: []byte(`{"p":1}`)}}); err != nil {
		t.Fatal(err)
	}
	if s, _ := state(t, st, "k"); s != "dead" {
		t.Fatalf("state %s", s)
	}
	if r := claim(t, b, "k"); r.Status != store.Done {
		t.Fatalf("a dead job is never run by a duplicate: %v", r.Status)
	}
}

func TestRelayPublishesOnceAcrossRelays(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	var jobs []store.NewJob
	for i := range 300 {
		jobs = append(jobs, newJob(fmt.Sprintf("k%03d", i), `{}`))
	}
	if _, err := store.Enqueue(ctx, st.Pool(), jobs); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	publish := func(_ context.Context, msgs []store.OutboxMessage) []error {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			seen[m.JobKey]++
		}
		time.Sleep(10 * time.Millisecond) // hold the rows while the other relay looks
		return make([]error, len(msgs))
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := st.Relay(ctx, 40, publish, func(int) time.Duration { return time.Second })
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(seen) != 300 {
		t.Fatalf("published %d distinct jobs, want 300", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s published %d times", k, n)
		}
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.outbox`); n != 0 {
		t.Fatalf("outbox not drained: %d", n)
	}
}

func TestRelayKeepsFailedMessages(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	if _, err := store.Enqueue(ctx, st.Pool(), []store.NewJob{newJob("ok", `{}`), newJob("bad", `{}`)}); err != nil {
		t.Fatal(err)
	}
	n, err := st.Relay(ctx, 10, func(_ context.Context, msgs []store.OutboxMessage) []error {
		errs := make([]error, len(msgs))
		for i, m := range msgs {
			if m.JobKey == "bad" {
				errs[i] = errors.New("unavailable")
			}
		}
		return errs
	}, func(int) time.Duration { return time.Hour })
	if err != nil || n != 1 {
		t.Fatalf("relay: %d %v", n, err)
	}
	var attempts int
	var lastErr string
	if err := st.Pool().QueryRow(ctx, `SELECT publish_attempts, last_error FROM pubq.outbox WHERE job_key = 'bad' AND available_at > now() + interval '59 minutes'`).Scan(&attempts, &lastErr); err != nil {
		t.Fatalf("failed message must stay, pushed back: %v", err)
	}
	if attempts != 1 || lastErr != "unavailable" {
		t.Fatalf("attempts %d error %q", attempts, lastErr)
	}
	backlog, _, err := st.OutboxStats(ctx)
	if err != nil || backlog != 0 {
		t.Fatalf("nothing due: %d %v", backlog, err)
	}
}

// A PublishFunc that returns fewer results than messages has not said the rest were published:
// their rows stay.
func TestRelayKeepsMessagesWithoutAResult(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	if _, err := store.Enqueue(ctx, st.Pool(), []store.NewJob{newJob("a", `{}`), newJob("b", `{}`), newJob("c", `{}`)}); err != nil {
		t.Fatal(err)
	}
	n, err := st.Relay(ctx, 10, func(_ context.Context, msgs []store.OutboxMessage) []error {
		return make([]error, 1) // one success, no word on the others
	}, func(int) time.Duration { return time.Hour })
	if err != nil || n != 1 {
		t.Fatalf("relay: %d %v", n, err)
	}
	if left := count(t, st, `SELECT count(*) FROM pubq.outbox WHERE publish_attempts = 1 AND last_error LIKE '%no result%'`); left != 2 {
		t.Fatalf("%d rows kept as failed, want 2", left)
	}
}

func TestPrune(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	// Each job was created some time before it finished; 'lateok' was created long ago but finished
	// recently (a retry far in the future) and must be kept.
	for _, q := range []string{
		`INSERT INTO pubq.jobs (key, id, queue, kind, state, created_at, finished_at) VALUES ('old', 'old', 'default', 'k', 'succeeded', now() - interval '11 days', now() - interval '10 days')`,
		`INSERT INTO pubq.jobs (key, id, queue, kind, state, created_at, finished_at) VALUES ('olddead', 'x', 'default', 'k', 'dead', now() - interval '10 days', now() - interval '10 days')`,
		`INSERT INTO pubq.jobs (key, id, queue, kind, state, created_at, finished_at) VALUES ('new', 'new', 'default', 'k', 'succeeded', now(), now())`,
		`INSERT INTO pubq.jobs (key, id, queue, kind, state, created_at, finished_at) VALUES ('lateok', 'l', 'default', 'k', 'succeeded', now() - interval '30 days', now() - interval '1 day')`,
		`INSERT INTO pubq.jobs (key, id, queue, kind, state, created_at, finished_at) VALUES ('otherq', 'o', 'bulk', 'k', 'succeeded', now() - interval '10 days', now() - interval '10 days')`,
		`INSERT INTO pubq.jobs (key, id, queue, kind, state, created_at) VALUES ('running', 'r', 'default', 'k', 'running', now() - interval '20 days')`,
		`INSERT INTO pubq.attempts (job_key, attempt, fence, outcome) VALUES ('old', 1, 1, 'retry')`,
	} {
		if _, err := st.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Oldest first: 'old' (created 11 days ago), then 'olddead' (10 days ago).
	n, last, err := st.Prune(ctx, "default", 8*24*time.Hour, 1, time.Time{})
	if err != nil || n != 1 || time.Since(last) < 10*24*time.Hour+23*time.Hour || time.Since(last) > 11*24*time.Hour+time.Hour {
		t.Fatalf("first batch: %d %v %v", n, last, err)
	}
	n, last2, err := st.Prune(ctx, "default", 8*24*time.Hour, 10, last)
	if err != nil || n != 1 || !last2.After(last) {
		t.Fatalf("second batch: %d %v %v", n, last2, err)
	}
	// Nothing left from there on: the cursor stays put.
	if n, last3, err := st.Prune(ctx, "default", 8*24*time.Hour, 10, last2); err != nil || n != 0 || !last3.Equal(last2) {
		t.Fatalf("third batch: %d %v %v", n, last3, err)
	}
	left, err := pgx.CollectRows(mustQuery(t, st, `SELECT key FROM pubq.jobs ORDER BY key`), pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(left) != "[lateok new otherq running]" {
		t.Fatalf("left %v", left)
	}
	if c := count(t, st, `SELECT count(*) FROM pubq.attempts`); c != 0 {
		t.Fatalf("attempts of pruned jobs must go too: %d", c)
	}
}

func mustQuery(t *testing.T, st *store.Store, sql string) pgx.Rows {
	rows, err := st.Pool().Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestRescue(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	b := batcher(t, st, "dead-worker", time.Second)
	claim(t, b, "a")
	claim(t, b, "b")
	if _, err := st.Pool().Exec(ctx, `UPDATE pubq.jobs SET attempt = 3 WHERE key = 'b'`); err != nil { // its last attempt
		t.Fatal(err)
	}
	targets := map[string]store.RescueTarget{"default": {Topic: "pubq-default", DeadLetterTopic: "pubq-default-dead",
		Attributes: func(key, id, kind string, attempt int, _ time.Time) map[string]string {
			return map[string]string{"pubq_key": key, "pubq_attempt": fmt.Sprint(attempt)}
		}}}
	if got, err := st.Rescue(ctx, 0, 10, targets); err != nil || len(got) != 0 {
		t.Fatalf("live leases are not rescued: %v %v", got, err)
	}
	time.Sleep(1100 * time.Millisecond)
	got, err := st.Rescue(ctx, 0, 10, targets)
	if err != nil || len(got) != 2 {
		t.Fatalf("rescue: %v %v", got, err)
	}
	if s, _ := state(t, st, "a"); s != "scheduled" {
		t.Fatalf("a: %s", s)
	}
	if s, _ := state(t, st, "b"); s != "dead" {
		t.Fatalf("b used its last attempt: %s", s)
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.attempts WHERE outcome = 'lost' AND worker = 'dead-worker'`); n != 2 {
		t.Fatalf("each lost attempt is recorded, got %d", n)
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.outbox WHERE job_key = 'a' AND topic = 'pubq-default' AND attributes->>'pubq_attempt' = '2'`); n != 1 {
		t.Fatal("a must be republished for attempt 2")
	}
	if n := count(t, st, `SELECT count(*) FROM pubq.outbox WHERE job_key = 'b' AND topic = 'pubq-default-dead'`); n != 1 {
		t.Fatal("b must be dead-lettered")
	}
	// The rescuer's dead letter carries the same attributes as the worker's.
	var attrs map[string]string
	if err := st.Pool().QueryRow(ctx, `SELECT attributes FROM pubq.outbox WHERE job_key = 'b'`).Scan(&attrs); err != nil {
		t.Fatal(err)
	}
	deadAt, err := time.Parse(time.RFC3339Nano, attrs[job.AttrDeadAt])
	if err != nil || time.Since(deadAt) > time.Minute || attrs[job.AttrDeadReason] != job.ReasonExhausted ||
		attrs[job.AttrDeadAttempts] != "3" || attrs[job.AttrDeadQueue] != "default" || attrs[job.AttrDeadError] == "" || attrs["pubq_key"] != "b" {
		t.Fatalf("rescued dead letter attributes: %v", attrs)
	}
	if got, _ := st.Rescue(ctx, 0, 10, targets); len(got) != 0 {
		t.Fatal("a rescue happens once")
	}
	// A stuck job on a queue this process does not know is left alone and blocks nothing.
	other := batcher(t, st, "dead-worker-2", time.Second)
	other.Enter()
	if _, err := other.Claim(ctx, store.ClaimRequest{Key: "elsewhere", Queue: "retired", Kind: "x.y"}); err != nil {
		t.Fatal(err)
	}
	other.Leave()
	claim(t, other, "c")
	time.Sleep(1100 * time.Millisecond)
	got, err = st.Rescue(ctx, 0, 10, targets)
	if err != nil || len(got) != 1 || got[0].Key != "c" {
		t.Fatalf("rescue past an unknown queue: %v %v", got, err)
	}
}

// A rescued job's delivery carries the job's own attributes as enqueued, under a fresh envelope, and not
// the first delivery's trace context.
func TestRescueKeepsTheJobsOwnAttributes(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	nj := newJob("own", `{}`)
	nj.Attributes = map[string]string{job.AttrKind: nj.Kind, job.AttrKey: "own", "tenant": "t1", job.AttrTraceParent: "00-old"}
	if _, err := store.Enqueue(ctx, st.Pool(), []store.NewJob{nj}); err != nil {
		t.Fatal(err)
	}
	claim(t, batcher(t, st, "dead-worker", time.Second), "own")
	time.Sleep(1100 * time.Millisecond)
	targets := map[string]store.RescueTarget{"default": {Topic: "pubq-default", DeadLetterTopic: "pubq-default-dead",
		Attributes: func(key, id, kind string, attempt int, _ time.Time) map[string]string {
			return map[string]string{job.AttrKey: key, job.AttrAttempt: fmt.Sprint(attempt)}
		}}}
	if got, err := st.Rescue(ctx, 0, 10, targets); err != nil || len(got) != 1 {
		t.Fatalf("rescue: %v %v", got, err)
	}
	var attrs map[string]string
	if err := st.Pool().QueryRow(ctx, `SELECT attributes FROM pubq.outbox WHERE job_key = 'own' AND attributes->>'pubq_attempt' = '2'`).Scan(&attrs); err != nil {
		t.Fatal(err)
	}
	if attrs["tenant"] != "t1" || attrs[job.AttrKey] != "own" {
		t.Errorf("rescued delivery's attributes: %v", attrs)
	}
	if _, ok := attrs[job.AttrTraceParent]; ok {
		t.Errorf("the first delivery's trace context came along: %v", attrs)
	}
}

// The batcher must not wait for its timer when every in-flight message is already waiting in it.
func TestBatcherFlushesWhenAllWaiting(t *testing.T) {
	st := open(t)
	b, err := store.NewBatcher(st, store.BatcherConfig{Owner: "w", MaxDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = 8
	for range n {
		b.Enter()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer b.Leave()
			if _, err := b.Claim(context.Background(), store.ClaimRequest{Key: fmt.Sprint(i), Queue: "q", Kind: "k"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("claims waited %s: the batcher waited for its timer", d)
	}
	if c := count(t, st, `SELECT count(*) FROM pubq.jobs WHERE state = 'running'`); c != n {
		t.Fatalf("%d claimed", c)
	}
	b.Close()
	if _, err := b.Claim(context.Background(), store.ClaimRequest{Key: "late"}); !errors.Is(err, store.ErrBatcherClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// Claims and completions travel as array literals: keys, ids and trace contexts with quotes,
// backslashes, commas, braces and non-ASCII text, empty and binary-looking payloads must arrive exactly,
// and duplicates in one batch must not both run.
func TestBatcherRoundTripsAwkwardValues(t *testing.T) {
	st := open(t)
	b, err := store.NewBatcher(st, store.BatcherConfig{Owner: `o"w\ner`, MaxDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	enq := time.Date(2026, 11, 25, 19, 0, 0, 123456000, time.UTC)
	reqs := []store.ClaimRequest{
		{Key: `a"quote`, ID: `id\back`, Queue: "q", Kind: "k.one", MaxAttempts: 3, Payload: []byte(`{"x":"\"}"}`), TraceParent: "tp-1", EnqueuedAt: enq},
		{Key: `b\slash`, Queue: "q", Kind: "k.two", Payload: []byte(`[]`), EnqueuedAt: enq},
		{Key: "c,{comma} NULL", Queue: "q,x", Kind: "k", Payload: nil},
		{Key: "d élève 学生", Queue: "q", Kind: "k", Payload: []byte{}},
		{}, // a duplicate delivery of the first, set below
		{Key: "NULL", Queue: "q", Kind: "k", Payload: []byte(`"NULL"`)},
	}
	reqs[4] = reqs[0] // either delivery may be the one that runs
	for range reqs {
		b.Enter()
	}
	results := make([]store.ClaimResult, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer b.Leave()
			res, err := b.Claim(context.Background(), r)
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	ran := 0
	for i, r := range results {
		if reqs[i].Key == `a"quote` {
			if r.Status == store.Claimed {
				ran++
			} else if r.Status != store.Busy {
				t.Errorf("duplicate %d: %v, want busy", i, r.Status)
			}
			continue
		}
		if r.Status != store.Claimed || r.Attempt != 1 || r.Fence != 1 {
			t.Errorf("claim %q: %+v", reqs[i].Key, r)
		}
	}
	if ran != 1 {
		t.Fatalf("%d deliveries of the duplicated key claimed it, want 1", ran)
	}
	for i, want := range reqs[:4] {
		var key, id, queue, kind, tp, owner string
		var payload []byte
		var at time.Time
		err := st.Pool().QueryRow(context.Background(), `SELECT key, id, queue, kind, coalesce(trace_parent, ''), lease_owner, payload, enqueued_at
			FROM pubq.jobs WHERE key = $1`, want.Key).Scan(&key, &id, &queue, &kind, &tp, &owner, &payload, &at)
		if err != nil {
			t.Fatalf("job %q: %v", want.Key, err)
		}
		wantID := want.ID
		if wantID == "" {
			wantID = want.Key
		}
		if id != wantID || queue != want.Queue || kind != want.Kind || tp != want.TraceParent || owner != `o"w\ner` {
			t.Errorf("job %d: id %q queue %q kind %q tp %q owner %q", i, id, queue, kind, tp, owner)
		}
		if string(payload) != string(want.Payload) || (want.Payload == nil) != (payload == nil) {
			t.Errorf("job %q: payload %q (nil %v), want %q (nil %v)", want.Key, payload, payload == nil, want.Payload, want.Payload == nil)
		}
		if !want.EnqueuedAt.IsZero() && !at.Equal(want.EnqueuedAt) {
			t.Errorf("job %q: enqueued_at %s, want %s", want.Key, at, want.EnqueuedAt)
		}
	}
	// Completions: the right fence succeeds, a stale one is refused, in one batch.
	for range 3 {
		b.Enter()
	}
	errs := make([]error, 3)
	leases := []store.Lease{{Key: `b\slash`, Fence: 1}, {Key: "d élève 学生", Fence: 1}, {Key: "c,{comma} NULL", Fence: 7}}
	for i, l := range leases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer b.Leave()
			errs[i] = b.Complete(context.Background(), l)
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], store.ErrLeaseLost) {
		t.Fatalf("completions: %v", errs)
	}
	if s, _ := state(t, st, "d élève 学生"); s != "succeeded" {
		t.Fatalf("completed job is %s", s)
	}
	if s, _ := state(t, st, "c,{comma} NULL"); s != "running" {
		t.Fatalf("stale completion changed the job to %s", s)
	}
}

// records is the claim records' keys, each record's sorted and in braces, in record order: "{a b}{c}".
func records(t *testing.T, st *store.Store) string {
	t.Helper()
	recs, err := pgx.CollectRows(mustQuery(t, st, `SELECT '{' || array_to_string(ARRAY(SELECT unnest(keys) ORDER BY 1), ' ') || '}' FROM pubq.claims ORDER BY id`), pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(recs, "")
}

// claimTogether claims keys in one round trip, as concurrently received messages are (b must not flush
// on a short timer: it then flushes once all of them wait).
func claimTogether(t *testing.T, b *store.Batcher, keys ...string) []store.ClaimResult {
	t.Helper()
	for range keys {
		b.Enter()
	}
	out := make([]store.ClaimResult, len(keys))
	var g errgroup.Group
	for i, k := range keys {
		g.Go(func() error {
			defer b.Leave()
			r, err := b.Claim(context.Background(), store.ClaimRequest{Key: k, Queue: "default", Kind: "demo.record", MaxAttempts: 3, Payload: []byte(`{}`)})
			out[i] = r
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Each claim round trip records the keys it claimed; the record goes once all its jobs are settled, and
// the rescuer finds running jobs through the records, sweeps the records of jobs no longer running, and
// records running jobs that no record lists (claimed by an older binary).
func TestClaimRecords(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	b, err := store.NewBatcher(st, store.BatcherConfig{Owner: "w", Lease: time.Second, MaxDelay: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	age := func() { // the sweep leaves records younger than a minute to their workers
		t.Helper()
		if _, err := st.Pool().Exec(ctx, `UPDATE pubq.claims SET at = at - interval '2 minutes'`); err != nil {
			t.Fatal(err)
		}
	}
	targets := map[string]store.RescueTarget{"default": {Topic: "t", DeadLetterTopic: "d",
		Attributes: func(key, id, kind string, attempt int, _ time.Time) map[string]string { return map[string]string{} }}}
	rescue := func(want string) { // a rescuer's pass: the sweep, then the rescue
		t.Helper()
		if err := st.SweepClaims(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := st.Rescue(ctx, 0, 10, targets)
		var keys []string
		for _, r := range got {
			keys = append(keys, r.Key)
		}
		if err != nil || strings.Join(keys, " ") != want {
			t.Fatalf("rescued %v (%v), want %q", keys, err, want)
		}
	}
	ab := claimTogether(t, b, "a", "b")
	if ab[0].Status != store.Claimed || ab[1].Status != store.Claimed || ab[0].Record == 0 || ab[0].Record != ab[1].Record {
		t.Fatalf("one round trip, one record: %+v", ab)
	}
	if got := records(t, st); got != "{a b}" {
		t.Fatalf("records after the claim: %s", got)
	}
	// a succeeds, b's retry is recorded: both settled, and the next round trip deletes the record.
	b.Enter()
	if err := b.Complete(ctx, store.Lease{Key: "a", Fence: ab[0].Fence}); err != nil {
		t.Fatal(err)
	}
	b.Leave()
	b.Done(ab[0].Record, true)
	if _, err := st.Fail(ctx, store.Failure{Lease: store.Lease{Key: "b", Fence: ab[1].Fence}, Kind: store.FailRetry, Attempt: 1, Delay: time.Hour,
		Message: store.OutboxMessage{Topic: "t", Data: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	b.Done(ab[1].Record, true)
	b.Done(ab[1].Record, true) // done more often than claimed changes nothing
	cd := claimTogether(t, b, "c", "d")
	if got := records(t, st); got != "{c d}" {
		t.Fatalf("records after a and b settled: %s", got)
	}
	// d's outcome could not be recorded (say its completion failed), so its record stays even once c
	// is settled. Both leases expire (as if the worker had died), and the rescuer finds both jobs
	// through the record.
	b.Done(cd[1].Record, false)
	time.Sleep(1100 * time.Millisecond)
	rescue("c d")
	b.Done(cd[0].Record, true)
	e := claim(t, b, "e") // a round trip: nothing to delete, d was not settled
	if got := records(t, st); got != "{c d}{e}" {
		t.Fatalf("records after an unsettled job: %s", got)
	}
	// The sweep deletes records none of whose jobs runs, once older than a minute.
	rescue("")
	if got := records(t, st); got != "{c d}{e}" {
		t.Fatalf("the sweep took a young record: %s", got)
	}
	age()
	rescue("")
	if got := records(t, st); got != "{e}" {
		t.Fatalf("records after the sweep: %s", got)
	}
	// A job taken over runs under the newer claim's record; the old record is not swept while that
	// job runs.
	time.Sleep(1100 * time.Millisecond)
	if r := claim(t, b, "e"); r.Status != store.Claimed || r.Fence != e.Fence+1 || r.Record == e.Record {
		t.Fatalf("take-over: %+v", r)
	}
	age()
	rescue("")
	if got := records(t, st); got != "{e}{e}" {
		t.Fatalf("records after the take-over: %s", got)
	}
	// A running job no record lists (an older binary's claim) is invisible to the rescuer until
	// reconciled.
	if _, err := st.Pool().Exec(ctx, `DELETE FROM pubq.claims`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	rescue("")
	if n, err := st.ReconcileClaims(ctx); err != nil || n != 1 {
		t.Fatalf("reconcile: %d %v", n, err)
	}
	if n, err := st.ReconcileClaims(ctx); err != nil || n != 0 {
		t.Fatalf("second reconcile: %d %v", n, err)
	}
	rescue("e")
	// Close deletes the records its last jobs settled.
	f := claim(t, b, "f")
	b.Enter()
	if err := b.Complete(ctx, store.Lease{Key: "f", Fence: f.Fence}); err != nil {
		t.Fatal(err)
	}
	b.Leave()
	b.Done(f.Record, true)
	b.Close()
	var left int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM pubq.claims WHERE id = $1`, f.Record).Scan(&left); err != nil || left != 0 {
		t.Fatalf("record of a settled job left after Close: %d %v", left, err)
	}
}

// With Trace on, a batched round trip has a span of its own with the round trip's SQL under it, linked
// both ways with the spans of the jobs it carried; queries outside any span are not traced, and a
// round trip that carries no sampled job has no span.
func TestBatcherRoundTripSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t), Trace: true, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	count(t, st, `SELECT count(*) FROM pubq.jobs`)
	// No flush on a timer: the two claims below go together once both wait, however slow the machine.
	b, err := store.NewBatcher(st, store.BatcherConfig{Owner: "w1", Lease: 30 * time.Second, MaxDelay: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	claim(t, b, "untraced") // no span in its context
	before := len(rec.Ended())
	if before != 0 {
		t.Fatalf("queries outside any span were traced: %v", spanNames(rec.Ended()))
	}

	tracer := tp.Tracer("test")
	keys := []string{"traced-a", "traced-b"}
	jobCtx := make([]context.Context, len(keys))
	jobSpan := make([]trace.Span, len(keys))
	for i, k := range keys {
		jobCtx[i], jobSpan[i] = tracer.Start(ctx, "job "+k)
		b.Enter()
	}
	res := make([]store.ClaimResult, len(keys))
	var g errgroup.Group
	for i, k := range keys {
		g.Go(func() error {
			defer b.Leave()
			r, err := b.Claim(jobCtx[i], store.ClaimRequest{Key: k, Queue: "default", Kind: "demo.record", MaxAttempts: 3, Payload: []byte(`{}`)})
			res[i] = r
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	b.Enter()
	if err := b.Complete(jobCtx[0], store.Lease{Key: keys[0], Fence: res[0].Fence}); err != nil {
		t.Fatal(err)
	}
	b.Leave()
	for _, s := range jobSpan {
		s.End()
	}

	spans := rec.Ended()[before:]
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	batches := byName["pubq batch"]
	if len(batches) != 2 {
		t.Fatalf("%d round-trip spans, want 2 (the claims, the completion): %v", len(batches), spanNames(spans))
	}
	var claimBatch, completeBatch sdktrace.ReadOnlySpan
	for _, s := range batches {
		attrs := map[attribute.Key]int64{}
		for _, a := range s.Attributes() {
			attrs[a.Key] = a.Value.AsInt64()
		}
		switch {
		case attrs["pubq.batch.claims"] == 2 && attrs["pubq.batch.completions"] == 0:
			claimBatch = s
		case attrs["pubq.batch.claims"] == 0 && attrs["pubq.batch.completions"] == 1:
			completeBatch = s
		default:
			t.Fatalf("round-trip span attributes %v", s.Attributes())
		}
		if s.Parent().IsValid() {
			t.Errorf("round-trip span has parent %v, want a root", s.Parent())
		}
	}
	if claimBatch == nil || completeBatch == nil {
		t.Fatalf("want one claim and one completion round trip")
	}
	linked := func(s sdktrace.ReadOnlySpan) map[trace.SpanID]string {
		m := map[trace.SpanID]string{}
		for _, l := range s.Links() {
			m[l.SpanContext.SpanID()] = ""
			for _, a := range l.Attributes {
				if a.Key == "pubq.link" {
					m[l.SpanContext.SpanID()] = a.Value.AsString()
				}
			}
		}
		return m
	}
	for i, s := range jobSpan {
		if _, ok := linked(claimBatch)[s.SpanContext().SpanID()]; !ok {
			t.Errorf("claim round trip does not link to job %d's span", i)
		}
	}
	if _, ok := linked(completeBatch)[jobSpan[0].SpanContext().SpanID()]; !ok || len(completeBatch.Links()) != 1 {
		t.Errorf("completion round trip links %v, want job 0's span only", completeBatch.Links())
	}
	for _, s := range byName["job traced-a"] {
		l := linked(s)
		if l[claimBatch.SpanContext().SpanID()] != "claim" || l[completeBatch.SpanContext().SpanID()] != "completion" {
			t.Errorf("job span links %v, want the claim and the completion round trips", s.Links())
		}
	}
	for _, s := range byName["job traced-b"] {
		if l := linked(s); len(l) != 1 || l[claimBatch.SpanContext().SpanID()] != "claim" {
			t.Errorf("job span links %v, want the claim round trip", s.Links())
		}
	}
	// The round trip's SQL is under its span: the claim statement (in otelpgx's batch span) under the claim's.
	parent := map[trace.SpanID]trace.SpanID{}
	for _, s := range spans {
		parent[s.SpanContext().SpanID()] = s.Parent().SpanID()
	}
	under := func(s sdktrace.ReadOnlySpan, ancestor trace.SpanID) bool {
		for id := s.Parent().SpanID(); id.IsValid(); id = parent[id] {
			if id == ancestor {
				return true
			}
		}
		return false
	}
	var claimSQL bool
	for _, s := range spans {
		if !under(s, claimBatch.SpanContext().SpanID()) {
			continue
		}
		for _, a := range s.Attributes() {
			if a.Key == "db.query.text" && strings.Contains(a.Value.AsString(), "INSERT INTO pubq.jobs") {
				claimSQL = true
			}
		}
	}
	if !claimSQL {
		t.Errorf("no claim statement under the claim round trip's span: %v", spanNames(spans))
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// A round trip the sampler does not record (it is a new root; here every root is dropped) is not
// linked from the jobs' spans: a link would point at a span no backend has.
func TestBatcherRoundTripUnsampled(t *testing.T) {
	ctx := context.Background()
	never := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t), Trace: true, TracerProvider: never})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b := batcher(t, st, "w1", 30*time.Second)
	rec := tracetest.NewSpanRecorder()
	jobs := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)) // the job's span: sampled
	jctx, span := jobs.Tracer("test").Start(ctx, "job")
	b.Enter()
	if _, err := b.Claim(jctx, store.ClaimRequest{Key: "k", Queue: "default", Kind: "demo.record", MaxAttempts: 3, Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	b.Leave()
	span.End()
	if got := rec.Ended(); len(got) != 1 || len(got[0].Links()) != 0 {
		t.Fatalf("job span links %v, want none", got[0].Links())
	}
}
