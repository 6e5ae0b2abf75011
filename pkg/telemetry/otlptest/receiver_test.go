package otlptest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/pubq/pubq/pkg/telemetry/otlptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// emit sends a parent, a child with a link, an event and an error status through exp.
func emit(t *testing.T, exp sdktrace.SpanExporter, service string) (parent, child trace.SpanContext, linked trace.SpanContext) {
	t.Helper()
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	)
	defer func() {
		if err := tp.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	tr := tp.Tracer("otlptest-test")
	_, other := tr.Start(ctx, "other")
	other.End()
	linked = other.SpanContext()

	pctx, p := tr.Start(ctx, "parent", trace.WithSpanKind(trace.SpanKindProducer))
	_, c := tr.Start(pctx, "child",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(trace.Link{SpanContext: linked, Attributes: []attribute.KeyValue{attribute.String("why", "retry")}}),
		trace.WithAttributes(attribute.String("pubq.job.key", "k1"), attribute.Int("pubq.job.attempt", 2),
			attribute.Bool("ok", false), attribute.StringSlice("tags", []string{"a", "b"})))
	c.AddEvent("lease.renewed")
	c.SetStatus(codes.Error, "boom")
	c.End()
	p.End()
	return p.SpanContext(), c.SpanContext(), linked
}

func checkSpans(t *testing.T, rcv *otlptest.Receiver, service string, parent, child, linked trace.SpanContext) {
	t.Helper()
	spans := rcv.WaitFor(t, 10*time.Second, func(s []otlptest.Span) bool {
		return len(otlptest.InTrace(s, parent.TraceID().String())) == 2
	})
	got := otlptest.InTrace(spans, parent.TraceID().String())
	p, c := got[0], got[1]
	if p.Name != "parent" || c.Name != "child" {
		t.Fatalf("spans in start order = %q, %q; want parent, child", p.Name, c.Name)
	}
	if p.SpanID != parent.SpanID().String() || p.ParentSpanID != "" {
		t.Errorf("parent ids = %s (parent %q), want %s and no parent", p.SpanID, p.ParentSpanID, parent.SpanID())
	}
	if c.SpanID != child.SpanID().String() || c.ParentSpanID != p.SpanID {
		t.Errorf("child ids = %s parent %s, want %s parent %s", c.SpanID, c.ParentSpanID, child.SpanID(), p.SpanID)
	}
	if c.Service != service || p.Service != service {
		t.Errorf("services = %q, %q; want %q", p.Service, c.Service, service)
	}
	if p.Kind != trace.SpanKindProducer || c.Kind != trace.SpanKindConsumer {
		t.Errorf("kinds = %v, %v; want producer, consumer", p.Kind, c.Kind)
	}
	if c.Status != (otlptest.Status{Code: codes.Error, Message: "boom"}) || p.Status.Code != codes.Unset {
		t.Errorf("statuses = %+v, %+v", p.Status, c.Status)
	}
	wantAttrs := map[string]string{"pubq.job.key": "k1", "pubq.job.attempt": "2", "ok": "false", "tags": "[a,b]"}
	for k, v := range wantAttrs {
		if c.Attributes[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, c.Attributes[k], v)
		}
	}
	if len(c.Links) != 1 || c.Links[0].TraceID != linked.TraceID().String() ||
		c.Links[0].SpanID != linked.SpanID().String() || c.Links[0].Attributes["why"] != "retry" {
		t.Errorf("links = %+v, want one to %s/%s", c.Links, linked.TraceID(), linked.SpanID())
	}
	if len(c.Events) != 1 || c.Events[0] != "lease.renewed" {
		t.Errorf("events = %v", c.Events)
	}
	if c.Start.IsZero() || c.End.Before(c.Start) {
		t.Errorf("times = %v .. %v", c.Start, c.End)
	}
}

func TestGRPC(t *testing.T) {
	rcv := otlptest.Start(t)
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(rcv.Endpoint()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	p, c, l := emit(t, exp, "svc-grpc")
	checkSpans(t, rcv, "svc-grpc", p, c, l)
}

func TestGRPCGzip(t *testing.T) {
	rcv := otlptest.Start(t)
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(rcv.Endpoint()),
		otlptracegrpc.WithInsecure(), otlptracegrpc.WithCompressor("gzip"))
	if err != nil {
		t.Fatal(err)
	}
	p, c, l := emit(t, exp, "svc-grpc-gzip")
	checkSpans(t, rcv, "svc-grpc-gzip", p, c, l)
}

