package telemetry

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// pubq stores and forwards trace context as W3C traceparent strings (the job row, outbox rows, the
// pubq_prev_traceparent attribute). These helpers are the one place that converts them.

var traceContext = propagation.TraceContext{}

// TraceParent formats sc as a W3C traceparent ("" for an invalid span context). It is on the worker's
// hot path, so it formats by hand what the propagator would write (a test checks they agree).
func TraceParent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	var b [55]byte
	copy(b[:3], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	flags := [1]byte{byte(sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom))}
	hex.Encode(b[53:], flags[:])
	return string(b[:])
}

// SpanContextFromTraceParent parses a W3C traceparent (and optional tracestate) into a remote span
// context; an empty or malformed one gives an invalid span context.
func SpanContextFromTraceParent(traceparent, tracestate string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	carrier := propagation.MapCarrier{"traceparent": traceparent}
	if tracestate != "" {
		carrier["tracestate"] = tracestate
	}
	return trace.SpanContextFromContext(traceContext.Extract(context.Background(), carrier))
}

// ContextWithTraceParent returns ctx carrying the remote span context of traceparent, so spans started
// from it (the Pub/Sub client's create span, say) join that trace. An empty traceparent returns ctx.
func ContextWithTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}
