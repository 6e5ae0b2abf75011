package traceview

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	cloudtrace "cloud.google.com/go/trace/apiv1"
	"cloud.google.com/go/trace/apiv1/tracepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/pubq/pubq/pkg/traceview/cloudtracetest"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var ctT0 = time.Date(2026, 11, 18, 11, 6, 40, 0, time.UTC)

func ctSpan(id, parent uint64, name string, startMS, durMS int, labels map[string]string) *tracepb.TraceSpan {
	start := ctT0.Add(time.Duration(startMS) * time.Millisecond)
	return &tracepb.TraceSpan{
		SpanId: id, ParentSpanId: parent, Name: name, Labels: labels,
		StartTime: timestamppb.New(start), EndTime: timestamppb.New(start.Add(time.Duration(durMS) * time.Millisecond)),
	}
}

// ctTrace is a job attempt as Cloud Trace v1 returns it after the OpenTelemetry exporter wrote it:
// attributes and resource attributes (service.name) as labels.
func ctTrace() *tracepb.Trace {
	root := ctSpan(0xa1, 0, "POST /v1/jobs", 0, 14, map[string]string{"service.name": "pubq-producer", "/http/method": "POST"})
	root.Kind = tracepb.TraceSpan_RPC_SERVER
	create := ctSpan(0xa2, 0xa1, "pubq-critical create", 2, 9, map[string]string{
		"service.name": "pubq-producer", "pubq.job.key": "order-42", "pubq.job.kind": "email.send", "pubq.job.queue": "critical",
	})
	proc := ctSpan(0xa4, 0xa2, "pubq-critical-worker process", 52, 131, map[string]string{
		"service.name": "pubq-worker", "pubq.job.attempt": "1", "otel.status_code": "ERROR",
		"otel.status_description": "handler failed", "/error/name": "SMTPError",
	})
	call := ctSpan(0xa5, 0xa4, "POST smtp-relay", 60, 100, map[string]string{
		"g.co/gae/app/module": "pubq-worker", "/http/status_code": "503", "/error/message": "upstream unavailable",
	})
	call.Kind = tracepb.TraceSpan_RPC_CLIENT
	ok := ctSpan(0xa6, 0xa4, "UPDATE pubq_jobs", 178, 3, map[string]string{"service.name": "pubq-worker", "/http/status_code": "200", "span.kind": "CLIENT"})
	return &tracepb.Trace{ProjectId: "proj", TraceId: "4bf92f3577b34da6a3ce929d0e0e4736", Spans: []*tracepb.TraceSpan{root, create, proc, call, ok}}
}

func TestFromCloudTrace(t *testing.T) {
	tr := FromCloudTrace(ctTrace())
	if tr.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || len(tr.Spans) != 5 {
		t.Fatalf("trace %s, %d spans", tr.TraceID, len(tr.Spans))
	}
	get := func(id string) Span {
		s, ok := tr.Span(id)
		if !ok {
			t.Fatalf("span %s missing", id)
		}
		return s
	}
	root, create, proc, call, upd := get("00000000000000a1"), get("00000000000000a2"), get("00000000000000a4"), get("00000000000000a5"), get("00000000000000a6")
	if root.ParentSpanID != "" || root.Kind != "server" || root.Service != "pubq-producer" || root.Error || root.Duration != 14*time.Millisecond {
		t.Errorf("root = %+v", root)
	}
	if create.ParentSpanID != "00000000000000a1" || create.Attributes["pubq.job.key"] != "order-42" {
		t.Errorf("create = %+v", create)
	}
	if _, ok := create.Attributes["service.name"]; ok {
		t.Errorf("service.name kept as an attribute")
	}
	// Status message preference: /error/message, then otel.status_description, then /error/name.
	if !proc.Error || proc.Status != "handler failed" {
		t.Errorf("proc status = %v %q", proc.Error, proc.Status)
	}
	if !call.Error || call.Status != "upstream unavailable" || call.Kind != "client" || call.Service != "pubq-worker" {
		t.Errorf("call = %+v", call)
	}
	if upd.Error || upd.Status != "" || upd.Kind != "client" || upd.Attributes["/http/status_code"] != "200" {
		t.Errorf("update = %+v", upd)
	}
	if !tr.Start().Equal(ctT0) || tr.Duration() != 183*time.Millisecond {
		t.Errorf("trace span %v + %v", tr.Start(), tr.Duration())
	}

	var buf strings.Builder
	if err := Render(&buf, []*Trace{tr}, RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"└─ pubq-critical create", `ERROR "handler failed"`, `ERROR "upstream unavailable"`, "key=order-42"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("render lacks %q:\n%s", want, buf.String())
		}
	}
}

