package telemetry

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Trace exporter names accepted in OTEL_TRACES_EXPORTER.
const (
	ExporterOTLP    = "otlp"
	ExporterGCP     = "gcp"
	ExporterConsole = "console"
	ExporterNone    = "none"
)

// OTLP protocols accepted in OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER_OTLP_TRACES_PROTOCOL.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// gcpRuntimeEnv are set by Google's serverless runtimes (Cloud Run services and jobs, Cloud Run
// functions, App Engine). Reading them, unlike asking the metadata server, costs no network call.
var gcpRuntimeEnv = []string{"K_SERVICE", "CLOUD_RUN_JOB", "FUNCTION_TARGET", "GAE_SERVICE"}

// traceConfig is what the OTEL_* environment asks for, validated.
type traceConfig struct {
	exporters  []string // empty: tracing off
	protocol   string   // for otlp
	endpoint   string   // OTLP endpoint as configured ("" = exporter default)
	project    string   // for gcp ("" = detect, only on GCP)
	sampler    sdktrace.Sampler
	samplerTxt string
	propagator propagation.TextMapPropagator
	propTxt    string
}

func getenv(k string) string { return strings.TrimSpace(os.Getenv(k)) }

// readTraceConfig applies the exporter selection rules documented on Setup.
func readTraceConfig() (traceConfig, error) {
	var c traceConfig
	var err error
	if c.sampler, c.samplerTxt, err = samplerFromEnv(); err != nil {
		return c, err
	}
	if c.propagator, c.propTxt, err = propagatorFromEnv(); err != nil {
		return c, err
	}
	c.protocol = getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if c.protocol == "" {
		c.protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch c.protocol {
	case "":
		c.protocol = ProtocolHTTPProtobuf // the OpenTelemetry specification's default
	case ProtocolGRPC, ProtocolHTTPProtobuf:
	default:
		return c, fmt.Errorf("telemetry: OTLP protocol %q is not supported (want %q or %q)",
			c.protocol, ProtocolGRPC, ProtocolHTTPProtobuf)
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		v := getenv(k)
		if v == "" {
			continue
		}
		// The exporters only log a malformed endpoint and fall back to localhost; fail instead.
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("telemetry: %s=%q is not a URL like http://host:4317 (http:// for plaintext, https:// for TLS)", k, v)
		}
		if c.endpoint == "" {
			c.endpoint = v
		}
	}
	c.project = getenv("GOOGLE_CLOUD_PROJECT")

	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return c, nil
	}
	sel := strings.ToLower(getenv("OTEL_TRACES_EXPORTER"))
	if sel == "" {
		switch {
		case c.endpoint != "":
			c.exporters = []string{ExporterOTLP}
		case onGCP(os.Getenv):
			c.exporters = []string{ExporterGCP}
		}
		return c, nil
	}
	seen := map[string]bool{}
	for _, name := range strings.Split(sel, ",") {
		name = strings.TrimSpace(name)
		switch name {
		case ExporterNone:
			if strings.Contains(sel, ",") {
				return c, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q: %q cannot be combined with other exporters", sel, ExporterNone)
			}
			return c, nil
		case ExporterOTLP, ExporterConsole:
		case ExporterGCP:
			if c.project == "" && !onGCP(os.Getenv) {
				return c, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=gcp needs GOOGLE_CLOUD_PROJECT outside Google Cloud")
			}
		default:
			return c, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q: unknown exporter %q (want otlp, gcp, console or none)", sel, name)
		}
		if !seen[name] {
			seen[name] = true
			c.exporters = append(c.exporters, name)
		}
	}
	return c, nil
}

func onGCP(getenv func(string) string) bool {
	for _, k := range gcpRuntimeEnv {
		if getenv(k) != "" {
			return true
		}
	}
	return false
}

// samplerFromEnv mirrors the SDK's own OTEL_TRACES_SAMPLER parsing, which only logs a bad value and
// falls back to sampling everything; Setup reports it instead.
func samplerFromEnv() (sdktrace.Sampler, string, error) {
	name := strings.ToLower(getenv("OTEL_TRACES_SAMPLER"))
	arg := getenv("OTEL_TRACES_SAMPLER_ARG")
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER_ARG=%q is not a ratio between 0 and 1", arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), "parentbased_always_on", nil
	case "always_on":
		return sdktrace.AlwaysSample(), name, nil
	case "always_off":
		return sdktrace.NeverSample(), name, nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), name, nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, "", err
		}
		s := sdktrace.TraceIDRatioBased(r)
		if name == "parentbased_traceidratio" {
			s = sdktrace.ParentBased(s)
		}
		return s, name + "=" + strconv.FormatFloat(r, 'g', -1, 64), nil
	default:
		return nil, "", fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER=%q is not supported (want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio)", name)
	}
}

// propagatorFromEnv reads OTEL_PROPAGATORS (tracecontext, baggage, b3, b3multi, jaeger, xray, ottrace
// or none, comma-separated; default tracecontext,baggage). It governs HTTP headers only: the Pub/Sub
// wire format is W3C trace context whatever this says (googclient_traceparent, traceparent). autoprop
// only reports an unknown name and carries on; here it is an error.
// propagatorNames are the OTEL_PROPAGATORS values autoprop knows, as error messages list them.
const propagatorNames = "tracecontext, baggage, b3, b3multi, jaeger, xray, ottrace or none"

func propagatorFromEnv() (propagation.TextMapPropagator, string, error) {
	v := getenv("OTEL_PROPAGATORS")
	if v == "" {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}), "tracecontext,baggage", nil
	}
	var names []string
	for _, n := range strings.Split(v, ",") {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, "", fmt.Errorf("telemetry: OTEL_PROPAGATORS=%q names no propagator (want %s)", v, propagatorNames)
	}
	for _, n := range names { // autoprop stops reading at "none": check the rest first
		switch n {
		case "tracecontext", "baggage", "b3", "b3multi", "jaeger", "xray", "ottrace", "none":
		default:
			return nil, "", fmt.Errorf("telemetry: OTEL_PROPAGATORS=%q: unknown propagator %q (want %s)", v, n, propagatorNames)
		}
	}
	p, err := autoprop.TextMapPropagator(names...)
	if err != nil { // every name was checked above; autoprop's registry is the authority all the same
		return nil, "", fmt.Errorf("telemetry: OTEL_PROPAGATORS=%q: %w", v, err)
	}
	return p, strings.Join(names, ","), nil
}
