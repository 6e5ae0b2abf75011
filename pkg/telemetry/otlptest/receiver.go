package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // accept OTEL_EXPORTER_OTLP_COMPRESSION=gzip over gRPC
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened for assertions. IDs are lower-case hex; ParentSpanID is "" for
// a root span.
type Span struct {
	TraceID      string
	SpanID       string
	ParentSpanID string
	Name         string
	Service      string // the resource's service.name
	Scope        string // instrumentation scope name
	Kind         trace.SpanKind
	Status       Status
	Attributes   map[string]string // values rendered as strings: 3, true, 1.5, [a,b]
	Resource     map[string]string
	Links        []Link
	Events       []string // event names in order
	Start, End   time.Time
}

// Status is a span's status; Code uses the OpenTelemetry API's codes (Unset, Error, Ok).
type Status struct {
	Code    codes.Code
	Message string
}

// Link is a span link.
type Link struct {
	TraceID    string
	SpanID     string
	Attributes map[string]string
}

// Receiver is an in-process OTLP trace receiver, over gRPC and over HTTP (protobuf or JSON, gzip or
// not), that keeps every span it is sent.
type Receiver struct {
	grpcLis net.Listener
	httpLis net.Listener
	grpcSrv *grpc.Server
	httpSrv *http.Server
	wg      sync.WaitGroup

	mu       sync.Mutex
	spans    []Span
	requests int
	changed  chan struct{} // closed and replaced on every export

	closeOnce sync.Once
}

// Start starts a receiver on two free loopback ports; it stops when tb's test ends.
func Start(tb testing.TB) *Receiver {
	tb.Helper()
	r, err := Listen()
	if err != nil {
		tb.Fatalf("otlptest: %v", err)
	}
	tb.Cleanup(r.Close)
	return r
}

// Listen starts a receiver without a testing.TB (e.g. in TestMain); the caller must Close it.
func Listen() (*Receiver, error) {
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for OTLP/gRPC: %w", err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = gl.Close()
		return nil, fmt.Errorf("listening for OTLP/HTTP: %w", err)
	}
	r := &Receiver{grpcLis: gl, httpLis: hl, changed: make(chan struct{})}
	r.grpcSrv = grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(r.grpcSrv, grpcService{r: r})
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", r.serveHTTP)
	r.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	r.wg.Add(2)
	go func() { defer r.wg.Done(); _ = r.grpcSrv.Serve(gl) }()
	go func() { defer r.wg.Done(); _ = r.httpSrv.Serve(hl) }()
	return r, nil
}

// Close stops both servers. Safe to call more than once.
func (r *Receiver) Close() {
	r.closeOnce.Do(func() {
		r.grpcSrv.Stop()
		_ = r.httpSrv.Close()
		r.wg.Wait()
	})
}

// Endpoint is the OTLP/gRPC address, host:port. As OTEL_EXPORTER_OTLP_ENDPOINT it needs a scheme:
// "http://" + Endpoint() (or use Env).
func (r *Receiver) Endpoint() string { return r.grpcLis.Addr().String() }

// HTTPEndpoint is the OTLP/HTTP base URL, http://host:port, ready for OTEL_EXPORTER_OTLP_ENDPOINT
// (exporters append /v1/traces).
func (r *Receiver) HTTPEndpoint() string { return "http://" + r.httpLis.Addr().String() }

// Env returns the environment (KEY=value) that points a process's telemetry.Setup at this receiver
// over protocol "grpc" or "http/protobuf", with a 100 ms batch delay so spans arrive quickly. Append it
// to exec.Cmd.Env.
func (r *Receiver) Env(protocol string) []string {
	ep := r.HTTPEndpoint()
	if protocol == "grpc" {
		ep = "http://" + r.Endpoint()
	}
	return []string{
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + ep,
		"OTEL_EXPORTER_OTLP_PROTOCOL=" + protocol,
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
}

// Spans returns a copy of every span received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Span, len(r.spans))
	copy(out, r.spans)
	return out
}

// Requests returns how many export requests arrived (over both protocols).
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Reset forgets the spans received so far.
func (r *Receiver) Reset() {
	r.mu.Lock()
	r.spans = nil
	r.mu.Unlock()
}

// WaitFor waits until cond holds for the spans received so far and returns them; after timeout it
// fails the test, listing what did arrive. Call it from the test's goroutine.
func (r *Receiver) WaitFor(tb testing.TB, timeout time.Duration, cond func([]Span) bool) []Span {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		spans := r.Spans()
		if cond(spans) {
			return spans
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("otlptest: condition not met after %v; %d spans received:\n%s", timeout, len(spans), Summary(spans))
			return nil
		}
	}
}