// fakeCloudTrace is an in-process Cloud Trace v1 gRPC server.
type fakeCloudTrace struct {
	tracepb.UnimplementedTraceServiceServer
	mu   sync.Mutex
	list []*tracepb.ListTracesRequest
}

func (f *fakeCloudTrace) GetTrace(_ context.Context, req *tracepb.GetTraceRequest) (*tracepb.Trace, error) {
	if req.GetProjectId() != "proj" || req.GetTraceId() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		return nil, status.Error(codes.NotFound, "trace not found")
	}
	return ctTrace(), nil
}

func (f *fakeCloudTrace) ListTraces(_ context.Context, req *tracepb.ListTracesRequest) (*tracepb.ListTracesResponse, error) {
	f.mu.Lock()
	f.list = append(f.list, req)
	f.mu.Unlock()
	if strings.Contains(req.GetFilter(), `"boom"`) {
		return nil, status.Error(codes.PermissionDenied, "caller lacks cloudtrace.traces.list")
	}
	if !strings.Contains(req.GetFilter(), `+pubq.job.key:"order-42"`) {
		return &tracepb.ListTracesResponse{}, nil
	}
	later := ctTrace()
	later.TraceId = "a3c1e5f7092b4d6e8f1a2b3c4d5e6f70"
	for _, s := range later.Spans {
		s.StartTime = timestamppb.New(s.StartTime.AsTime().Add(time.Second))
		s.EndTime = timestamppb.New(s.EndTime.AsTime().Add(time.Second))
	}
	return &tracepb.ListTracesResponse{Traces: []*tracepb.Trace{later, ctTrace()}}, nil
}

func startFakeCloudTrace(t *testing.T) (*fakeCloudTrace, *CloudTrace) {
	t.Helper()
	fake := &fakeCloudTrace{}
	client, err := cloudtrace.NewClient(context.Background(),
		option.WithEndpoint(cloudtracetest.Serve(t, fake)), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	ct := NewCloudTrace(client, "proj")
	ct.now = func() time.Time { return ctT0.Add(time.Hour) }
	return fake, ct
}

func TestCloudTraceSource(t *testing.T) {
	fake, ct := startFakeCloudTrace(t)
	ctx := context.Background()

	tr, err := ct.Trace(ctx, "4BF92F3577B34DA6A3CE929D0E0E4736")
	if err != nil || len(tr.Spans) != 5 {
		t.Fatalf("Trace = %v, %v", tr, err)
	}
	if _, err := ct.Trace(ctx, "00000000000000000000000000000bad"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing trace: %v", err)
	}
	if _, err := ct.Trace(ctx, "not-hex"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("bad id: %v", err)
	}

	got, err := ct.FindJob(ctx, JobQuery{Key: "order-42", Service: "pubq-worker", Lookback: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ids := traceIDs(got); strings.Join(ids, ",") != "4bf92f3577b34da6a3ce929d0e0e4736,a3c1e5f7092b4d6e8f1a2b3c4d5e6f70" {
		t.Errorf("FindJob = %v, want start order", ids)
	}
	fake.mu.Lock()
	req := fake.list[len(fake.list)-1]
	fake.mu.Unlock()
	if req.GetFilter() != `+pubq.job.key:"order-42" +service.name:"pubq-worker"` || req.GetView() != tracepb.ListTracesRequest_COMPLETE ||
		req.GetProjectId() != "proj" || req.GetPageSize() != 20 ||
		!req.GetStartTime().AsTime().Equal(ctT0.Add(-time.Hour)) || !req.GetEndTime().AsTime().Equal(ctT0.Add(time.Hour)) {
		t.Errorf("ListTraces request = %v", req)
	}

	got, err = ct.FindJob(ctx, JobQuery{Key: "order-42", Limit: 1})
	if err != nil || len(got) != 1 {
		t.Errorf("Limit 1 = %v, %v", traceIDs(got), err)
	}
	if _, err := ct.FindJob(ctx, JobQuery{Key: "boom"}); err == nil || !strings.Contains(err.Error(), "cloudtrace.traces.list") {
		t.Errorf("permission error: %v", err)
	}
	if _, err := ct.FindJob(ctx, JobQuery{}); err == nil {
		t.Errorf("empty key accepted")
	}
	// FetchJob over Cloud Trace: no links in the v1 API, so it is the search result.
	all, err := FetchJob(ctx, ct, JobQuery{Key: "order-42"})
	if err != nil || len(all) != 2 {
		t.Errorf("FetchJob = %v, %v", traceIDs(all), err)
	}
}
