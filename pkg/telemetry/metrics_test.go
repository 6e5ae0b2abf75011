package telemetry

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// scrape GETs /metrics and returns series → value ("name{labels}" exactly as exposed).
func scrape(t *testing.T, p *Providers) map[string]string {
	t.Helper()
	srv := httptest.NewServer(p.MetricsHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: %s: %s", resp.Status, body)
	}
	series := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		series[line[:i]] = line[i+1:]
	}
	return series
}

func setupMetrics(t *testing.T, logger *slog.Logger) (*Providers, *Metrics) {
	t.Helper()
	cleanEnv(t)
	if logger == nil {
		logger = quietLogger()
	}
	p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, p) })
	m, err := NewMetrics(p.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

func TestMetricsExposition(t *testing.T) {
	p, m := setupMetrics(t, nil)
	ctx := context.Background()
	m.Enqueued(ctx, "critical", "email.send", 3)
	m.Enqueued(ctx, "critical", "email.send", 0) // ignored
	m.Enqueued(ctx, "bulk", "report.build", 1)
	m.Started(ctx, "critical", "email.send")
	m.Started(ctx, "critical", "email.send")
	m.Succeeded(ctx, "critical", "email.send", 20*time.Millisecond)
	m.Failed(ctx, "critical", "email.send", 2*time.Second)
	m.Snoozed(ctx, "critical", "email.send", 10*time.Millisecond)
	m.Abandoned(ctx, "critical", "email.send", 5*time.Second)
	m.Retried(ctx, "critical", "email.send")
	m.DeadLettered(ctx, "critical", "email.send", "exhausted")
	m.DuplicateSkipped(ctx, "critical", "email.send")
	m.QueueWait(ctx, "critical", "email.send", 300*time.Millisecond)
	m.QueueWait(ctx, "critical", "email.send", -time.Second) // clock skew counts as 0
	m.InFlight(ctx, "critical", 2)
	m.InFlight(ctx, "critical", -1)
	m.LeaseRenewed(ctx, "critical")
	m.LeaseRenewed(ctx, "critical")
	m.LeaseLost(ctx, "critical")
	m.Rescued(ctx, "critical", "payment.charge", 4)
	if err := m.ObserveOutbox(func(context.Context) (int64, time.Duration, error) {
		return 17, 90 * time.Second, nil
	}); err != nil {
		t.Fatal(err)
	}

	got := scrape(t, p)
	want := map[string]string{
		`pubq_jobs_enqueued_total{kind="email.send",queue="critical"}`:                            "3",
		`pubq_jobs_enqueued_total{kind="report.build",queue="bulk"}`:                              "1",
		`pubq_jobs_started_total{kind="email.send",queue="critical"}`:                             "2",
		`pubq_jobs_succeeded_total{kind="email.send",queue="critical"}`:                           "1",
		`pubq_jobs_failed_total{kind="email.send",queue="critical"}`:                              "1",
		`pubq_jobs_snoozed_total{kind="email.send",queue="critical"}`:                             "1",
		`pubq_jobs_abandoned_total{kind="email.send",queue="critical"}`:                           "1",
		`pubq_job_duration_seconds_count{kind="email.send",outcome="snoozed",queue="critical"}`:   "1",
		`pubq_job_duration_seconds_count{kind="email.send",outcome="abandoned",queue="critical"}`: "1",
		`pubq_jobs_retried_total{kind="email.send",queue="critical"}`:                             "1",
		`pubq_jobs_dead_lettered_total{kind="email.send",queue="critical",reason="exhausted"}`:    "1",
		`pubq_jobs_duplicate_skipped_total{kind="email.send",queue="critical"}`:                   "1",
		`pubq_jobs_in_flight{queue="critical"}`:                                                   "1",
		`pubq_leases_renewed_total{queue="critical"}`:                                             "2",
		`pubq_leases_lost_total{queue="critical"}`:                                                "1",
		`pubq_jobs_rescued_total{kind="payment.charge",queue="critical"}`:                         "4",
		`pubq_outbox_backlog`:            "17",
		`pubq_outbox_oldest_age_seconds`: "90",
		`pubq_job_queue_wait_seconds_count{kind="email.send",queue="critical"}`:                   "2",
		`pubq_job_queue_wait_seconds_sum{kind="email.send",queue="critical"}`:                     "0.3",
		`pubq_job_queue_wait_seconds_bucket{kind="email.send",queue="critical",le="0.25"}`:        "1",
		`pubq_job_queue_wait_seconds_bucket{kind="email.send",queue="critical",le="0.5"}`:         "2",
		`pubq_job_duration_seconds_count{kind="email.send",outcome="succeeded",queue="critical"}`: "1",
		`pubq_job_duration_seconds_sum{kind="email.send",outcome="succeeded",queue="critical"}`:   "0.02",
		`pubq_job_duration_seconds_count{kind="email.send",outcome="failed",queue="critical"}`:    "1",
		`pubq_job_duration_seconds_sum{kind="email.send",outcome="failed",queue="critical"}`:      "2",
	}
	for series, v := range want {
		if got[series] != v {
			t.Errorf("%s = %q, want %q", series, got[series], v)
		}
	}
	// The private registry also carries the Go runtime and process collectors.
	if _, ok := got["go_goroutines"]; !ok {
		t.Errorf("go_goroutines missing from /metrics")
	}
	if t.Failed() {
		var names []string
		for s := range got {
			if strings.HasPrefix(s, "pubq") {
				names = append(names, s)
			}
		}
		t.Logf("pubq series exposed: %v", names)
	}
}

func TestObserveOutboxErrorAndReplace(t *testing.T) {
	var logs syncBuffer
	p, m := setupMetrics(t, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := m.ObserveOutbox(nil); err == nil || !strings.HasPrefix(err.Error(), "telemetry: ") {
		t.Errorf("ObserveOutbox(nil) = %v", err)
	}
	var calls atomic.Int32
	if err := m.ObserveOutbox(func(context.Context) (int64, time.Duration, error) {
		calls.Add(1)
		return 0, 0, errors.New("db down")
	}); err != nil {
		t.Fatal(err)
	}
	got := scrape(t, p)
	if _, ok := got["pubq_outbox_backlog"]; ok {
		t.Errorf("a failed observation still exported pubq_outbox_backlog=%s", got["pubq_outbox_backlog"])
	}
	if calls.Load() != 1 {
		t.Errorf("callback ran %d times for one scrape", calls.Load())
	}
	if !strings.Contains(logs.String(), "db down") {
		t.Errorf("callback error not logged: %s", logs.String())
	}

	// A second registration replaces the first: only its values are exported.
	if err := m.ObserveOutbox(func(context.Context) (int64, time.Duration, error) {
		return 5, 1500 * time.Millisecond, nil
	}); err != nil {
		t.Fatal(err)
	}
	got = scrape(t, p)
	if got["pubq_outbox_backlog"] != "5" || got["pubq_outbox_oldest_age_seconds"] != "1.5" {
		t.Errorf("after replace: backlog=%q oldest=%q", got["pubq_outbox_backlog"], got["pubq_outbox_oldest_age_seconds"])
	}
	if calls.Load() != 1 {
		t.Errorf("the replaced callback still runs (%d calls)", calls.Load())
	}
}

func TestProvidersHaveSeparateRegistries(t *testing.T) {
	p1, m1 := setupMetrics(t, nil)
	p2, _ := setupMetrics(t, nil)
	m1.Started(context.Background(), "q", "k")
	if got := scrape(t, p1)[`pubq_jobs_started_total{kind="k",queue="q"}`]; got != "1" {
		t.Errorf("p1 started = %q, want 1", got)
	}
	if got, ok := scrape(t, p2)[`pubq_jobs_started_total{kind="k",queue="q"}`]; ok {
		t.Errorf("p2 shows p1's counter: %q", got)
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	ctx := context.Background()
	m.Enqueued(ctx, "q", "k", 1)
	m.Started(ctx, "q", "k")
	m.Succeeded(ctx, "q", "k", time.Second)
	m.Failed(ctx, "q", "k", time.Second)
	m.Snoozed(ctx, "q", "k", time.Second)
	m.Abandoned(ctx, "q", "k", time.Second)
	m.Retried(ctx, "q", "k")
	m.DeadLettered(ctx, "q", "k", "r")
	m.DuplicateSkipped(ctx, "q", "k")
	m.QueueWait(ctx, "q", "k", time.Second)
	m.InFlight(ctx, "q", 1)
	m.LeaseRenewed(ctx, "q")
	m.LeaseLost(ctx, "q")
	m.Rescued(ctx, "q", "k", 1)
	if err := m.ObserveOutbox(func(context.Context) (int64, time.Duration, error) { return 0, 0, nil }); err != nil {
		t.Errorf("nil ObserveOutbox = %v", err)
	}
}

func TestNewMetricsOnGlobalProvider(t *testing.T) {
	m, err := NewMetrics(nil)
	if err != nil || m == nil {
		t.Fatalf("NewMetrics(nil) = %v, %v", m, err)
	}
	m.Started(context.Background(), "q", "k") // must not panic on whatever global is installed
}

func BenchmarkMetricsStarted(b *testing.B) {
	m, err := NewMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m.Started(ctx, "critical", "email.send")
	}
}

// A stalled database must not hang /metrics: the exporter gives the callback no deadline of its own.
func TestObserveOutboxIsBounded(t *testing.T) {
	p, m := setupMetrics(t, nil)
	if err := m.ObserveOutbox(func(ctx context.Context) (int64, time.Duration, error) {
		<-ctx.Done() // a query that never returns until cancelled
		return 0, 0, ctx.Err()
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := scrape(t, p)
	if d := time.Since(start); d > OutboxObserveTimeout+3*time.Second {
		t.Errorf("scrape took %s", d)
	}
	if _, ok := got["pubq_outbox_backlog"]; ok {
		t.Error("a timed-out observation exported a backlog")
	}
	if _, ok := got["pubq_jobs_in_flight"]; !ok && len(got) == 0 {
		t.Error("the scrape exported nothing")
	}
}

func TestCountOnCommit(t *testing.T) {
	var n int
	count := func() { n++ }
	CountAfterCommit(context.Background(), count)
	if n != 1 {
		t.Fatalf("without CountOnCommit the update runs at once: %d", n)
	}
	ctx, settle := CountOnCommit(context.Background())
	CountAfterCommit(ctx, count)
	CountAfterCommit(ctx, count)
	if n != 1 {
		t.Fatalf("updates ran before the commit: %d", n)
	}
	settle(true)
	if n != 3 {
		t.Fatalf("after the commit %d, want 3", n)
	}
	settle(true) // settled once: nothing is run twice
	if n != 3 {
		t.Fatalf("a second settle ran updates again: %d", n)
	}
	ctx, settle = CountOnCommit(context.Background())
	CountAfterCommit(ctx, count)
	settle(false)
	if n != 3 {
		t.Fatalf("a rolled-back transaction's update ran: %d", n)
	}
}
