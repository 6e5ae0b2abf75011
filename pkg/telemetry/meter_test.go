package telemetry_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/telemetry"
)

// exemplars records one measurement inside a sampled span's context and returns the exemplars the
// collected data point carries.
func exemplars(t *testing.T) int {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(telemetry.MeterProviderOptions(resource.Empty(), reader)...)
	c, err := mp.Meter("test").Int64Counter("c")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	c.Add(trace.ContextWithSpanContext(context.Background(), sc), 1)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sum := rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64])
	if len(sum.DataPoints) != 1 || sum.DataPoints[0].Value != 1 {
		t.Fatalf("data points: %+v", sum.DataPoints)
	}
	return len(sum.DataPoints[0].Exemplars)
}

// Exemplars are off by default (they cost the worker ~20 % of its CPU), and the standard variable
// turns them on.
func TestMeterProviderExemplars(t *testing.T) {
	t.Setenv("OTEL_METRICS_EXEMPLAR_FILTER", "")
	if n := exemplars(t); n != 0 {
		t.Fatalf("default: %d exemplars, want none", n)
	}
	t.Setenv("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based")
	if n := exemplars(t); n != 1 {
		t.Fatalf("OTEL_METRICS_EXEMPLAR_FILTER=trace_based: %d exemplars, want 1", n)
	}
}
