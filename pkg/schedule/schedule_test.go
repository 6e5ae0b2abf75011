package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/schedule"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fakeClock advances only when the scheduler sleeps, so a simulated hour takes milliseconds.
type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	end  time.Time
	stop context.CancelFunc
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Sleep(_ context.Context, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	if !c.now.Before(c.end) {
		c.stop()
	}
}

// Two producers run the same schedule over the same simulated half hour: each tick exists once.
func TestTwoReplicasFireEachTickOnce(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	cfg, err := queue.Parse([]byte(`
version: 1
queues:
  default:
    topic: pubq-default
    subscription: pubq-default-worker
    dead_letter_topic: pubq-default-dead
    dead_letter_subscription: pubq-default-dead-inspect
    kinds: [students.scan]
schedules:
  scan:
    cron: "*/5 * * * *"
    kind: students.scan
    payload: {ranges: 4}
`))
	if err != nil {
		t.Fatal(err)
	}
	client, err := publish.New(st, &publish.Config{Queues: cfg})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 25, 1, 2, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for range 2 {
		rctx, cancel := context.WithCancel(ctx)
		clock := &fakeClock{now: start, end: start.Add(30 * time.Minute), stop: cancel}
		s, err := schedule.New(client, cfg.Schedules, &schedule.Config{Now: clock.Now, Sleep: clock.Sleep})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(rctx) }()
	}
	wg.Wait()
	rows, err := st.Pool().Query(ctx, `SELECT key FROM pubq.jobs ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		keys = append(keys, k)
	}
	// Catch-up tick 01:00, then 01:05 ... 01:30.
	want := []string{}
	for m := 0; m <= 30; m += 5 {
		want = append(want, schedule.Key("scan", start.Truncate(time.Hour).Add(time.Duration(m)*time.Minute)))
	}
	if len(keys) != len(want) {
		t.Fatalf("jobs %v\nwant %v", keys, want)
	}
	for i := range want {
		if keys[i] != want[i] {
			t.Fatalf("job %d = %s, want %s", i, keys[i], want[i])
		}
	}
	var outbox int
	_ = st.Pool().QueryRow(ctx, `SELECT count(*) FROM pubq.outbox`).Scan(&outbox)
	if outbox != len(want) {
		t.Fatalf("%d messages to publish for %d ticks", outbox, len(want))
	}
}

func TestBadCron(t *testing.T) {
	_, err := schedule.New(nopEnqueuer{}, []queue.Schedule{{Name: "x", Cron: "61 * * * *", Kind: "a.b"}}, nil)
	if err == nil {
		t.Fatal("want an error for minute 61")
	}
}

type nopEnqueuer struct{}

func (nopEnqueuer) Enqueue(context.Context, publish.Request) (publish.Result, error) {
	return publish.Result{}, nil
}

// flakyEnqueuer fails the first failures calls of each key, then records the key.
type flakyEnqueuer struct {
	failures int
	calls    map[string]int
	done     []string
}

func (f *flakyEnqueuer) Enqueue(_ context.Context, r publish.Request) (publish.Result, error) {
	f.calls[r.Key]++
	if f.calls[r.Key] <= f.failures {
		return publish.Result{}, errors.New("database unreachable")
	}
	f.done = append(f.done, r.Key)
	return publish.Result{ID: r.Key}, nil
}

// A tick whose enqueue fails is retried, not skipped; one that keeps failing is given up after
// RetryFor, and the next tick is fired on time.
func TestFailedTickIsRetried(t *testing.T) {
	sc := []queue.Schedule{{Name: "scan", Cron: "*/5 * * * *", Kind: "students.scan"}}
	start := time.Date(2026, 11, 25, 1, 2, 0, 0, time.UTC)
	for _, c := range []struct {
		name     string
		failures int
		want     []string // ticks enqueued by 01:12
	}{
		{"blip", 3, []string{"01:05", "01:10"}},
		{"outage longer than RetryFor", 1000, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			clock := &fakeClock{now: start, end: start.Add(10 * time.Minute), stop: cancel}
			f := &flakyEnqueuer{failures: c.failures, calls: map[string]int{}}
			s, err := schedule.New(f, sc, &schedule.Config{Now: clock.Now, Sleep: clock.Sleep, CatchUp: -1,
				RetryFor: 2 * time.Minute, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			_ = s.Run(ctx)
			var want []string
			for _, hm := range c.want {
				tick, _ := time.Parse("15:04", hm)
				want = append(want, schedule.Key("scan", start.Truncate(24*time.Hour).Add(time.Duration(tick.Hour())*time.Hour+time.Duration(tick.Minute())*time.Minute)))
			}
			if fmt.Sprint(f.done) != fmt.Sprint(want) {
				t.Errorf("enqueued %v, want %v", f.done, want)
			}
			k5 := schedule.Key("scan", start.Truncate(time.Hour).Add(5*time.Minute))
			k10 := schedule.Key("scan", start.Truncate(time.Hour).Add(10*time.Minute))
			if c.failures > 100 && (f.calls[k5] < 3 || f.calls[k10] == 0) {
				t.Errorf("calls %v: the failing tick must be retried, then the next one fired", f.calls)
			}
		})
	}
}