// Summary renders spans one per line (service, name, ids, status) for failure messages.
func Summary(spans []Span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s %q trace=%s span=%s parent=%s kind=%s status=%s",
			s.Service, s.Name, s.TraceID, s.SpanID, s.ParentSpanID, s.Kind, s.Status.Code)
		if s.Status.Message != "" {
			fmt.Fprintf(&b, " (%s)", s.Status.Message)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Named returns the spans called name.
func Named(spans []Span, name string) []Span {
	var out []Span
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// InTrace returns the spans of one trace, sorted by start time.
func InTrace(spans []Span, traceID string) []Span {
	var out []Span
	for _, s := range spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

func (r *Receiver) add(req *collectortrace.ExportTraceServiceRequest) {
	spans := flatten(req)
	r.mu.Lock()
	r.spans = append(r.spans, spans...)
	r.requests++
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

type grpcService struct {
	collectortrace.UnimplementedTraceServiceServer
	r *Receiver
}

func (g grpcService) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	g.r.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

const maxBody = 64 << 20

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, maxBody)
	if strings.EqualFold(req.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, "bad gzip body: "+err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	msg := &collectortrace.ExportTraceServiceRequest{}
	ct := req.Header.Get("Content-Type")
	isJSON := strings.HasPrefix(ct, "application/json")
	switch {
	case isJSON:
		if data, err = hexIDsToBase64(data); err == nil {
			err = protojson.Unmarshal(data, msg)
		}
	case strings.HasPrefix(ct, "application/x-protobuf"):
		err = proto.Unmarshal(data, msg)
	default:
		http.Error(w, "unsupported Content-Type "+strconv.Quote(ct), http.StatusUnsupportedMediaType)
		return
	}
	if err != nil {
		http.Error(w, "decoding request: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.add(msg)
	var out []byte
	if isJSON {
		out, err = protojson.Marshal(&collectortrace.ExportTraceServiceResponse{})
	} else {
		out, err = proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(out)
}

// hexIDsToBase64 rewrites the trace and span ids of an OTLP/JSON body for protojson. The OTLP
// specification encodes them in JSON as hex strings (what the OpenTelemetry SDKs send), where protojson
// expects base64 for bytes fields: decoded as base64, a 32-digit hex trace id becomes 24 wrong bytes.
// Ids already in base64 (not hex of the right length) are left alone.
func hexIDsToBase64(data []byte) ([]byte, error) {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep 64-bit nanosecond timestamps and intValues exact
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				s, ok := e.(string)
				want := map[string]int{"traceId": 16, "spanId": 8, "parentSpanId": 8}[k]
				if ok && want > 0 && len(s) == 2*want {
					if b, err := hex.DecodeString(s); err == nil {
						x[k] = base64.StdEncoding.EncodeToString(b)
						continue
					}
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(doc)
	return json.Marshal(doc)
}

func flatten(req *collectortrace.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			scope := ss.GetScope().GetName()
			for _, s := range ss.GetSpans() {
				out = append(out, convertSpan(s, res, scope))
			}
		}
	}
	return out
}

func convertSpan(s *tracepb.Span, res map[string]string, scope string) Span {
	sp := Span{
		TraceID:      hex.EncodeToString(s.GetTraceId()),
		SpanID:       hex.EncodeToString(s.GetSpanId()),
		ParentSpanID: hex.EncodeToString(s.GetParentSpanId()),
		Name:         s.GetName(),
		Service:      res["service.name"],
		Scope:        scope,
		Kind:         trace.SpanKind(s.GetKind()), // OTLP and the API number kinds alike
		Status:       Status{Code: statusCode(s.GetStatus().GetCode()), Message: s.GetStatus().GetMessage()},
		Attributes:   attrMap(s.GetAttributes()),
		Resource:     res,
		Start:        time.Unix(0, int64(s.GetStartTimeUnixNano())).UTC(),
		End:          time.Unix(0, int64(s.GetEndTimeUnixNano())).UTC(),
	}
	for _, l := range s.GetLinks() {
		sp.Links = append(sp.Links, Link{
			TraceID:    hex.EncodeToString(l.GetTraceId()),
			SpanID:     hex.EncodeToString(l.GetSpanId()),
			Attributes: attrMap(l.GetAttributes()),
		})
	}
	for _, e := range s.GetEvents() {
		sp.Events = append(sp.Events, e.GetName())
	}
	return sp
}

// statusCode maps OTLP's numbering (Unset 0, Ok 1, Error 2) to the API's (Unset 0, Error 1, Ok 2).
func statusCode(c tracepb.Status_StatusCode) codes.Code {
	switch c {
	case tracepb.Status_STATUS_CODE_OK:
		return codes.Ok
	case tracepb.Status_STATUS_CODE_ERROR:
		return codes.Error
	default:
		return codes.Unset
	}
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = valueString(kv.GetValue())
	}
	return m
}

func valueString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BytesValue:
		return base64.StdEncoding.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		parts := make([]string, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			parts = append(parts, valueString(e))
		}
		return "[" + strings.Join(parts, ",") + "]"
	case *commonpb.AnyValue_KvlistValue:
		var b bytes.Buffer
		b.WriteByte('{')
		for i, kv := range x.KvlistValue.GetValues() {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(kv.GetKey() + "=" + valueString(kv.GetValue()))
		}
		b.WriteByte('}')
		return b.String()
	}
	return ""
}
