package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
)

// TestJobMetrics runs a known workload through the producer and the worker processes and checks the
// exact counters and histogram counts both expose on /metrics, by queue and kind: 20 jobs that succeed,
// 2 that fail once then succeed, 1 that fails permanently, 2 repeated HTTP enqueues (duplicates, not
// enqueued again) and 3 duplicate Pub/Sub deliveries of finished jobs (skipped, not run).
func TestJobMetrics(t *testing.T) {
	s := newStack(t)
	// Tracing off: the metrics do not depend on it. A 3 s lease is renewed every second, so the slow
	// job below is renewed at least once.
	w := s.startWorker(t, map[string]string{"PUBQ_LEASE": "3s"})
	p := s.startProducer(t, nil)

	var records []enqueueResult
	for i := range 20 {
		records = append(records, p.enqueue(t, "demo.record", fmt.Sprintf("m-record-%02d", i), fmt.Sprintf(`{"note":"r%d"}`, i), ""))
	}
	for i := range 2 {
		p.enqueue(t, "demo.flaky", fmt.Sprintf("m-flaky-%d", i), `{"fail_times":1}`, "")
	}
	p.enqueue(t, "demo.flaky", "m-permanent", `{"permanent":true}`, "")
	p.enqueue(t, "demo.record", "m-slow", `{"sleep_ms":2500}`, "")
	for i := range 2 { // the same key and payload again: a duplicate, not a new job
		if r := p.enqueue(t, "demo.record", fmt.Sprintf("m-record-%02d", i), fmt.Sprintf(`{"note":"r%d"}`, i), ""); !r.Duplicate || r.ID != records[i].ID {
			t.Fatalf("re-enqueueing %s: %+v, want a duplicate of %s", r.Key, r, records[i].ID)
		}
	}

	const q = `queue="default"`
	series := func(name, labels string) string { return name + "{" + labels + "}" }
	rec, flaky := `kind="demo.record",`+q, `kind="demo.flaky",`+q
	beforeDuplicates := map[string]float64{
		series("pubq_jobs_started_total", rec):                                                21,
		series("pubq_jobs_started_total", flaky):                                              5, // 2×2 attempts + 1
		series("pubq_jobs_succeeded_total", rec):                                              21,
		series("pubq_jobs_succeeded_total", flaky):                                            2,
		series("pubq_jobs_failed_total", flaky):                                               3,
		series("pubq_jobs_retried_total", flaky):                                              2,
		series("pubq_jobs_dead_lettered_total", flaky+`,reason="permanent"`):                  1,
		series("pubq_job_duration_seconds_count", rec+`,outcome="succeeded"`):                 21,
		series("pubq_job_duration_seconds_count", `kind="demo.flaky",outcome="succeeded",`+q): 2,
		series("pubq_job_duration_seconds_count", `kind="demo.flaky",outcome="failed",`+q):    3,
		series("pubq_job_queue_wait_seconds_count", rec):                                      21, // every attempt
		series("pubq_job_queue_wait_seconds_count", flaky):                                    5,
	}
	workerJobs := func() map[string]float64 { return jobSeries(scrape(t, w.url("/metrics"))) }
	waitMetrics(t, "worker", workerJobs, beforeDuplicates)

	// Three more deliveries of finished jobs, published as another service would.
	ctx := ctxT(t)
	client, err := pubsub.NewClient(ctx, s.project)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	pub := client.Publisher("pubq-default")
	defer pub.Stop()
	for _, r := range records[:3] {
		if _, err := pub.Publish(ctx, &pubsub.Message{Data: []byte(`{}`), Attributes: map[string]string{
			"pubq_kind": r.Kind, "pubq_key": r.Key, "pubq_id": r.ID}}).Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := maps.Clone(beforeDuplicates)
	want[series("pubq_jobs_duplicate_skipped_total", rec)] = 3
	got := waitMetrics(t, "worker", workerJobs, want)

	// Every histogram's +Inf bucket holds its count, and its sum is positive.
	all := scrape(t, w.url("/metrics"))
	for k, n := range got {
		base, ok := strings.CutSuffix(strings.SplitN(k, "{", 2)[0], "_count")
		if !ok {
			continue
		}
		labels := strings.TrimSuffix(strings.SplitN(k, "{", 2)[1], "}")
		inf := series(base+"_bucket", labels+`,le="+Inf"`)
		if v, ok := findSeries(all, inf); !ok || v != n {
			t.Errorf("%s = %v (found %v), want the count %v", inf, v, ok, n)
		}
		if v, _ := findSeries(all, series(base+"_sum", labels)); v <= 0 {
			t.Errorf("%s_sum{%s} = %v, want > 0", base, labels, v)
		}
	}
	if v, ok := findSeries(all, series("pubq_jobs_in_flight", q)); !ok || v != 0 {
		t.Errorf("pubq_jobs_in_flight{%s} = %v (found %v), want 0 at rest", q, v, ok)
	}
	// The slow job's lease was renewed (2.5 s at a renewal a second); none was lost.
	if v, ok := findSeries(all, series("pubq_leases_renewed_total", q)); !ok || v < 1 || v > 4 {
		t.Errorf("pubq_leases_renewed_total{%s} = %v (found %v), want 1 to 4", q, v, ok)
	}
	if v, _ := findSeries(all, series("pubq_leases_lost_total", q)); v != 0 {
		t.Errorf("pubq_leases_lost_total{%s} = %v, want 0", q, v)
	}
	// Queue waits are publish → start on an idle worker: each well under the lease.
	if n, _ := findSeries(all, series("pubq_job_queue_wait_seconds_count", rec)); n > 0 {
		if sum, _ := findSeries(all, series("pubq_job_queue_wait_seconds_sum", rec)); sum/n > 2 {
			t.Errorf("mean queue wait %.2fs over %v jobs, want well under 2s", sum/n, n)
		}
	}

	// The producer counts what it accepted, and the duplicates it answered with the existing job.
	waitMetrics(t, "producer", func() map[string]float64 { return jobSeries(scrape(t, p.url("/metrics"))) }, map[string]float64{
		series("pubq_jobs_enqueued_total", rec):          21,
		series("pubq_jobs_enqueued_total", flaky):        3,
		series("pubq_jobs_duplicate_skipped_total", rec): 2, // the two re-enqueued keys
	})
	// Everything enqueued was relayed: the outbox is empty, so its oldest row has no age.
	pm := scrape(t, p.url("/metrics"))
	for _, name := range []string{"pubq_outbox_backlog", "pubq_outbox_oldest_age_seconds"} {
		v, ok := pm[name]
		if !ok {
			v, ok = findSeries(pm, name+"{}")
		}
		if !ok || v != 0 {
			t.Errorf("producer %s = %v (found %v), want 0 once relayed", name, v, ok)
		}
	}
}

// jobSeries keeps pubq's job counters and histogram counts with a non-zero value, each series
// written as name{labels} with labels sorted (as parseMetrics does).
func jobSeries(all map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range all {
		name := strings.SplitN(k, "{", 2)[0]
		keep := (strings.HasPrefix(name, "pubq_jobs_") && strings.HasSuffix(name, "_total")) ||
			(strings.HasPrefix(name, "pubq_job_") && strings.HasSuffix(name, "_count"))
		if keep && v != 0 {
			out[k] = v
		}
	}
	return out
}

// findSeries looks up a series written with its labels in any order.
func findSeries(all map[string]float64, s string) (float64, bool) {
	name, labels, _ := strings.Cut(strings.TrimSuffix(s, "}"), "{")
	m, err := parseLabels(labels)
	if err != nil {
		return 0, false
	}
	v, ok := all[series(name, m)]
	return v, ok
}

// waitMetrics polls get until it equals want exactly, series written with labels in any order; a
// mismatch at the timeout fails the test with the difference. It returns the last scrape.
func waitMetrics(t *testing.T, who string, get func() map[string]float64, want map[string]float64) map[string]float64 {
	t.Helper()
	canon := map[string]float64{}
	for k, v := range want {
		name, labels, _ := strings.Cut(strings.TrimSuffix(k, "}"), "{")
		m, err := parseLabels(labels)
		if err != nil {
			t.Fatalf("bad series %q: %v", k, err)
		}
		canon[series(name, m)] = v
	}
	var got map[string]float64
	deadline := time.Now().Add(spanWait)
	for {
		got = get()
		if maps.Equal(got, canon) {
			return got
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	keys := slices.Sorted(maps.Keys(canon))
	for k := range got {
		if _, ok := canon[k]; !ok {
			keys = append(keys, k)
		}
	}
	var b strings.Builder
	for _, k := range keys {
		g, gok := got[k]
		w, wok := canon[k]
		mark := " "
		if g != w || gok != wok {
			mark = "≠"
		}
		fmt.Fprintf(&b, "  %s %s got %v (present %v) want %v (present %v)\n", mark, k, g, gok, w, wok)
	}
	t.Fatalf("%s metrics not as expected after %v:\n%s", who, spanWait, b.String())
	return nil
}
