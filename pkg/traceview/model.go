package traceview

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when a trace or a job's traces are not in the backend.
var ErrNotFound = errors.New("traceview: not found")

// Trace is one trace as fetched from a backend.
type Trace struct {
	TraceID  string // 32 lower-case hex digits
	Spans    []Span
	Warnings []string // backend warnings (e.g. Jaeger's clock-skew notes)
	// Omitted counts the spans FetchJob left out as other jobs' (see Focus).
	Omitted int `json:",omitempty"`
}

// Span is one span in the backends' common model.
type Span struct {
	TraceID      string
	SpanID       string // 16 lower-case hex digits
	ParentSpanID string // "" for a root span
	Service      string
	Name         string
	Kind         string // server, client, producer, consumer, internal; "" when unknown
	Start        time.Time
	Duration     time.Duration
	Error        bool
	Status       string // the error message when Error
	Attributes   map[string]string
	Links        []Link
	Events       []Event
}

// Link points from a span to a span of another trace (or elsewhere in the same one), as a retry's
// trace links to the attempt before it.
type Link struct {
	TraceID string
	SpanID  string
}

// Event is a timestamped annotation on a span (a Jaeger log).
type Event struct {
	Name string
	Time time.Time
}

// End is when the span ended.
func (s Span) End() time.Time { return s.Start.Add(s.Duration) }

// Start is the earliest span start; zero for a trace without spans.
func (t *Trace) Start() time.Time {
	var start time.Time
	for i, s := range t.Spans {
		if i == 0 || s.Start.Before(start) {
			start = s.Start
		}
	}
	return start
}

// End is the latest span end.
func (t *Trace) End() time.Time {
	var end time.Time
	for _, s := range t.Spans {
		if e := s.End(); e.After(end) {
			end = e
		}
	}
	return end
}

// Duration is End minus Start.
func (t *Trace) Duration() time.Duration {
	if len(t.Spans) == 0 {
		return 0
	}
	return t.End().Sub(t.Start())
}

// Services lists the services with spans in t, sorted.
func (t *Trace) Services() []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range t.Spans {
		if s.Service != "" && !seen[s.Service] {
			seen[s.Service] = true
			out = append(out, s.Service)
		}
	}
	sort.Strings(out)
	return out
}

// Span returns the span with id spanID.
func (t *Trace) Span(spanID string) (Span, bool) {
	for _, s := range t.Spans {
		if s.SpanID == spanID {
			return s, true
		}
	}
	return Span{}, false
}

// Source is a trace backend.
type Source interface {
	// Trace fetches one trace; a missing one is an error wrapping ErrNotFound.
	Trace(ctx context.Context, traceID string) (*Trace, error)
	// FindJob returns the traces with a span whose pubq.job.key is q.Key (none is not an error).
	FindJob(ctx context.Context, q JobQuery) ([]*Trace, error)
}

// JobQuery selects a job's traces.
type JobQuery struct {
	// Key is the job's pubq.job.key. Required.
	Key string
	// Service restricts the search to spans of this service (Jaeger's search needs one; when empty
	// every service the backend knows is searched). Default: "" (all).
	Service string
	// Lookback is how far back to search. Default: 48h (Jaeger's own default).
	Lookback time.Duration
	// Limit caps the traces returned by the search. Default: 20.
	Limit int
	// MaxTraces caps the traces FetchJob returns after following links. Default: 50.
	MaxTraces int
}

func (q JobQuery) withDefaults() JobQuery {
	if q.Lookback <= 0 {
		q.Lookback = 48 * time.Hour
	}
	if q.Limit <= 0 {
		q.Limit = 20
	}
	if q.MaxTraces <= 0 {
		q.MaxTraces = 50
	}
	return q
}

// normalizeTraceID lower-cases id and left-pads it to 32 hex digits (Jaeger prints 64-bit ids as 16).
// It reports false for anything that is not 1..32 hex digits.
func normalizeTraceID(id string) (string, bool) {
	return normalizeHex(id, 32)
}

func normalizeSpanID(id string) (string, bool) {
	return normalizeHex(id, 16)
}

func normalizeHex(id string, n int) (string, bool) {
	id = strings.ToLower(strings.TrimSpace(id))
	if id == "" || len(id) > n {
		return "", false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	return strings.Repeat("0", n-len(id)) + id, true
}

// sortTraces orders traces by start time, then id.
func sortTraces(ts []*Trace) {
	sort.SliceStable(ts, func(i, j int) bool {
		si, sj := ts[i].Start(), ts[j].Start()
		if !si.Equal(sj) {
			return si.Before(sj)
		}
		return ts[i].TraceID < ts[j].TraceID
	})
}
