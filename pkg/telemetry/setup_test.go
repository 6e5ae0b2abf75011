package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/pubq/pubq/pkg/telemetry/otlptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// envKeys are cleared before every Setup test so the machine's environment cannot leak in.
var envKeys = []string{
	"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER",
	"OTEL_TRACES_SAMPLER_ARG", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED",
	"GOOGLE_CLOUD_PROJECT", "K_SERVICE", "CLOUD_RUN_JOB", "FUNCTION_TARGET", "GAE_SERVICE",
	"OTEL_BSP_SCHEDULE_DELAY", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_PROPAGATORS",
}

func cleanEnv(t *testing.T, kv ...string) {
	t.Helper()
	for _, k := range envKeys {
		t.Setenv(k, "")
		os.Unsetenv(k) // Setenv restores the old value at the end of the test
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

// fakeGCP replaces the Cloud Trace exporter (whose credential lookup would probe the metadata
// server) and reports the project it was created with.
func fakeGCP(t *testing.T) *string {
	t.Helper()
	var project = new(string)
	*project = "<not created>"
	prev := newGCPExporter
	newGCPExporter = func(_ context.Context, p string) (sdktrace.SpanExporter, error) {
		*project = p
		return tracetest.NewInMemoryExporter(), nil
	}
	t.Cleanup(func() { newGCPExporter = prev })
	return project
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func shutdown(t *testing.T, p *Providers) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestSetupExporterSelection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		want    string // TracesExporter(), or "" when an error is expected
		wantErr []string
		project string // expected GCP project when want is gcp
	}{
		{name: "nothing configured is off", want: "none"},
		{name: "endpoint selects otlp", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "$HTTP"}, want: "otlp"},
		{name: "traces endpoint selects otlp", env: []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "$HTTP/v1/traces"}, want: "otlp"},
		{name: "grpc protocol", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "$GRPC", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}, want: "otlp"},
		{name: "explicit none beats endpoint", env: []string{"OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "$HTTP"}, want: "none"},
		{name: "sdk disabled", env: []string{"OTEL_SDK_DISABLED", "true", "OTEL_EXPORTER_OTLP_ENDPOINT", "$HTTP"}, want: "none"},
		{name: "console", env: []string{"OTEL_TRACES_EXPORTER", "console"}, want: "console"},
		{name: "list", env: []string{"OTEL_TRACES_EXPORTER", "otlp, console,otlp"}, want: "otlp,console"},
		{name: "cloud run defaults to gcp", env: []string{"K_SERVICE", "worker", "GOOGLE_CLOUD_PROJECT", "proj-1"}, want: "gcp", project: "proj-1"},
		{name: "cloud run without project lets the exporter detect it", env: []string{"K_SERVICE", "worker"}, want: "gcp", project: ""},
		{name: "cloud run with endpoint prefers otlp", env: []string{"K_SERVICE", "worker", "OTEL_EXPORTER_OTLP_ENDPOINT", "$HTTP"}, want: "otlp"},
		{name: "explicit gcp", env: []string{"OTEL_TRACES_EXPORTER", "gcp", "GOOGLE_CLOUD_PROJECT", "proj-2"}, want: "gcp", project: "proj-2"},

		{name: "unknown exporter", env: []string{"OTEL_TRACES_EXPORTER", "zipkin"}, wantErr: []string{"OTEL_TRACES_EXPORTER", `"zipkin"`, "otlp, gcp, console or none"}},
		{name: "none in a list", env: []string{"OTEL_TRACES_EXPORTER", "otlp,none"}, wantErr: []string{"OTEL_TRACES_EXPORTER", "none", "cannot be combined"}},
		{name: "gcp without project off GCP", env: []string{"OTEL_TRACES_EXPORTER", "gcp"}, wantErr: []string{"GOOGLE_CLOUD_PROJECT"}},
		{name: "bad protocol", env: []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_ENDPOINT", "$HTTP"}, wantErr: []string{"http/json", "not supported"}},
		{name: "endpoint without scheme", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317"}, wantErr: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317", "http://"}},
		{name: "bad sampler", env: []string{"OTEL_TRACES_SAMPLER", "sometimes"}, wantErr: []string{"OTEL_TRACES_SAMPLER", "sometimes"}},
		{name: "bad sampler arg", env: []string{"OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "1.5"}, wantErr: []string{"OTEL_TRACES_SAMPLER_ARG", "1.5"}},
		{name: "unknown propagator", env: []string{"OTEL_PROPAGATORS", "tracecontext,zipkin"}, wantErr: []string{"OTEL_PROPAGATORS", "zipkin", "b3multi"}},
		{name: "unknown propagator after none", env: []string{"OTEL_PROPAGATORS", "none,zipkin"}, wantErr: []string{"OTEL_PROPAGATORS", "zipkin"}},
		{name: "empty propagator list", env: []string{"OTEL_PROPAGATORS", " , "}, wantErr: []string{"OTEL_PROPAGATORS", "names no propagator"}},
		{name: "bad resource attributes", env: []string{"OTEL_RESOURCE_ATTRIBUTES", "novalue"}, wantErr: []string{"OTEL_RESOURCE_ATTRIBUTES"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Endpoints point at a receiver of the test's own, never at a collector that may run here.
			rcv := otlptest.Start(t)
			env := append([]string(nil), tc.env...)
			for i := range env {
				env[i] = strings.NewReplacer("$HTTP", rcv.HTTPEndpoint(), "$GRPC", "http://"+rcv.Endpoint()).Replace(env[i])
			}
			cleanEnv(t, env...)
			project := fakeGCP(t)
			p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: quietLogger(), ConsoleWriter: &bytes.Buffer{}})
			if tc.want == "" {
				if err == nil {
					shutdown(t, p)
					t.Fatalf("Setup succeeded, want an error mentioning %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				if !strings.HasPrefix(err.Error(), "telemetry: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			defer shutdown(t, p)
			if got := p.TracesExporter(); got != tc.want {
				t.Errorf("TracesExporter = %q, want %q", got, tc.want)
			}
			if tc.want == "gcp" && *project != tc.project {
				t.Errorf("Cloud Trace exporter project = %q, want %q", *project, tc.project)
			}
			if tc.want != "gcp" && *project != "<not created>" {
				t.Errorf("Cloud Trace exporter was created for %q", tc.want)
			}
			_, span := p.Tracer().Start(context.Background(), "probe")
			defer span.End()
			if recording := span.IsRecording(); recording != (tc.want != "none") {
				t.Errorf("span recording = %v with exporter %q", recording, tc.want)
			}
		})
	}
}

func TestSetupRequiresServiceName(t *testing.T) {
	cleanEnv(t)
	if _, err := Setup(context.Background(), Options{Logger: quietLogger()}); err == nil || !strings.Contains(err.Error(), "ServiceName") {
		t.Fatalf("Setup without a service name: err = %v", err)
	}
	cleanEnv(t, "OTEL_SERVICE_NAME", "from-env")
	p, err := Setup(context.Background(), Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("Setup with OTEL_SERVICE_NAME only: %v", err)
	}
	shutdown(t, p)
}

func TestTracingOffIsNoopAndPropagates(t *testing.T) {
	cleanEnv(t)
	p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, p)
	// An incoming W3C context still flows through a process whose tracing is off.
	in := propagation.MapCarrier{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	ctx := otel.GetTextMapPropagator().Extract(context.Background(), in)
	ctx, span := otel.Tracer("x").Start(ctx, "work")
	span.End()
	out := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, out)
	if out["traceparent"] != in["traceparent"] {
		t.Errorf("traceparent out = %q, want the incoming %q", out["traceparent"], in["traceparent"])
	}
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Errorf("ForceFlush with tracing off: %v", err)
	}
}

func TestConsoleExporterWrites(t *testing.T) {
	cleanEnv(t, "OTEL_TRACES_EXPORTER", "console")
	var buf bytes.Buffer
	p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: quietLogger(), ConsoleWriter: &buf})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer().Start(context.Background(), "console-span")
	span.End()
	shutdown(t, p)
	if !strings.Contains(buf.String(), `"Name":"console-span"`) {
		t.Errorf("console output lacks the span: %s", buf.String())
	}
}

