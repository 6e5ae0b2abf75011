package telemetry_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/telemetry"
)

// TraceParent formats by hand what the W3C propagator writes; both must agree, sampled or not.
func TestTraceParentOfMatchesPropagator(t *testing.T) {
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled, 0xff} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
			SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
			TraceFlags: flags,
		})
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier)
		if got, want := telemetry.TraceParent(sc), carrier["traceparent"]; got != want || want == "" {
			t.Errorf("flags %02x: TraceParent = %q, propagator wrote %q", byte(flags), got, want)
		}
		if back := telemetry.SpanContextFromTraceParent(telemetry.TraceParent(sc), ""); back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() || back.IsSampled() != sc.IsSampled() {
			t.Errorf("flags %02x: %q does not parse back to the span context", byte(flags), telemetry.TraceParent(sc))
		}
	}
	if got := telemetry.TraceParent(trace.SpanContext{}); got != "" {
		t.Errorf("invalid span context: %q, want empty", got)
	}
}

// FuzzSpanContextFromTraceParent holds the hand-written parser to the OpenTelemetry propagator.
func FuzzSpanContextFromTraceParent(f *testing.F) {
	for _, tp := range []string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-04",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
		"", "-", "00", "00--",
	} {
		f.Add(tp, "")
		f.Add(tp, "vendor=value,other=x")
	}
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "=bad,,")
	f.Fuzz(func(t *testing.T, tp, ts string) {
		carrier := propagation.MapCarrier{"traceparent": tp}
		if ts != "" {
			carrier["tracestate"] = ts
		}
		want := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
		if tp == "" {
			want = trace.SpanContext{}
		}
		if got := telemetry.SpanContextFromTraceParent(tp, ts); !got.Equal(want) {
			t.Fatalf("SpanContextFromTraceParent(%q, %q) = %+v, the propagator says %+v", tp, ts, got, want)
		}
	})
}
