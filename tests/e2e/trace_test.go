package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/telemetry/otlptest"
	"github.com/pubq/pubq/pkg/traceview"
)

// spanWait bounds each wait for spans: generous, the binaries are -race builds on a shared machine.
const spanWait = 3 * time.Minute

// TestTraceAcrossProcesses runs the producer and the worker as separate processes exporting to one
// OTLP receiver and follows jobs enqueued over HTTP to their handlers' SQL.
func TestTraceAcrossProcesses(t *testing.T) {
	rcv := otlptest.Start(t)
	s := newStack(t)
	w := s.startWorker(t, otelEnv(rcv, workerService))
	p := s.startProducer(t, otelEnv(rcv, producerService))

	// Each job gets a marker in its payload that must never reach a log.
	marker := "secret-marker-" + randomHex(t, 6)
	recTrace, recParent := randomHex(t, 16), randomHex(t, 8)
	rec := p.enqueue(t, "demo.record", "e2e-record", fmt.Sprintf(`{"note":%q}`, marker),
		"00-"+recTrace+"-"+recParent+"-01")
	flakyTrace := randomHex(t, 16)
	flaky := p.enqueue(t, "demo.flaky", "e2e-flaky", fmt.Sprintf(`{"fail_times":2,"note":%q}`, marker),
		"00-"+flakyTrace+"-"+randomHex(t, 8)+"-01")
	// No traceparent: otelhttp starts this job's trace.
	dead := p.enqueue(t, "demo.flaky", "e2e-dead", fmt.Sprintf(`{"permanent":true,"note":%q}`, marker), "")

	t.Run("OneTraceFromHTTPToSQL", func(t *testing.T) {
		spans := rcv.WaitFor(t, spanWait, all(received("demo.record", rec.Key, 1, 5), func(spans []otlptest.Span) bool {
			h := handlerSpans(spans, "demo.record", rec.Key)
			return hasSQL(children(spans, h[0].SpanID)) && claimRoundTrip(spans, h[0]) != nil
		}))
		idx := byID(spans)
		h := handlerSpans(spans, "demo.record", rec.Key)[0]
		if h.TraceID != recTrace {
			t.Fatalf("handler span is in trace %s, want the request's trace %s\n%s", h.TraceID, recTrace, otlptest.Summary(otlptest.InTrace(spans, h.TraceID)))
		}
		server := assertAncestry(t, idx, h,
			step{"pubq job demo.record", workerService},
			step{processSpan, workerService},
			step{subscribeSpan, workerService},
			step{createSpan, relays},
			step{"pubq enqueue", producerService},
			step{"POST /v1/jobs", producerService},
		)
		if server.ParentSpanID != recParent || server.Kind != trace.SpanKindServer {
			t.Errorf("HTTP server span: parent %q kind %v, want the traceparent header's span %q, kind server", server.ParentSpanID, server.Kind, recParent)
		}
		if h.Kind != trace.SpanKindConsumer || h.Status.Code == codes.Error {
			t.Errorf("handler span: kind %v status %v, want consumer, not error", h.Kind, h.Status)
		}
		for k, want := range map[string]string{
			"pubq.job.kind": "demo.record", "pubq.job.key": rec.Key, "pubq.job.queue": "default",
			"pubq.job.attempt": "1", "pubq.job.id": rec.ID, "messaging.system": "gcp_pubsub",
		} {
			if got := h.Attributes[k]; got != want {
				t.Errorf("handler span attribute %s = %q, want %q", k, got, want)
			}
		}
		// The handler's SQL: the demo's INSERT and pubq's completion run in the job's transaction,
		// children of the handler span.
		sql := children(spans, h.SpanID)
		var names []string
		for _, c := range sql {
			names = append(names, c.Name)
		}
		t.Logf("children of the handler span: %v", names)
		insert := findSQL(sql, "INSERT", "demo_effects")
		complete := findSQL(sql, "UPDATE", "pubq.jobs", "'succeeded'")
		if insert == nil || complete == nil {
			t.Fatalf("want the INSERT into demo_effects and the completion UPDATE under the handler span; got:\n%s", otlptest.Summary(sql))
		}
		for _, c := range []*otlptest.Span{insert, complete} {
			if c.Service != workerService || c.Kind != trace.SpanKindClient || c.Attributes["db.system.name"] != "postgresql" {
				t.Errorf("SQL span %q: service %q kind %v db.system.name %q", c.Name, c.Service, c.Kind, c.Attributes["db.system.name"])
			}
		}
		if !insert.Start.Before(complete.Start) {
			t.Errorf("the completion UPDATE started before the handler's INSERT")
		}
		// pubq's own queries. The producer's idempotent insert and its outbox row run in the request,
		// under the enqueue span.
		enqueue := otlptest.Named(otlptest.InTrace(spans, recTrace), "pubq enqueue")
		if len(enqueue) != 1 {
			t.Fatalf("%d enqueue spans in the trace, want 1", len(enqueue))
		}
		for k, want := range map[string]string{"pubq.job.kind": "demo.record", "pubq.job.key": rec.Key, "pubq.job.queue": "default"} {
			if got := enqueue[0].Attributes[k]; got != want {
				t.Errorf("enqueue span attribute %s = %q, want %q", k, got, want)
			}
		}
		var underEnqueue []otlptest.Span
		for _, s := range spans {
			if s.TraceID == recTrace && s.SpanID != enqueue[0].SpanID && descends(idx, s, enqueue[0].SpanID) {
				underEnqueue = append(underEnqueue, s)
			}
		}
		if findSQL(underEnqueue, "INSERT", "INSERT INTO pubq.jobs", "payload_hash") == nil || findSQL(underEnqueue, "INSERT", "INSERT INTO pubq.outbox") == nil {
			t.Errorf("want the job and outbox INSERTs under the enqueue span; got:\n%s", otlptest.Summary(underEnqueue))
		}
		// The worker's claim ran in a batched round trip: a trace of its own, linked both ways with
		// the handler span, with the claim statement under it.
		rt := claimRoundTrip(spans, h)
		if rt == nil {
			t.Fatalf("the handler span links to no claim round trip with the claim statement under it; links %+v", h.Links)
		}
		if rt.Service != workerService || !linksTo(*rt, h, "") || rt.TraceID == recTrace {
			t.Errorf("claim round trip %s (service %s, trace %s) does not link back to the handler span, or is in the job's trace", rt.SpanID, rt.Service, rt.TraceID)
		}
		// Every span of both processes that concerns this job is in this one trace.
		services := map[string]bool{}
		for _, s := range otlptest.InTrace(spans, recTrace) {
			services[s.Service] = true
		}
		if !services[producerService] || !services[workerService] || len(services) != 2 {
			t.Errorf("services in the trace: %v, want exactly %s and %s", services, producerService, workerService)
		}
	})

	t.Run("RetriesLinkedInOrder", func(t *testing.T) {
		spans := rcv.WaitFor(t, spanWait, all(received("demo.flaky", flaky.Key, 2, 4), received("demo.flaky", flaky.Key, 3, 4)))
		idx := byID(spans)
		hs := handlerSpans(spans, "demo.flaky", flaky.Key)
		if len(hs) != 3 {
			t.Fatalf("%d handler spans, want 3:\n%s", len(hs), otlptest.Summary(hs))
		}
		for i, h := range hs {
			if got := h.Attributes["pubq.job.attempt"]; got != fmt.Sprint(i+1) {
				t.Errorf("handler span %d: pubq.job.attempt %q, want %d", i, got, i+1)
			}
			// By design the retry's publish is a child of the failed attempt's span: one trace per job.
			if h.TraceID != flakyTrace {
				t.Errorf("attempt %d is in trace %s, want the request's trace %s", i+1, h.TraceID, flakyTrace)
			}
		}
		for i := 1; i < 3; i++ {
			prev, cur := hs[i-1], hs[i]
			if !linksTo(cur, prev, "previous_attempt") {
				t.Errorf("attempt %d does not link to attempt %d's span %s (links: %+v)", i+1, i, prev.SpanID, cur.Links)
			}
			// The chain: attempt N+1 ← process ← subscribe ← create (relay) ← attempt N.
			top := assertAncestry(t, idx, cur,
				step{"pubq job demo.flaky", workerService},
				step{processSpan, workerService},
				step{subscribeSpan, workerService},
				step{createSpan, relays},
			)
			if top.ParentSpanID != prev.SpanID {
				t.Errorf("attempt %d's create span has parent %s, want attempt %d's span %s", i+1, top.ParentSpanID, i, prev.SpanID)
			}
		}
		for i, h := range hs[:2] {
			if h.Status.Code != codes.Error || !strings.Contains(h.Status.Message, "demo: asked to fail") {
				t.Errorf("attempt %d: status %+v, want Error with the handler's error", i+1, h.Status)
			}
			if !hasEvent(h, "exception") || !hasEvent(h, "retry scheduled") {
				t.Errorf("attempt %d: events %v, want exception and retry scheduled", i+1, h.Events)
			}
		}
		if last := hs[2]; last.Status.Code == codes.Error || hasEvent(last, "exception") {
			t.Errorf("attempt 3 succeeded but its span has status %+v, events %v", last.Status, last.Events)
		}
		for _, l := range hs[0].Links {
			if l.Attributes["pubq.link"] == "previous_attempt" {
				t.Errorf("attempt 1 links to a previous attempt: %+v", hs[0].Links)
			}
		}
	})

	// What pubqctl trace shows for the flaky job, fed the spans both processes exported: its one trace
	// with all three attempts and nothing of the other jobs, plus the batches it took part in (claim
	// round trips, the client's publish/ack/modack), whose links to other messages are not followed.
	t.Run("WaterfallOfOneJob", func(t *testing.T) {
		spans := rcv.WaitFor(t, spanWait, received("demo.flaky", flaky.Key, 3, 4))
		src := spanSource(spans)
		traces, err := traceview.FetchJob(ctxT(t), src, traceview.JobQuery{Key: flaky.Key})
		if err != nil {
			t.Fatal(err)
		}
		var own []*traceview.Trace
		rounds := 0
		for _, tr := range traces {
			keys := map[string]bool{}
			for _, s := range tr.Spans {
				if k := s.Attributes["pubq.job.key"]; k != "" {
					keys[k] = true
				}
				if s.Name == "pubq batch" {
					rounds++
				}
			}
			switch {
			case keys[flaky.Key] && len(keys) == 1:
				own = append(own, tr)
			case len(keys) > 0:
				t.Errorf("trace %s has spans of jobs %v", tr.TraceID, keys)
			}
		}
		if len(own) != 1 || own[0].TraceID != flakyTrace {
			t.Fatalf("the job's own traces: %d, want its one trace %s", len(own), flakyTrace)
		}
		if n := len(handlerSpans(fromView(own[0]), "demo.flaky", flaky.Key)); n != 3 {
			t.Errorf("%d attempts in the job's trace, want 3", n)
		}
		if rounds < 3 || len(traces) > 20 {
			t.Errorf("%d traces with %d claim round trips, want the 3 attempts' round trips and few others", len(traces), rounds)
		}
		var out strings.Builder
		if err := traceview.Render(&out, traces, traceview.RenderOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Logf("pubqctl trace %s would print:\n%s", flaky.Key, out.String())
	})

	t.Run("DeadLetterSaysWhy", func(t *testing.T) {
		spans := rcv.WaitFor(t, spanWait, all(received("demo.flaky", dead.Key, 1, 5), func(spans []otlptest.Span) bool {
			h := handlerSpans(spans, "demo.flaky", dead.Key)
			return len(namedChildren(spans, h[0].SpanID, deadCreateSpan)) == 1
		}))
		idx := byID(spans)
		h := handlerSpans(spans, "demo.flaky", dead.Key)[0]
		if h.Status.Code != codes.Error || !strings.Contains(h.Status.Message, "demo: asked to fail") {
			t.Errorf("status %+v, want Error with the handler's error", h.Status)
		}
		if got := h.Attributes["pubq.dead_reason"]; got != "permanent" {
			t.Errorf("pubq.dead_reason = %q, want permanent", got)
		}
		if !hasEvent(h, "dead-lettered") || !hasEvent(h, "exception") {
			t.Errorf("events %v, want exception and dead-lettered", h.Events)
		}
		if hasEvent(h, "retry scheduled") {
			t.Errorf("a permanent failure scheduled a retry: events %v", h.Events)
		}
		// otelhttp started this trace: the handler's ancestry ends at a root server span.
		server := assertAncestry(t, idx, h,
			step{"pubq job demo.flaky", workerService},
			step{processSpan, workerService},
			step{subscribeSpan, workerService},
			step{createSpan, relays},
			step{"pubq enqueue", producerService},
			step{"POST /v1/jobs", producerService},
		)
		if server.ParentSpanID != "" {
			t.Errorf("the server span has parent %s, want a root span", server.ParentSpanID)
		}
	})

	t.Run("LogsPointAtHandlerSpans", func(t *testing.T) {
		spans := rcv.WaitFor(t, spanWait, all(hasHandler("demo.record", rec.Key, 1),
			hasHandler("demo.flaky", flaky.Key, 3), hasHandler("demo.flaky", dead.Key, 1)))
		// Failed attempts log at warn, so the worker's info-level log has a line for each; successful
		// ones log at debug (none here). Every job line must name its attempt's handler span.
		jobs := []struct {
			res    enqueueResult
			kind   string
			failed []int // attempts that must have logged
		}{{rec, "demo.record", nil}, {flaky, "demo.flaky", []int{1, 2}}, {dead, "demo.flaky", []int{1}}}
		for _, j := range jobs {
			hs := handlerSpans(spans, j.kind, j.res.Key)
			logged := map[int]bool{}
			for _, l := range w.logLines(t) {
				if l["job_key"] != j.res.Key {
					continue
				}
				n, _ := l["job_attempt"].(float64)
				if n < 1 || int(n) > len(hs) {
					t.Errorf("%s: log line with job_attempt %v, but %d handler spans: %v", j.res.Key, l["job_attempt"], len(hs), l)
					continue
				}
				if l["msg"] == "job attempt finished" {
					logged[int(n)] = true
				}
				h := hs[int(n)-1]
				for k, v := range map[string]any{"trace_id": h.TraceID, "span_id": h.SpanID, "job_kind": j.kind,
					"job_queue": "default", "job_id": j.res.ID} {
					if l[k] != v {
						t.Errorf("%s attempt %d: log %s = %v, want %v (line %v)", j.res.Key, int(n), k, l[k], v, l)
					}
				}
			}
			for _, n := range j.failed {
				if !logged[n] {
					t.Errorf("%s: no 'job attempt finished' line for failed attempt %d", j.res.Key, n)
				}
			}
		}
		// The dead letter's warning names the span that failed, too.
		dh := handlerSpans(spans, "demo.flaky", dead.Key)[0]
		found := false
		for _, l := range w.logLines(t) {
			if l["msg"] == "job dead-lettered" && l["job_key"] == dead.Key {
				found = true
				if l["span_id"] != dh.SpanID || l["trace_id"] != dh.TraceID || l["reason"] != "permanent" {
					t.Errorf("dead-letter log line %v does not name span %s/%s with reason permanent", l, dh.TraceID, dh.SpanID)
				}
			}
		}
		if !found {
			t.Errorf("no 'job dead-lettered' log line for %s", dead.Key)
		}
		// No payload, in either process's log.
		for _, pr := range []*proc{w, p} {
			if strings.Contains(pr.output(), marker) {
				t.Errorf("the %s log contains a job payload (marker %s)", pr.name, marker)
			}
			for _, l := range pr.logLines(t) {
				if _, ok := l["payload"]; ok {
					t.Errorf("%s log line has a payload field: %v", pr.name, l)
				}
			}
		}
	})
}

// hasSQL reports whether spans hold both SQL statements the record job's handler span must parent.
func hasSQL(spans []otlptest.Span) bool {
	return findSQL(spans, "INSERT", "demo_effects") != nil && findSQL(spans, "UPDATE", "pubq.jobs", "'succeeded'") != nil
}

// findSQL returns the otelpgx span named op whose statement contains every fragment.
func findSQL(spans []otlptest.Span, op string, fragments ...string) *otlptest.Span {
	for i, s := range spans {
		if s.Name != op {
			continue
		}
		ok := true
		for _, f := range fragments {
			if !strings.Contains(s.Attributes["db.query.text"], f) {
				ok = false
			}
		}
		if ok {
			return &spans[i]
		}
	}
	return nil
}

func namedChildren(spans []otlptest.Span, parent, name string) []otlptest.Span {
	return otlptest.Named(children(spans, parent), name)
}

// Spans still held by the batch span processors when the binaries are stopped reach the collector
// before they exit: with a ten-minute export delay, nothing leaves before the stop.
func TestSpansFlushedOnShutdown(t *testing.T) {
	rcv := otlptest.Start(t)
	s := newStack(t)
	held := func(service string) map[string]string {
		env := otelEnv(rcv, service)
		env["OTEL_BSP_SCHEDULE_DELAY"] = "600000"
		return env
	}
	w := s.startWorker(t, held(workerService))
	p := s.startProducer(t, held(producerService))
	rec := p.enqueue(t, "demo.record", "e2e-flush", `{}`, "")
	deadline := time.Now().Add(spanWait)
	for {
		v, _ := findSeries(scrape(t, w.url("/metrics")), `pubq_jobs_succeeded_total{kind="demo.record",queue="default"}`)
		if v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job did not succeed within %v", spanWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(rcv.Spans()); n != 0 {
		t.Fatalf("%d spans exported before the stop; the export delay did not hold them:\n%s", n, otlptest.Summary(rcv.Spans()))
	}
	p.stop()
	w.stop()
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Errorf("producer exited %d", code)
	}
	if code := w.wait(t, 30*time.Second); code != 0 {
		t.Errorf("worker exited %d", code)
	}
	spans := rcv.Spans()
	if len(otlptest.Named(spans, "pubq enqueue")) != 1 || len(handlerSpans(spans, "demo.record", rec.Key)) != 1 {
		t.Fatalf("after the stop, want the enqueue and the handler span; got:\n%s", otlptest.Summary(spans))
	}
}
