package traceview

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Span attribute keys traceview searches and prints; the same strings as package telemetry's
// constants (a test keeps them equal), repeated so traceview does not pull in telemetry's exporters.
const (
	attrJobQueue   = "pubq.job.queue"
	attrJobKind    = "pubq.job.kind"
	attrJobKey     = "pubq.job.key"
	attrJobID      = "pubq.job.id"
	attrJobAttempt = "pubq.job.attempt"
)

// Fetch gets traces by id from src, in start order.
func Fetch(ctx context.Context, src Source, traceIDs ...string) ([]*Trace, error) {
	out := make([]*Trace, 0, len(traceIDs))
	for _, id := range traceIDs {
		t, err := src.Trace(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	sortTraces(out)
	return out, nil
}

// FetchJob finds a job's traces with src.FindJob and then follows span links to the traces they point
// at that the search did not return (an earlier attempt's, the round trips that claimed and completed
// it, the Pub/Sub client's publish, ack and modack batches), breadth first, up to q.MaxTraces in all.
// Only the links of traces that carry the job's key are followed (see carriesKey). Linked traces the
// backend no longer has are skipped. The result is in start order; no trace at all is an error
// wrapping ErrNotFound.
func FetchJob(ctx context.Context, src Source, q JobQuery) ([]*Trace, error) {
	q = q.withDefaults()
	found, err := src.FindJob(ctx, q)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		where := "any service"
		if q.Service != "" {
			where = "service " + q.Service
		}
		return nil, fmt.Errorf("traceview: no trace with %s=%q in %s over the last %v: %w", attrJobKey, q.Key, where, q.Lookback, ErrNotFound)
	}
	have := map[string]bool{}
	var out, queue []*Trace
	for _, t := range found {
		if !have[t.TraceID] && len(out) < q.MaxTraces {
			have[t.TraceID] = true
			t = Focus(t, q.Key)
			out = append(out, t)
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 && len(out) < q.MaxTraces {
		t := queue[0]
		queue = queue[1:]
		for _, s := range t.Spans {
			for _, l := range s.Links {
				if have[l.TraceID] || len(out) >= q.MaxTraces {
					continue
				}
				have[l.TraceID] = true
				lt, err := src.Trace(ctx, l.TraceID)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("traceview: following a link from trace %s: %w", t.TraceID, err)
				}
				if f := Focus(lt, q.Key); f != lt { // the job's own: its links lead on
					lt = f
					queue = append(queue, lt)
				}
				out = append(out, lt)
			}
		}
	}
	sortTraces(out)
	return out, nil
}

// carriesKey reports whether a span of t names the job key: a trace of the job itself, whose links
// lead on. A linked trace without it serves many messages (the worker's claim and completion round
// trips, the Pub/Sub client's publish, ack and modack batches): it is shown, but its links, to the
// other messages it served, are not followed.
func carriesKey(t *Trace, key string) bool {
	for _, s := range t.Spans {
		if s.Attributes[attrJobKey] == key {
			return true
		}
	}
	return false
}

// Focus returns t with only the spans that concern the job key: those that carry it, their ancestors
// and their descendants; Omitted counts the rest. One HTTP request that enqueued a batch is one trace
// holding every job of the batch, and on-call asks about one. A trace without the key is returned as
// is (the same pointer).
func Focus(t *Trace, key string) *Trace {
	if !carriesKey(t, key) {
		return t
	}
	byID := make(map[string]int, len(t.Spans))
	children := map[string][]int{}
	for i, s := range t.Spans {
		byID[s.SpanID] = i
		if s.ParentSpanID != "" {
			children[s.ParentSpanID] = append(children[s.ParentSpanID], i)
		}
	}
	keep := make([]bool, len(t.Spans))
	var down []int
	for i, s := range t.Spans {
		if s.Attributes[attrJobKey] != key {
			continue
		}
		down = append(down, i)
		for p, ok := byID[s.ParentSpanID]; ok && !keep[p]; p, ok = byID[t.Spans[p].ParentSpanID] {
			keep[p] = true
		}
	}
	seen := make([]bool, len(t.Spans)) // walked down from: each span once, whatever the data's shape
	for len(down) > 0 {
		i := down[len(down)-1]
		down = down[:len(down)-1]
		if seen[i] {
			continue
		}
		seen[i], keep[i] = true, true
		down = append(down, children[t.Spans[i].SpanID]...)
	}
	f := &Trace{TraceID: t.TraceID, Omitted: t.Omitted}
	kept := map[string]bool{}
	for i, s := range t.Spans {
		if keep[i] {
			f.Spans = append(f.Spans, s)
			kept[s.SpanID] = true
		} else {
			f.Omitted++
		}
	}
	for _, w := range t.Warnings { // "span ID (name): …" about a span left out goes with it
		if id, ok := strings.CutPrefix(w, "span "); ok && len(id) > 16 && id[16] == ' ' && !kept[id[:16]] {
			continue
		}
		f.Warnings = append(f.Warnings, w)
	}
	return f
}
