package worker_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pubq/pubq/pkg/worker"
)

// A message published by a client with tracing on carries its create span in googclient_traceparent
// (not traceparent). A worker whose own client does not trace has no process span to hang the handler
// span on; the handler span must still continue the publisher's trace, as a child of that create span.
func TestHandlerSpanContinuesClientTraceParentWithoutReceiveTracing(t *testing.T) {
	b := setup(t) // b.client has no tracing
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	const traceID, createSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	b.publishRaw(t, "pubq-default", []byte(`{}`), map[string]string{
		"pubq_kind": "demo.record", "pubq_key": "client-traced",
		"googclient_traceparent": "00-" + traceID + "-" + createSpan + "-01",
		"googclient_tracestate":  "vendor=x",
		// A plain traceparent too, of another trace: the client's context wins, as when it traces.
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	})
	b.run(t, worker.Config{TracerProvider: tp})
	var h sdktrace.ReadOnlySpan
	waitFor(t, 30*time.Second, "the handler span", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "pubq job demo.record" {
				h = s
				return true
			}
		}
		return false
	})
	parent := h.Parent()
	if parent.TraceID().String() != traceID || parent.SpanID().String() != createSpan || !parent.IsRemote() {
		t.Fatalf("handler span parent %s/%s (remote %v), want the publisher's create span %s/%s",
			parent.TraceID(), parent.SpanID(), parent.IsRemote(), traceID, createSpan)
	}
	if h.SpanContext().TraceID().String() != traceID || h.SpanContext().TraceState().String() != "vendor=x" {
		t.Errorf("handler span %s tracestate %q, want trace %s with the publisher's tracestate", h.SpanContext().TraceID(), h.SpanContext().TraceState(), traceID)
	}
	if len(h.Links()) != 0 {
		t.Errorf("links %v, want none (there is no process span)", h.Links())
	}
}
