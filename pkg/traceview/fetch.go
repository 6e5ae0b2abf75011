package traceview

import (
	"context"
	"errors"
	"fmt"
)

// Span attribute keys traceview searches and prints; the same strings as package telemetry's
// constants (a test keeps them equal), repeated so traceview does not pull in telemetry's exporters.
const (
	attrJobQueue   = "pubq.job.queue"
	attrJobKind    = "pubq.job.kind"
	attrJobKey     = "pubq.job.key"
	attrJobID      = "pubq.job.id"
	attrJobAttempt = "pubq.job.attempt"
	// On the worker's batched claim/completion round-trip spans ("pubq batch"), which job spans link to.
	attrBatchClaims = "pubq.batch.claims"
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
// at that the search did not return (an attempt whose spans lack the key, the producer's trace, the
// round trips that claimed and completed it), breadth first, up to q.MaxTraces in all. The links of a
// round trip's span, to every job it carried, are not followed. Linked traces the backend no longer has are skipped. The
// result is in start order; no trace at all is an error wrapping ErrNotFound.
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
			out = append(out, t)
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 && len(out) < q.MaxTraces {
		t := queue[0]
		queue = queue[1:]
		for _, s := range t.Spans {
			if _, ok := s.Attributes[attrBatchClaims]; ok {
				continue // a round trip serving many jobs: it links to all of them
			}
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
				out = append(out, lt)
				queue = append(queue, lt)
			}
		}
	}
	sortTraces(out)
	return out, nil
}
