package telemetry

import (
	"context"
	"encoding/hex"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// pubq stores and forwards trace context as W3C traceparent strings (the job row, outbox rows, the
// pubq_prev_traceparent attribute). These helpers are the one place that converts them.

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
// context; an empty or malformed one gives an invalid span context. It follows
// propagation.TraceContext's rules exactly (a differential fuzz test holds it to them) without the
// propagator's carrier map and context, which cost allocations on every delivery.
func SpanContextFromTraceParent(traceparent, tracestate string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	h := traceparent
	var ver [1]byte
	if !hexPart(ver[:], &h, 2) || ver[0] > maxTraceParentVersion {
		return trace.SpanContext{}
	}
	var scc trace.SpanContextConfig
	if !hexPart(scc.TraceID[:], &h, 32) || !hexPart(scc.SpanID[:], &h, 16) {
		return trace.SpanContext{}
	}
	var opts [1]byte
	if !hexPart(opts[:], &h, 2) {
		return trace.SpanContext{}
	}
	if ver[0] == 0 && (h != "" || opts[0] > 3) {
		return trace.SpanContext{} // version 00 has no further fields and no other flags
	}
	scc.TraceFlags = trace.TraceFlags(opts[0]) & (trace.FlagsSampled | trace.FlagsRandom)
	if tracestate != "" {
		// A malformed tracestate does not invalidate the traceparent (W3C trace context).
		scc.TraceState, _ = trace.ParseTraceState(tracestate)
	}
	scc.Remote = true
	if sc := trace.NewSpanContext(scc); sc.IsValid() {
		return sc
	}
	return trace.SpanContext{}
}

// maxTraceParentVersion is the highest version a traceparent may have (ff is invalid).
const maxTraceParentVersion = 254

// hexPart decodes the next '-'-separated field of *h, which must be n lowercase hex digits, into dst.
func hexPart(dst []byte, h *string, n int) bool {
	part, rest, _ := strings.Cut(*h, "-")
	*h = rest
	if len(part) != n {
		return false
	}
	for i := 0; i < n; i += 2 {
		hi, ok1 := lowerHex(part[i])
		lo, ok2 := lowerHex(part[i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i/2] = hi<<4 | lo
	}
	return true
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// ContextWithTraceParent returns ctx carrying the remote span context of traceparent, so spans started
// from it (the Pub/Sub client's create span, say) join that trace. An empty or malformed traceparent
// returns ctx.
func ContextWithTraceParent(ctx context.Context, traceparent string) context.Context {
	if sc := SpanContextFromTraceParent(traceparent, ""); sc.IsValid() {
		return trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	return ctx
}
