package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Options configures Setup.
type Options struct {
	// ServiceName is the resource's service.name, e.g. "pubq-worker". OTEL_SERVICE_NAME overrides it.
	// Required unless OTEL_SERVICE_NAME is set.
	ServiceName string
	// ServiceVersion is service.version (e.g. the build's git describe). Default: "" (left out).
	ServiceVersion string
	// Logger receives one line describing the chosen configuration and every error the OpenTelemetry
	// SDK reports (failed exports, failed metric callbacks). Default: slog.Default().
	Logger *slog.Logger
	// ConsoleWriter is where the console exporter writes spans, one JSON object per line.
	// Default: os.Stdout, since pubq's binaries log to stderr: spans and log lines stay in separate
	// streams (on Cloud Run each line of a stream becomes a log entry).
	ConsoleWriter io.Writer
}

// Providers holds the process's tracing and metrics providers made by Setup.
type Providers struct {
	tp        trace.TracerProvider
	sdkTP     *sdktrace.TracerProvider // nil when tracing is off
	mp        *sdkmetric.MeterProvider
	registry  *prometheus.Registry
	res       *resource.Resource
	exporters []string

	shutdownOnce sync.Once
	shutdownErr  error
}

// Setup builds the process's TracerProvider and MeterProvider from Options and the standard OTEL_*
// environment, and installs them, with the W3C TraceContext+Baggage propagator, as the OpenTelemetry
// globals (which the Pub/Sub client's built-in tracing, otelhttp and otelpgx use). Call
// Providers.Shutdown before exit to flush.
//
// Traces go to the exporters named in OTEL_TRACES_EXPORTER (comma-separated):
//
//	otlp     OTLP to OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, a URL (http:// plaintext, https:// TLS), over
//	         OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL "grpc" or "http/protobuf" (the default, as the
//	         OpenTelemetry specification says); headers, timeout, compression from the usual variables
//	gcp      Cloud Trace, project GOOGLE_CLOUD_PROJECT (detected from the credentials on Google Cloud)
//	console  JSON lines to Options.ConsoleWriter
//	none     tracing off
//
// Without OTEL_TRACES_EXPORTER: otlp when an OTLP endpoint is set, else gcp on Google Cloud (K_SERVICE,
// CLOUD_RUN_JOB, FUNCTION_TARGET or GAE_SERVICE set), else off. OTEL_SDK_DISABLED=true turns tracing
// off. Off means a no-op TracerProvider: nothing is recorded or dialled, and an incoming trace context
// still propagates through the process unchanged. Sampling follows OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on), except that the Pub/Sub client's internal
// bookkeeping spans are never recorded (see WithoutClientBookkeeping). HTTP headers carry what
// OTEL_PROPAGATORS names (default tracecontext,baggage); Pub/Sub messages always carry W3C trace
// context. The batch span processor holds DefaultBSPMaxQueueSize spans unless OTEL_BSP_MAX_QUEUE_SIZE
// says otherwise. Resource: service.name, service.version,
// service.instance.id (hostname-pid), host.name, the SDK's telemetry.sdk.*, then
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which win.
//
// Metrics always go to a Prometheus exporter on a registry of this Providers' own (with the Go runtime
// and process collectors), served by MetricsHandler. A bad value in any of these variables is an error
// that names it.
func Setup(ctx context.Context, opts Options) (*Providers, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.ServiceName == "" && getenv("OTEL_SERVICE_NAME") == "" {
		return nil, errors.New("telemetry: Options.ServiceName is empty and OTEL_SERVICE_NAME is unset")
	}
	cfg, err := readTraceConfig()
	if err != nil {
		return nil, err
	}
	res, err := newResource(ctx, opts)
	if err != nil {
		return nil, err
	}

	p := &Providers{res: res, exporters: cfg.exporters}
	p.registry = prometheus.NewRegistry()
	p.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promExp, err := otelprom.New(
		otelprom.WithRegisterer(p.registry),
		// Explicit, so names stay pubq_jobs_enqueued_total & co. whatever the prometheus/common
		// validation scheme default becomes.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: creating prometheus exporter: %w", err)
	}
	p.mp = sdkmetric.NewMeterProvider(MeterProviderOptions(res, promExp)...)

	if len(cfg.exporters) == 0 {
		p.tp = noop.NewTracerProvider()
	} else {
		var made []sdktrace.SpanExporter
		for _, name := range cfg.exporters {
			exp, err := newExporter(ctx, name, cfg, opts)
			if err != nil {
				for _, e := range made {
					_ = e.Shutdown(ctx)
				}
				_ = p.mp.Shutdown(ctx)
				return nil, err
			}
			made = append(made, exp)
		}
		tpOpts := append([]sdktrace.TracerProviderOption{sdktrace.WithResource(res)}, TracerProviderOptions(cfg.sampler, made...)...)
		p.sdkTP = sdktrace.NewTracerProvider(tpOpts...)
		p.tp = p.sdkTP
	}

	otel.SetTracerProvider(p.tp)
	otel.SetMeterProvider(p.mp)
	otel.SetTextMapPropagator(cfg.propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("telemetry: opentelemetry error", "err", err)
	}))

	svc, _ := res.Set().Value("service.name")
	attrs := []any{"service", svc.AsString(), "traces", p.TracesExporter(), "metrics", "prometheus", "propagators", cfg.propTxt}
	if len(cfg.exporters) > 0 {
		attrs = append(attrs, "sampler", cfg.samplerTxt)
	}
	if containsString(cfg.exporters, ExporterOTLP) {
		ep := loggableEndpoint(cfg.endpoint)
		if ep == "" {
			ep = "(exporter default)"
		}
		attrs = append(attrs, "otlp_endpoint", ep, "otlp_protocol", cfg.protocol)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "telemetry: configured", argsToAttrs(attrs)...)
	return p, nil
}

