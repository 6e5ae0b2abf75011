package traceview

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	cloudtrace "cloud.google.com/go/trace/apiv1"
	"cloud.google.com/go/trace/apiv1/tracepb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// CloudTrace reads traces from Google Cloud Trace (API v1: GetTrace, ListTraces). The v1 API has no
// span links, so traces fetched here show none, and FindJob finds every attempt by its label instead.
type CloudTrace struct {
	client  *cloudtrace.Client
	project string
	now     func() time.Time
}

// NewCloudTrace returns a Cloud Trace source for project using client (cloudtrace.NewClient(ctx)).
// The caller owns client and closes it.
func NewCloudTrace(client *cloudtrace.Client, project string) *CloudTrace {
	return &CloudTrace{client: client, project: project, now: time.Now}
}

// Trace fetches one trace by id.
func (c *CloudTrace) Trace(ctx context.Context, traceID string) (*Trace, error) {
	id, ok := normalizeTraceID(traceID)
	if !ok {
		return nil, fmt.Errorf("traceview: %q is not a trace id (up to 32 hex digits)", traceID)
	}
	t, err := c.client.GetTrace(ctx, &tracepb.GetTraceRequest{ProjectId: c.project, TraceId: id})
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("traceview: trace %s in project %s: %w", id, c.project, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("traceview: Cloud Trace GetTrace %s: %w", id, err)
	}
	return FromCloudTrace(t), nil
}

// FindJob lists the traces with the label pubq.job.key equal to q.Key (and service.name equal to
// q.Service when set), complete with all their spans.
func (c *CloudTrace) FindJob(ctx context.Context, q JobQuery) ([]*Trace, error) {
	q = q.withDefaults()
	if q.Key == "" {
		return nil, errors.New("traceview: JobQuery.Key is empty")
	}
	end := c.now()
	req := &tracepb.ListTracesRequest{
		ProjectId: c.project,
		View:      tracepb.ListTracesRequest_COMPLETE,
		PageSize:  int32(q.Limit),
		StartTime: timestamppb.New(end.Add(-q.Lookback)),
		EndTime:   timestamppb.New(end),
		Filter:    cloudTraceFilter(q),
	}
	var out []*Trace
	it := c.client.ListTraces(ctx, req)
	for len(out) < q.Limit {
		t, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("traceview: Cloud Trace ListTraces: %w", err)
		}
		out = append(out, FromCloudTrace(t))
	}
	sortTraces(out)
	return out, nil
}

// cloudTraceFilter builds an exact-match label filter ("+KEY:VALUE" terms, ANDed); values are quoted
// so a key with spaces or colons stays one term.
func cloudTraceFilter(q JobQuery) string {
	terms := []string{"+" + attrJobKey + ":" + strconv.Quote(q.Key)}
	if q.Service != "" {
		terms = append(terms, "+service.name:"+strconv.Quote(q.Service))
	}
	return strings.Join(terms, " ")
}

// FromCloudTrace converts a Cloud Trace v1 trace. Span attributes arrive as string labels (the
// OpenTelemetry exporter also copies resource attributes such as service.name into them); a span is an
// error when it has /error/message or /error/name, an OpenTelemetry status of ERROR, or an HTTP status
// of 500 or more.
func FromCloudTrace(t *tracepb.Trace) *Trace {
	tid, ok := normalizeTraceID(t.GetTraceId())
	if !ok {
		tid = t.GetTraceId()
	}
	out := &Trace{TraceID: tid}
	for _, cs := range t.GetSpans() {
		s := Span{
			TraceID:    tid,
			SpanID:     fmt.Sprintf("%016x", cs.GetSpanId()),
			Name:       cs.GetName(),
			Start:      cs.GetStartTime().AsTime().UTC(),
			Attributes: map[string]string{},
		}
		if cs.GetParentSpanId() != 0 {
			s.ParentSpanID = fmt.Sprintf("%016x", cs.GetParentSpanId())
		}
		if cs.GetEndTime() != nil && cs.GetStartTime() != nil {
			s.Duration = cs.GetEndTime().AsTime().Sub(s.Start)
		}
		switch cs.GetKind() {
		case tracepb.TraceSpan_RPC_SERVER:
			s.Kind = "server"
		case tracepb.TraceSpan_RPC_CLIENT:
			s.Kind = "client"
		}
		labels := cs.GetLabels()
		for k, v := range labels {
			switch k {
			case "service.name", "/error/message", "/error/name", "otel.status_code", "otel.status_description":
			case "span.kind":
				s.Kind = strings.ToLower(v)
			default:
				s.Attributes[k] = v
			}
		}
		s.Service = labels["service.name"]
		if s.Service == "" {
			s.Service = labels["g.co/gae/app/module"]
		}
		_, hasErrMsg := labels["/error/message"]
		_, hasErrName := labels["/error/name"]
		code, _ := strconv.Atoi(labels["/http/status_code"])
		s.Error = hasErrMsg || hasErrName || labels["otel.status_code"] == "ERROR" || code >= 500
		if s.Error {
			for _, k := range []string{"/error/message", "otel.status_description", "/error/name"} {
				if v := labels[k]; v != "" {
					s.Status = v
					break
				}
			}
		}
		out.Spans = append(out.Spans, s)
	}
	return out
}