func TestSpansReachOTLPReceiver(t *testing.T) {
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(protocol, func(t *testing.T) {
			rcv := otlptest.Start(t)
			cleanEnv(t, "OTEL_SERVICE_NAME", "env-worker",
				"OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,service.namespace=pubq")
			for _, kv := range rcv.Env(protocol) {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			var logs bytes.Buffer
			p, err := Setup(context.Background(), Options{
				ServiceName: "code-worker", ServiceVersion: "1.2.3", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			if p.TracesExporter() != ExporterOTLP {
				t.Fatalf("TracesExporter = %q", p.TracesExporter())
			}
			if !strings.Contains(logs.String(), "otlp_protocol="+protocol) {
				t.Errorf("configuration log line lacks the protocol: %s", logs.String())
			}
			// Setup installs the globals, so instrumented libraries use them.
			ctx, span := otel.Tracer("test").Start(context.Background(), "job.run",
				trace.WithAttributes(JobAttributes("critical", "email.send", "k-1", "id-1", 2)...))
			span.End()
			shutdown(t, p)

			spans := rcv.WaitFor(t, 10*time.Second, func(s []otlptest.Span) bool { return len(otlptest.Named(s, "job.run")) == 1 })
			s := otlptest.Named(spans, "job.run")[0]
			if s.TraceID != trace.SpanContextFromContext(ctx).TraceID().String() {
				t.Errorf("trace id %s, want %s", s.TraceID, trace.SpanContextFromContext(ctx).TraceID())
			}
			if s.Service != "env-worker" {
				t.Errorf("service.name = %q, want OTEL_SERVICE_NAME to win", s.Service)
			}
			for k, want := range map[string]string{
				"service.version": "1.2.3", "deployment.environment.name": "test", "service.namespace": "pubq",
			} {
				if s.Resource[k] != want {
					t.Errorf("resource %s = %q, want %q", k, s.Resource[k], want)
				}
			}
			host, _ := os.Hostname()
			if id := s.Resource["service.instance.id"]; !strings.HasPrefix(id, host+"-") {
				t.Errorf("service.instance.id = %q, want hostname-pid", id)
			}
			for k, want := range map[string]string{
				"messaging.system": "gcp_pubsub", "pubq.job.queue": "critical", "pubq.job.kind": "email.send",
				"pubq.job.key": "k-1", "pubq.job.id": "id-1", "pubq.job.attempt": "2",
			} {
				if s.Attributes[k] != want {
					t.Errorf("attribute %s = %q, want %q", k, s.Attributes[k], want)
				}
			}
			// Shutdown is idempotent.
			if err := p.Shutdown(context.Background()); err != nil {
				t.Errorf("second Shutdown: %v", err)
			}
		})
	}
}

func TestSamplerAlwaysOffExportsNothing(t *testing.T) {
	rcv := otlptest.Start(t)
	cleanEnv(t, "OTEL_TRACES_SAMPLER", "always_off")
	for _, kv := range rcv.Env(ProtocolHTTPProtobuf) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer().Start(context.Background(), "dropped")
	span.End()
	shutdown(t, p)
	if n := len(rcv.Spans()); n != 0 {
		t.Errorf("always_off exported %d spans", n)
	}
}

func TestPropagatorsInstalled(t *testing.T) {
	for _, tc := range []struct {
		env        string // OTEL_PROPAGATORS
		want, miss []string
	}{
		{env: "", want: []string{"traceparent", "baggage"}, miss: []string{"b3"}},
		{env: "b3", want: []string{"b3"}, miss: []string{"traceparent", "baggage"}},
		{env: "tracecontext, B3MULTI", want: []string{"traceparent", "x-b3-traceid"}, miss: []string{"baggage", "b3"}},
		{env: "none", miss: []string{"traceparent", "baggage", "b3"}},
	} {
		t.Run("OTEL_PROPAGATORS="+tc.env, func(t *testing.T) {
			cleanEnv(t, "OTEL_TRACES_EXPORTER", "console", "OTEL_PROPAGATORS", tc.env)
			p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: quietLogger(), ConsoleWriter: &bytes.Buffer{}})
			if err != nil {
				t.Fatal(err)
			}
			defer shutdown(t, p)
			m, _ := baggage.NewMember("tenant", "acme")
			b, _ := baggage.New(m)
			ctx, span := otel.Tracer("t").Start(baggage.ContextWithBaggage(context.Background(), b), "s")
			defer span.End()
			c := propagation.MapCarrier{}
			otel.GetTextMapPropagator().Inject(ctx, c)
			tid := span.SpanContext().TraceID().String()
			for _, k := range tc.want {
				if v := c[k]; v == "" || (k != "baggage" && !strings.Contains(v, tid)) || (k == "baggage" && v != "tenant=acme") {
					t.Errorf("header %s = %q in %v (trace %s)", k, v, c, tid)
				}
			}
			for _, k := range tc.miss {
				if _, ok := c[k]; ok {
					t.Errorf("header %s injected: %v", k, c)
				}
			}
		})
	}
}