// loggableEndpoint returns the OTLP endpoint without what may hold a credential: the userinfo
// (user:password@) and the query and fragment. A gRPC endpoint may come without a scheme
// ("collector:4317", "10.0.0.5:4317"): it is read as a host. An endpoint that does not parse is not
// logged.
func loggableEndpoint(ep string) string {
	if ep == "" {
		return ""
	}
	noScheme := !strings.Contains(ep, "://")
	if noScheme {
		ep = "//" + ep
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "(unparseable)"
	}
	u.User = nil
	u.RawQuery, u.ForceQuery = "", false
	u.Fragment, u.RawFragment = "", ""
	if noScheme {
		return strings.TrimPrefix(u.String(), "//")
	}
	return u.String()
}

func argsToAttrs(kv []any) []slog.Attr {
	out := make([]slog.Attr, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, slog.Any(kv[i].(string), kv[i+1]))
	}
	return out
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func newExporter(ctx context.Context, name string, cfg traceConfig, opts Options) (sdktrace.SpanExporter, error) {
	switch name {
	case ExporterOTLP:
		// Both exporters read endpoint, headers, TLS, timeout and compression from OTEL_EXPORTER_OTLP_*
		// themselves; neither dials before the first export.
		var exp sdktrace.SpanExporter
		var err error
		if cfg.protocol == ProtocolGRPC {
			exp, err = otlptracegrpc.New(ctx)
		} else {
			exp, err = otlptracehttp.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("telemetry: creating OTLP %s trace exporter: %w", cfg.protocol, err)
		}
		return exp, nil
	case ExporterGCP:
		exp, err := newGCPExporter(ctx, cfg.project)
		if err != nil {
			return nil, fmt.Errorf("telemetry: creating Cloud Trace exporter: %w", err)
		}
		return exp, nil
	case ExporterConsole:
		w := opts.ConsoleWriter
		if w == nil {
			w = os.Stdout
		}
		exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
		if err != nil {
			return nil, fmt.Errorf("telemetry: creating console trace exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("telemetry: unknown exporter %q", name)
}

func newResource(ctx context.Context, opts Options) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{
		attribute.String("service.instance.id", instanceID()),
	}
	if opts.ServiceName != "" {
		attrs = append(attrs, attribute.String("service.name", opts.ServiceName))
	}
	if opts.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", opts.ServiceVersion))
	}
	// Later options win: the environment overrides what the code says.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: building resource (check OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	return res, nil
}

// instanceID is hostname-pid, which names the process in logs and on dashboards; a uuid when the
// hostname is unknown.
func instanceID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return uuid.NewString()
	}
	return h + "-" + strconv.Itoa(os.Getpid())
}

// TracerProvider returns the provider installed as the global one.
func (p *Providers) TracerProvider() trace.TracerProvider { return p.tp }

// Tracer returns the provider's tracer for pubq's instrumentation scope.
func (p *Providers) Tracer() trace.Tracer { return p.tp.Tracer(ScopeName) }

// MeterProvider returns the provider installed as the global one.
func (p *Providers) MeterProvider() metric.MeterProvider { return p.mp }

// Resource returns the resource describing this process.
func (p *Providers) Resource() *resource.Resource { return p.res }

// TracesExporter names the trace exporters in use, comma-separated, or "none".
func (p *Providers) TracesExporter() string {
	if len(p.exporters) == 0 {
		return ExporterNone
	}
	return strings.Join(p.exporters, ",")
}

// MetricsHandler serves the Prometheus text format of this Providers' registry; mount it on /metrics.
func (p *Providers) MetricsHandler() http.Handler {
	// A scrape that cannot finish in 10s is answered 503 rather than left to pile up.
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{Registry: p.registry, Timeout: 10 * time.Second})
}

// ForceFlush exports the spans ended so far without shutting down (for short-lived commands and
// tests that read an exporter's output).
func (p *Providers) ForceFlush(ctx context.Context) error {
	if p.sdkTP == nil {
		return nil
	}
	if err := p.sdkTP.ForceFlush(ctx); err != nil {
		return fmt.Errorf("telemetry: flushing spans: %w", err)
	}
	return nil
}

// Shutdown flushes the spans and metrics still buffered and stops the providers; ctx bounds the wait
// for an exporter that cannot be reached. Calls after the first return the first call's result.
func (p *Providers) Shutdown(ctx context.Context) error {
	p.shutdownOnce.Do(func() {
		var errs []error
		if p.sdkTP != nil {
			if err := p.sdkTP.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("telemetry: shutting down tracer provider: %w", err))
			}
		}
		if err := p.mp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("telemetry: shutting down meter provider: %w", err))
		}
		p.shutdownErr = errors.Join(errs...)
	})
	return p.shutdownErr
}
