//lint:file-ignore SA1019 The Cloud Trace exporter is deprecated in favour of OTLP to Google's endpoint; it is still the simplest way to reach Cloud Trace from Cloud Run without a collector. OTEL_TRACES_EXPORTER=otlp is the alternative.

package telemetry

import (
	"context"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"

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

// LogProject is the project whose Cloud Logging format the logs take (LoggerOptions.GCPProject), so
// log lines link to their traces: PUBQ_GCP_LOG_PROJECT when set; on Google Cloud without it (Cloud Run,
// Cloud Functions, App Engine: see Setup), GOOGLE_CLOUD_PROJECT, else the metadata server's project id,
// asked once for at most 2 s; off Google Cloud, "" (plain JSON). getenv is os.Getenv outside tests.
func LogProject(ctx context.Context, getenv func(string) string) string {
	if p := strings.TrimSpace(getenv("PUBQ_GCP_LOG_PROJECT")); p != "" {
		return p
	}
	if !onGCP(getenv) {
		return ""
	}
	if p := strings.TrimSpace(getenv("GOOGLE_CLOUD_PROJECT")); p != "" {
		return p
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// A client of its own: the package-level one caches the answer for the process.
	p, err := metadata.NewClient(&http.Client{}).GetWithContext(ctx, "project/project-id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(p)
}