func TestShutdownBoundedWhenCollectorDown(t *testing.T) {
	// A closed loopback port: exports fail; Shutdown still returns within its context and the export
	// error reaches Setup's logger through the OpenTelemetry error handler.
	ln := httptest.NewServer(http.NotFoundHandler())
	addr := ln.URL
	ln.Close()
	// The export timeout bounds the retry loop the batch processor runs, even past Shutdown's context.
	cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", addr, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_TIMEOUT", "300")
	var logs syncBuffer
	p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer().Start(context.Background(), "lost")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err1 := p.Shutdown(ctx)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Shutdown took %v with a 2s context", d)
	}
	if err1 != nil && !strings.HasPrefix(err1.Error(), "telemetry: ") {
		t.Errorf("Shutdown error lacks the prefix: %v", err1)
	}
	if !strings.Contains(logs.String(), "opentelemetry error") {
		t.Errorf("the failed export was not logged; log:\n%s", logs.String())
	}
	if err2 := p.Shutdown(context.Background()); err2 != err1 {
		t.Errorf("second Shutdown = %v, want the first result %v", err2, err1)
	}
}

// The configured line names the OTLP endpoint without its userinfo, query or fragment: a
// collector's basic-auth password or an API key in the URL never reaches the log.
func TestSetupLogsEndpointWithoutCredentials(t *testing.T) {
	rcv := otlptest.Start(t)
	base := rcv.HTTPEndpoint() // http://host:port
	for _, tc := range []struct{ endpoint, want string }{
		{strings.Replace(base, "http://", "http://collector-user:pa55word@", 1) + "/otlp?api_key=k3y#frag", base + "/otlp"},
		{strings.Replace(base, "http://", "http://only-a-token@", 1) + "?", base},
		{base, base},
	} {
		cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", tc.endpoint)
		var logs syncBuffer
		p, err := Setup(context.Background(), Options{ServiceName: "svc", Logger: NewLogger(&logs, LoggerOptions{})})
		if err != nil {
			t.Fatalf("Setup(%q): %v", tc.endpoint, err)
		}
		shutdown(t, p)
		line := logs.String()
		if !strings.Contains(line, `"otlp_endpoint":"`+tc.want+`"`) {
			t.Errorf("endpoint %q: want otlp_endpoint %q in %s", tc.endpoint, tc.want, line)
		}
		for _, secret := range []string{"collector-user", "pa55word", "only-a-token", "k3y", "frag"} {
			if strings.Contains(line, secret) {
				t.Errorf("endpoint %q: %q reached the log: %s", tc.endpoint, secret, line)
			}
		}
	}
	for in, want := range map[string]string{
		"http://u:p@h:4318/v1/traces?x=1": "http://h:4318/v1/traces",
		"collector:4317":                  "collector:4317", // gRPC endpoints may come without a scheme
		"10.0.0.5:4317":                   "10.0.0.5:4317",
		"[::1]:4317":                      "[::1]:4317",
		"user:pw@collector:4317":          "collector:4317",
	} {
		if got := loggableEndpoint(in); got != want {
			t.Errorf("loggableEndpoint(%q) = %q, want %q", in, got, want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reading test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
