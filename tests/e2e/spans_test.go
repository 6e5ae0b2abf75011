package e2e

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"

	"github.com/pubq/pubq/pkg/telemetry/otlptest"
	"github.com/pubq/pubq/pkg/traceview"
)

// Span names of the default queue (queues.yaml) as the Pub/Sub client libraries write them.
const (
	createSpan     = "pubq-default create"
	deadCreateSpan = "pubq-default-dead create"
	subscribeSpan  = "pubq-default-worker subscribe"
	processSpan    = "pubq-default-worker process"
)

// byID indexes spans by span id.
func byID(spans []otlptest.Span) map[string]otlptest.Span {
	m := make(map[string]otlptest.Span, len(spans))
	for _, s := range spans {
		m[s.SpanID] = s
	}
	return m
}

// handlerSpans returns the handler spans of the job with this kind and key, ordered by attempt.
func handlerSpans(spans []otlptest.Span, kind, key string) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range otlptest.Named(spans, "pubq job "+kind) {
		if s.Attributes["pubq.job.key"] == key {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, _ := strconv.Atoi(out[i].Attributes["pubq.job.attempt"])
		b, _ := strconv.Atoi(out[j].Attributes["pubq.job.attempt"])
		return a < b
	})
	return out
}

// children returns the spans whose parent is id.
func children(spans []otlptest.Span, id string) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range spans {
		if s.ParentSpanID == id {
			out = append(out, s)
		}
	}
	return out
}

// hasHandler reports whether n handler spans of the job arrived.
func hasHandler(kind, key string, n int) func([]otlptest.Span) bool {
	return func(spans []otlptest.Span) bool { return len(handlerSpans(spans, kind, key)) >= n }
}

// received reports whether the handler span of the job (attempt n, 1-based) and depth of its ancestors
// have arrived: spans end (and are exported) in their own time, the client's subscribe span only once
// the ack went out.
func received(kind, key string, attempt, depth int) func([]otlptest.Span) bool {
	return func(spans []otlptest.Span) bool {
		hs := handlerSpans(spans, kind, key)
		if len(hs) < attempt {
			return false
		}
		idx := byID(spans)
		cur := hs[attempt-1]
		for range depth {
			p, ok := idx[cur.ParentSpanID]
			if !ok {
				return false
			}
			cur = p
		}
		return true
	}
}

// all is the conjunction of conditions.
func all(conds ...func([]otlptest.Span) bool) func([]otlptest.Span) bool {
	return func(spans []otlptest.Span) bool {
		for _, c := range conds {
			if !c(spans) {
				return false
			}
		}
		return true
	}
}

// step is one expected ancestor: its name and the service that exported it (services separated by
// "|" when any of them may have).
type step struct{ name, service string }

func (w step) matches(s otlptest.Span) bool {
	if s.Name != w.name {
		return false
	}
	for _, svc := range strings.Split(w.service, "|") {
		if s.Service == svc {
			return true
		}
	}
	return false
}

// relays are the services whose outbox relay may publish a job: the producer's and the worker's both
// relay every committed outbox row (whichever claims it first).
const relays = producerService + "|" + workerService

// assertAncestry walks from s up its parents and checks each against want (s itself first); it
// returns the last span checked. Every span must be in s's trace.
func assertAncestry(t *testing.T, idx map[string]otlptest.Span, s otlptest.Span, want ...step) otlptest.Span {
	t.Helper()
	cur := s
	var path []string
	for i, w := range want {
		if i > 0 {
			parent, ok := idx[cur.ParentSpanID]
			if !ok {
				t.Fatalf("ancestry of %q: %q (span %s) has parent %q, which was not received; want %q\npath so far: %s",
					s.Name, cur.Name, cur.SpanID, cur.ParentSpanID, w.name, strings.Join(path, " ← "))
			}
			cur = parent
		}
		path = append(path, fmt.Sprintf("%s[%s]", cur.Name, cur.Service))
		if !w.matches(cur) {
			t.Fatalf("ancestry of %q: step %d is %q from %q, want %q from %q\npath: %s",
				s.Name, i, cur.Name, cur.Service, w.name, w.service, strings.Join(path, " ← "))
		}
		if cur.TraceID != s.TraceID {
			t.Fatalf("ancestry of %q: %q is in trace %s, not %s", s.Name, cur.Name, cur.TraceID, s.TraceID)
		}
	}
	t.Logf("ancestry: %s", strings.Join(path, " ← "))
	return cur
}

