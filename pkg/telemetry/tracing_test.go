package telemetry

import (
	"bytes"
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestWithoutClientBookkeepingDropsOnlyBookkeeping(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(WithoutClientBookkeeping(sdktrace.AlwaysSample())), sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := tp.Tracer("cloud.google.com/go/pubsub/v2")

	ts, err := trace.ParseTraceState("vendor=x")
	if err != nil {
		t.Fatal(err)
	}
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2},
		TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	ctx, sub := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "pubq-default-worker subscribe")
	for _, name := range ClientBookkeepingSpans {
		_, s := tr.Start(ctx, name)
		if s.IsRecording() || s.SpanContext().IsSampled() {
			t.Errorf("%q is recorded (recording %v, sampled %v)", name, s.IsRecording(), s.SpanContext().IsSampled())
		}
		if got := s.SpanContext().TraceState().String(); got != "vendor=x" {
			t.Errorf("%q: tracestate %q, want the parent's", name, got)
		}
		s.End()
	}
	_, proc := tr.Start(ctx, "pubq-default-worker process")
	_, ack := tr.Start(context.Background(), "pubq-default-worker ack")
	for _, s := range []trace.Span{proc, ack} {
		if !s.IsRecording() {
			t.Errorf("a span the traces need is not recorded")
		}
		s.End()
	}
	sub.End()
	var got []string
	for _, s := range rec.Ended() {
		got = append(got, s.Name())
	}
	if len(got) != 3 || got[0] != "pubq-default-worker process" || got[1] != "pubq-default-worker ack" || got[2] != "pubq-default-worker subscribe" {
		t.Errorf("recorded %v, want process, ack, subscribe", got)
	}
}

func TestWithoutClientBookkeepingAsksNext(t *testing.T) {
	s := WithoutClientBookkeeping(sdktrace.NeverSample())
	if WithoutClientBookkeeping(s) != s {
		t.Error("wrapping twice added a second filter")
	}
	if d := s.Description(); d != "WithoutClientBookkeeping{AlwaysOffSampler}" {
		t.Errorf("Description = %q", d)
	}
	r := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: trace.TraceID{1}, Name: "pubq job demo.record"})
	if r.Decision != sdktrace.Drop {
		t.Errorf("decision %v, want the wrapped sampler's Drop", r.Decision)
	}
}

func TestSetupDropsClientBookkeeping(t *testing.T) {
	cleanEnv(t, "OTEL_TRACES_EXPORTER", "console")
	var out bytes.Buffer
	p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: quietLogger(), ConsoleWriter: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, p)
	tr := p.TracerProvider().Tracer("cloud.google.com/go/pubsub/v2")
	ctx, sub := tr.Start(context.Background(), "pubq-default-worker subscribe")
	_, sched := tr.Start(ctx, "subscribe scheduler")
	if !sub.IsRecording() || sched.IsRecording() {
		t.Errorf("subscribe recording %v, scheduler recording %v; want true, false", sub.IsRecording(), sched.IsRecording())
	}
	sched.End()
	sub.End()
}

func TestBatcherOptions(t *testing.T) {
	apply := func() sdktrace.BatchSpanProcessorOptions {
		var o sdktrace.BatchSpanProcessorOptions
		for _, opt := range batcherOptions() {
			opt(&o)
		}
		return o
	}
	cleanEnv(t)
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "")
	t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "")
	if o := apply(); o.MaxQueueSize != DefaultBSPMaxQueueSize || o.MaxExportBatchSize != DefaultBSPMaxExportBatchSize {
		t.Errorf("defaults: queue %d batch %d", o.MaxQueueSize, o.MaxExportBatchSize)
	}
	t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100")
	if o := apply(); o.MaxQueueSize != DefaultBSPMaxQueueSize || o.MaxExportBatchSize != 0 {
		t.Errorf("batch size from the environment: queue %d, batch %d (want left to the SDK)", o.MaxQueueSize, o.MaxExportBatchSize)
	}
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1000")
	if o := apply(); o.MaxQueueSize != 0 || o.MaxExportBatchSize != 0 {
		t.Errorf("queue size from the environment: queue %d, batch %d (want both left to the SDK)", o.MaxQueueSize, o.MaxExportBatchSize)
	}
}
