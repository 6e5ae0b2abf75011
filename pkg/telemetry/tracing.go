package telemetry

import (
	"os"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Batch span processor sizes pubq uses unless OTEL_BSP_MAX_QUEUE_SIZE / OTEL_BSP_MAX_EXPORT_BATCH_SIZE
// say otherwise. The SDK's defaults (2,048 and 512) hold about 40 ms of a busy worker's spans (every job
// ends 5–7 spans: the Pub/Sub client's subscribe and process, pubq's handler span, its SQL), so any
// hiccup of the exporter drops spans and leaves traces with holes. 32,768 spans are a few seconds of
// that, tens of MB at worst.
const (
	DefaultBSPMaxQueueSize       = 32768
	DefaultBSPMaxExportBatchSize = 2048
)

// TracerProviderOptions are the options Setup builds its TracerProvider with, besides the resource:
// sampler (wrapped by WithoutClientBookkeeping) and one batch span processor per exporter, sized as
// above. Benchmarks use it to measure the tracing pubq ships.
func TracerProviderOptions(sampler sdktrace.Sampler, exporters ...sdktrace.SpanExporter) []sdktrace.TracerProviderOption {
	opts := []sdktrace.TracerProviderOption{sdktrace.WithSampler(WithoutClientBookkeeping(sampler))}
	for _, exp := range exporters {
		opts = append(opts, sdktrace.WithBatcher(exp, batcherOptions()...))
	}
	return opts
}

// batcherOptions sets pubq's batch span processor sizes where the environment does not: the SDK reads
// the OTEL_BSP_* variables itself, and explicit options would override them. A queue size from the
// environment keeps the SDK's batch size too (which must not exceed the queue).
func batcherOptions() []sdktrace.BatchSpanProcessorOption {
	if strings.TrimSpace(os.Getenv("OTEL_BSP_MAX_QUEUE_SIZE")) != "" {
		return nil
	}
	opts := []sdktrace.BatchSpanProcessorOption{sdktrace.WithMaxQueueSize(DefaultBSPMaxQueueSize)}
	if strings.TrimSpace(os.Getenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")) == "" {
		opts = append(opts, sdktrace.WithMaxExportBatchSize(DefaultBSPMaxExportBatchSize))
	}
	return opts
}

// ClientBookkeepingSpans are the spans of the Pub/Sub client's built-in tracing that time its own
// internal queues, per message: a semaphore acquire and a scheduler hand-off on receive, flow control
// and batching on publish. They carry no attributes and have no children; the spans a trace needs
// (<topic> create, <topic> publish, <sub> subscribe, <sub> process, ack and modack) are kept.
var ClientBookkeepingSpans = []string{
	"subscriber concurrency control",
	"subscribe scheduler",
	"publisher flow control",
	"publisher batching",
}

var bookkeeping = func() map[string]bool {
	m := make(map[string]bool, len(ClientBookkeepingSpans))
	for _, n := range ClientBookkeepingSpans {
		m[n] = true
	}
	return m
}()

// WithoutClientBookkeeping returns a sampler that drops the ClientBookkeepingSpans and asks next
// about every other span. Recording them doubled the client's per-message spans on both sides for no
// information; dropped, they cost an unrecorded span each.
func WithoutClientBookkeeping(next sdktrace.Sampler) sdktrace.Sampler {
	if _, ok := next.(bookkeepingFilter); ok {
		return next
	}
	return bookkeepingFilter{next: next}
}

type bookkeepingFilter struct{ next sdktrace.Sampler }

func (f bookkeepingFilter) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if bookkeeping[p.Name] {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return f.next.ShouldSample(p)
}

func (f bookkeepingFilter) Description() string {
	return "WithoutClientBookkeeping{" + f.next.Description() + "}"
}
