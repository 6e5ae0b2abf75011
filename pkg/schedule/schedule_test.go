package schedule_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/schedule"
	"github.com/pubq/pubq/pkg/telemetry"
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
	st := pubqtest.Store(t)
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

// queueEnqueuer fails the first failures calls of each key, then answers as publish.Client does.
type queueEnqueuer struct {
	failures int
	calls    map[string]int
}

func (f *queueEnqueuer) Enqueue(_ context.Context, r publish.Request) (publish.Result, error) {
	f.calls[r.Key]++
	if f.calls[r.Key] <= f.failures {
		return publish.Result{}, errors.New("database unreachable")
	}
	return publish.Result{ID: "id-" + r.Key, Key: r.Key, Kind: r.Kind, Queue: "default"}, nil
}

// Every line about a tick names the tick's job (job_key, job_kind; job_queue and job_id once enqueued)
// once, and carries the trace of the scheduler's context.
func TestTickLogsNameTheJob(t *testing.T) {
	sc := []queue.Schedule{{Name: "scan", Cron: "*/5 * * * *", Kind: "students.scan"}}
	start := time.Date(2026, 11, 25, 1, 2, 0, 0, time.UTC)
	key := schedule.Key("scan", start.Truncate(time.Hour).Add(5*time.Minute))
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	for _, c := range []struct {
		name     string
		failures int
		retryFor time.Duration
		msgs     []string
	}{
		{"retried", 1, 2 * time.Minute, []string{"schedule tick failed; retrying", "schedule tick"}},
		{"given up", 1000, time.Nanosecond, []string{"schedule tick failed; giving up on it"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(trace.ContextWithSpanContext(context.Background(),
				trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})))
			defer cancel()
			clock := &fakeClock{now: start, end: start.Add(5 * time.Minute), stop: cancel}
			var logs pubqtest.SyncBuffer
			s, err := schedule.New(&queueEnqueuer{failures: c.failures, calls: map[string]int{}}, sc, &schedule.Config{Now: clock.Now,
				Sleep: clock.Sleep, CatchUp: -1, RetryFor: c.retryFor, Logger: telemetry.NewLogger(&logs, telemetry.LoggerOptions{})})
			if err != nil {
				t.Fatal(err)
			}
			_ = s.Run(ctx)
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("%v: %s", err, l)
				}
				msg, _ := m["msg"].(string)
				got = append(got, msg)
				if m["job_key"] != key || m["job_kind"] != "students.scan" || m["trace_id"] != tid.String() || m["span_id"] != sid.String() {
					t.Errorf("line does not name the tick's job and trace: %s", l)
				}
				if enqueued := msg == "schedule tick"; enqueued != (m["job_id"] == "id-"+key && m["job_queue"] == "default") {
					t.Errorf("job_id and job_queue must name the enqueued job, and only it: %s", l)
				}
				for k := range m {
					if n := strings.Count(l, `"`+k+`":`); n != 1 {
						t.Errorf("%s appears %d times in %s", k, n, l)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.msgs) {
				t.Errorf("logged %q, want %q", got, c.msgs)
			}
		})
	}
}
