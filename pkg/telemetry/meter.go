package telemetry

import (
	"os"
	"strings"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
)

// MeterProviderOptions is how the binaries build their meter provider (Setup), for res and reader.
// Exemplars are off unless OTEL_METRICS_EXEMPLAR_FILTER says otherwise: the SDK's default filter reads
// the span context of every measurement's context, and through the Pub/Sub client's deep contexts that
// cost the worker ~20 % of its CPU on the end-to-end benchmark (docs/benchmarks.md).
func MeterProviderOptions(res *resource.Resource, reader sdkmetric.Reader) []sdkmetric.Option {
	opts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(reader)}
	if strings.TrimSpace(os.Getenv("OTEL_METRICS_EXEMPLAR_FILTER")) == "" {
		opts = append(opts, sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	}
	return opts
}