func TestHTTP(t *testing.T) {
	rcv := otlptest.Start(t)
	if !strings.HasPrefix(rcv.HTTPEndpoint(), "http://127.0.0.1:") {
		t.Fatalf("HTTPEndpoint = %q", rcv.HTTPEndpoint())
	}
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(rcv.HTTPEndpoint()+"/v1/traces"),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	if err != nil {
		t.Fatal(err)
	}
	p, c, l := emit(t, exp, "svc-http")
	checkSpans(t, rcv, "svc-http", p, c, l)
	if rcv.Requests() < 2 {
		t.Errorf("Requests = %d, want one per span (syncer)", rcv.Requests())
	}
}

const jsonExport = `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc-json"}}]},
"scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331",
"parentSpanId":"00f067aa0ba902b7","links":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"53995c3f42cd8ad8"}],
"name":"json-span","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000500000000",
"attributes":[{"key":"n","value":{"intValue":"7"}},{"key":"f","value":{"doubleValue":1.5}}],
"status":{"code":1}}]}]}]}`

func TestHTTPJSONAndErrors(t *testing.T) {
	rcv := otlptest.Start(t)
	url := rcv.HTTPEndpoint() + "/v1/traces"

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(jsonExport))
	_ = zw.Close()
	req, _ := http.NewRequest(http.MethodPost, url, &gz)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("JSON export: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	spans := rcv.Spans()
	if len(spans) != 1 {
		t.Fatalf("got %d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.Name != "json-span" || s.Service != "svc-json" || s.Scope != "s" || s.Kind != trace.SpanKindServer ||
		s.Status.Code != codes.Ok || s.Attributes["n"] != "7" || s.Attributes["f"] != "1.5" ||
		s.End.Sub(s.Start) != 500*time.Millisecond {
		t.Errorf("span = %+v", s)
	}
	// OTLP/JSON ids are hex strings, not protojson's base64.
	if s.TraceID != "0af7651916cd43dd8448eb211c80319c" || s.SpanID != "b7ad6b7169203331" || s.ParentSpanID != "00f067aa0ba902b7" ||
		len(s.Links) != 1 || s.Links[0].TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || s.Links[0].SpanID != "53995c3f42cd8ad8" {
		t.Errorf("ids: trace %s span %s parent %s links %+v", s.TraceID, s.SpanID, s.ParentSpanID, s.Links)
	}

	for _, tc := range []struct {
		name, method, ct, body string
		want                   int
	}{
		{"GET", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed},
		{"bad content type", http.MethodPost, "text/plain", "x", http.StatusUnsupportedMediaType},
		{"bad protobuf", http.MethodPost, "application/x-protobuf", "\xff\xff\xff", http.StatusBadRequest},
		{"bad json", http.MethodPost, "application/json", "{", http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tc.method, url, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if len(rcv.Spans()) != 1 {
		t.Errorf("rejected requests added spans: %d", len(rcv.Spans()))
	}
	rcv.Reset()
	if len(rcv.Spans()) != 0 {
		t.Errorf("Reset kept spans")
	}
}

// fakeTB records Fatalf instead of stopping the test, to check WaitFor's timeout path.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = format
}

func TestWaitForTimesOut(t *testing.T) {
	rcv := otlptest.Start(t)
	ftb := &fakeTB{TB: t}
	start := time.Now()
	got := rcv.WaitFor(ftb, 50*time.Millisecond, func(s []otlptest.Span) bool { return len(s) > 0 })
	if got != nil || ftb.failed == "" {
		t.Fatalf("WaitFor on an empty receiver returned %v, failed=%q", got, ftb.failed)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 5*time.Second {
		t.Errorf("WaitFor took %v", d)
	}
}

func TestEnvAndClose(t *testing.T) {
	rcv := otlptest.Start(t)
	env := strings.Join(rcv.Env("grpc"), " ")
	if !strings.Contains(env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+rcv.Endpoint()) || !strings.Contains(env, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc") {
		t.Errorf("Env(grpc) = %s", env)
	}
	env = strings.Join(rcv.Env("http/protobuf"), " ")
	if !strings.Contains(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.HTTPEndpoint()) {
		t.Errorf("Env(http/protobuf) = %s", env)
	}
	rcv.Close()
	rcv.Close() // idempotent; Cleanup calls it a third time
	_, err := http.Post(rcv.HTTPEndpoint()+"/v1/traces", "application/json", strings.NewReader("{}"))
	if err == nil {
		t.Fatal("receiver still answers after Close")
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("closed receiver timed out instead of refusing: %v", err)
	}
}
