//lint:file-ignore SA1019 The Cloud Trace exporter is deprecated in favour of OTLP to Google's endpoint; it is still the simplest way to reach Cloud Trace from Cloud Run without a collector. OTEL_TRACES_EXPORTER=otlp is the alternative.

package telemetry

import (
	"context"

	texporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/trace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// newGCPExporter creates the Cloud Trace exporter; with project "" it takes the project of the
// default credentials. Tests replace it: finding credentials off Google Cloud would probe the
// metadata server.
var newGCPExporter = func(ctx context.Context, project string) (sdktrace.SpanExporter, error) {
	// The exporter keeps this context for credential refreshes: it must outlive Setup's.
	opts := []texporter.Option{texporter.WithContext(context.WithoutCancel(ctx))}
	if project != "" {
		opts = append(opts, texporter.WithProjectID(project))
	}
	return texporter.New(opts...)
}