// descends reports whether s is below the span ancestor (by parent ids within idx).
func descends(idx map[string]otlptest.Span, s otlptest.Span, ancestor string) bool {
	for id := s.ParentSpanID; id != ""; {
		if id == ancestor {
			return true
		}
		p, ok := idx[id]
		if !ok {
			return false
		}
		id = p.ParentSpanID
	}
	return false
}

// claimRoundTrip is the "pubq batch" span that h links to as its claim (pubq.link=claim), if the claim
// statement was received under it.
func claimRoundTrip(spans []otlptest.Span, h otlptest.Span) *otlptest.Span {
	idx := byID(spans)
	for _, l := range h.Links {
		if l.Attributes["pubq.link"] != "claim" {
			continue
		}
		rt, ok := idx[l.SpanID]
		if !ok || rt.Name != "pubq batch" {
			continue
		}
		var under []otlptest.Span
		for _, s := range otlptest.InTrace(spans, rt.TraceID) {
			if descends(idx, s, rt.SpanID) {
				under = append(under, s)
			}
		}
		if findSQL(under, "WITH", "INSERT INTO pubq.jobs", "pubq.claims") != nil {
			return &rt
		}
	}
	return nil
}

// linksTo reports whether s has a link to the span id of target (and, if attr is not empty, the link
// carries pubq.link=attr).
func linksTo(s, target otlptest.Span, attr string) bool {
	for _, l := range s.Links {
		if l.TraceID == target.TraceID && l.SpanID == target.SpanID && (attr == "" || l.Attributes["pubq.link"] == attr) {
			return true
		}
	}
	return false
}

func hasEvent(s otlptest.Span, name string) bool {
	for _, e := range s.Events {
		if e == name {
			return true
		}
	}
	return false
}

// viewSource serves the receiver's spans to traceview as a trace backend would.
type viewSource map[string]*traceview.Trace

func spanSource(spans []otlptest.Span) viewSource {
	src := viewSource{}
	for _, s := range spans {
		tr := src[s.TraceID]
		if tr == nil {
			tr = &traceview.Trace{TraceID: s.TraceID}
			src[s.TraceID] = tr
		}
		v := traceview.Span{TraceID: s.TraceID, SpanID: s.SpanID, ParentSpanID: s.ParentSpanID, Service: s.Service,
			Name: s.Name, Start: s.Start, Duration: s.End.Sub(s.Start), Error: s.Status.Code == codes.Error,
			Status: s.Status.Message, Attributes: s.Attributes}
		for _, l := range s.Links {
			v.Links = append(v.Links, traceview.Link{TraceID: l.TraceID, SpanID: l.SpanID})
		}
		tr.Spans = append(tr.Spans, v)
	}
	return src
}

func (v viewSource) Trace(_ context.Context, id string) (*traceview.Trace, error) {
	if t, ok := v[id]; ok {
		return t, nil
	}
	return nil, traceview.ErrNotFound
}

func (v viewSource) FindJob(_ context.Context, q traceview.JobQuery) ([]*traceview.Trace, error) {
	var out []*traceview.Trace
	for _, t := range v {
		for _, s := range t.Spans {
			if s.Attributes["pubq.job.key"] == q.Key {
				out = append(out, t)
				break
			}
		}
	}
	return out, nil
}

// fromView turns a traceview trace back into receiver spans, for the span helpers.
func fromView(t *traceview.Trace) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range t.Spans {
		out = append(out, otlptest.Span{TraceID: s.TraceID, SpanID: s.SpanID, ParentSpanID: s.ParentSpanID, Name: s.Name,
			Service: s.Service, Attributes: s.Attributes})
	}
	return out
}
