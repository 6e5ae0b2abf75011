package traceview

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Jaeger reads traces from Jaeger's query HTTP API (the JSON API the Jaeger UI uses, served by Jaeger
// v1 query and v2 alike on port 16686):
//
//	GET {base}/api/traces/{traceID}
//	GET {base}/api/traces?service=S&tags={"pubq.job.key":"K"}&start=µs&end=µs&limit=N
//	GET {base}/api/services
type Jaeger struct {
	base   string
	client *http.Client
	now    func() time.Time
}

// NewJaeger returns a Jaeger source for the query API at baseURL (e.g. http://127.0.0.1:16686).
// client defaults to a client with a 30 s timeout.
func NewJaeger(baseURL string, client *http.Client) *Jaeger {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	return &Jaeger{base: strings.TrimRight(baseURL, "/"), client: client, now: time.Now}
}

// Trace fetches one trace by id.
func (j *Jaeger) Trace(ctx context.Context, traceID string) (*Trace, error) {
	id, ok := normalizeTraceID(traceID)
	if !ok {
		return nil, fmt.Errorf("traceview: %q is not a trace id (up to 32 hex digits)", traceID)
	}
	traces, err := j.get(ctx, "/api/traces/"+id, nil)
	if err != nil {
		return nil, err
	}
	for _, t := range traces {
		if t.TraceID == id {
			return t, nil
		}
	}
	return nil, fmt.Errorf("traceview: trace %s: %w", id, ErrNotFound)
}

// FindJob searches for traces with a span tagged pubq.job.key=q.Key, in q.Service or, when it is
// empty, in every service Jaeger knows.
func (j *Jaeger) FindJob(ctx context.Context, q JobQuery) ([]*Trace, error) {
	q = q.withDefaults()
	if q.Key == "" {
		return nil, errors.New("traceview: JobQuery.Key is empty")
	}
	services := []string{q.Service}
	if q.Service == "" {
		var err error
		if services, err = j.Services(ctx); err != nil {
			return nil, err
		}
	}
	tags, err := json.Marshal(map[string]string{attrJobKey: q.Key})
	if err != nil {
		return nil, fmt.Errorf("traceview: encoding tags: %w", err)
	}
	end := j.now()
	start := end.Add(-q.Lookback)
	seen := map[string]bool{}
	var out []*Trace
	for _, svc := range services {
		params := url.Values{
			"service": {svc},
			"tags":    {string(tags)},
			"start":   {strconv.FormatInt(start.UnixMicro(), 10)},
			"end":     {strconv.FormatInt(end.UnixMicro(), 10)},
			"limit":   {strconv.Itoa(q.Limit)},
		}
		traces, err := j.get(ctx, "/api/traces", params)
		if err != nil {
			return nil, err
		}
		for _, t := range traces {
			if !seen[t.TraceID] {
				seen[t.TraceID] = true
				out = append(out, t)
			}
		}
	}
	sortTraces(out)
	return out, nil
}

// Services lists the services Jaeger has spans of, except Jaeger's own.
func (j *Jaeger) Services(ctx context.Context) ([]string, error) {
	body, err := j.do(ctx, "/api/services", nil)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("traceview: decoding Jaeger services: %w", err)
	}
	var out []string
	for _, s := range resp.Data {
		if s != "jaeger" && s != "jaeger-query" {
			out = append(out, s)
		}
	}
	return out, nil
}

func (j *Jaeger) get(ctx context.Context, path string, params url.Values) ([]*Trace, error) {
	body, err := j.do(ctx, path, params)
	if err != nil {
		return nil, err
	}
	return DecodeJaeger(bytes.NewReader(body))
}

// maxResponse bounds what is read from Jaeger: a search for one job's traces is far smaller.
const maxResponse = 64 << 20

func (j *Jaeger) do(ctx context.Context, path string, params url.Values) ([]byte, error) {
	u := j.base + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("traceview: building Jaeger request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("traceview: querying Jaeger: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("traceview: reading Jaeger response: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		return body, nil
	}
	msg := jaegerErrorText(body)
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("traceview: Jaeger GET %s: %s: %w", path, msg, ErrNotFound)
	}
	return nil, fmt.Errorf("traceview: Jaeger GET %s: %s: %s", path, resp.Status, msg)
}

// jaegerErrorText extracts errors[].msg from Jaeger's error body, or a prefix of the raw body.
func jaegerErrorText(body []byte) string {
	var resp jaegerResponse
	if err := json.Unmarshal(body, &resp); err == nil && len(resp.Errors) > 0 {
		msgs := make([]string, 0, len(resp.Errors))
		for _, e := range resp.Errors {
			msgs = append(msgs, e.Msg)
		}
		return strings.Join(msgs, "; ")
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// Jaeger's JSON model (github.com/jaegertracing/jaeger internal/uimodel): times and durations in
// microseconds; the parent is the first CHILD_OF reference; OTLP links become FOLLOWS_FROM
// references; span kind, status and the error flag are the tags span.kind, otel.status_code,
// otel.status_description and error; span events are logs with an "event" field.
type jaegerResponse struct {
	Data   []jaegerTrace `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
	Warnings  []string                 `json:"warnings"`
}

type jaegerSpan struct {
	TraceID       string         `json:"traceID"`
	SpanID        string         `json:"spanID"`
	OperationName string         `json:"operationName"`
	References    []jaegerRef    `json:"references"`
	StartTime     int64          `json:"startTime"`
	Duration      int64          `json:"duration"`
	Tags          []jaegerKV     `json:"tags"`
	Logs          []jaegerLog    `json:"logs"`
	ProcessID     string         `json:"processID"`
	Process       *jaegerProcess `json:"process"`
	Warnings      []string       `json:"warnings"`
}

type jaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jaegerProcess struct {
	ServiceName string     `json:"serviceName"`
	Tags        []jaegerKV `json:"tags"`
}

type jaegerKV struct {
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

type jaegerLog struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []jaegerKV `json:"fields"`
}

// DecodeJaeger decodes a Jaeger query API response ({"data": [traces…]}), as returned by
// /api/traces/{id} and /api/traces?…, or saved from it with curl.
func DecodeJaeger(r io.Reader) ([]*Trace, error) {
	var resp jaegerResponse
	dec := json.NewDecoder(r)
	if err := dec.Decode(&resp); err != nil {
		return nil, fmt.Errorf("traceview: decoding Jaeger response: %w", err)
	}
	if len(resp.Data) == 0 && len(resp.Errors) > 0 {
		return nil, fmt.Errorf("traceview: Jaeger: %s", resp.Errors[0].Msg)
	}
	out := make([]*Trace, 0, len(resp.Data))
	for _, jt := range resp.Data {
		t, err := convertJaegerTrace(jt)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func convertJaegerTrace(jt jaegerTrace) (*Trace, error) {
	tid, ok := normalizeTraceID(jt.TraceID)
	if !ok {
		return nil, fmt.Errorf("traceview: Jaeger trace id %q is not hex", jt.TraceID)
	}
	t := &Trace{TraceID: tid, Warnings: jt.Warnings}
	for _, js := range jt.Spans {
		s := Span{
			Name:       js.OperationName,
			Start:      time.UnixMicro(js.StartTime).UTC(),
			Duration:   time.Duration(js.Duration) * time.Microsecond,
			Attributes: map[string]string{},
		}
		if s.TraceID, ok = normalizeTraceID(js.TraceID); !ok {
			s.TraceID = tid
		}
		if s.SpanID, ok = normalizeSpanID(js.SpanID); !ok {
			return nil, fmt.Errorf("traceview: trace %s: span id %q is not hex", tid, js.SpanID)
		}
		proc := js.Process
		if proc == nil {
			if p, found := jt.Processes[js.ProcessID]; found {
				proc = &p
			}
		}
		if proc != nil {
			s.Service = proc.ServiceName
		}
		// Jaeger notes clock-skew adjustments and bad parent ids on the span itself: shown with the
		// trace's warnings, or shifted times would look like the truth.
		for _, w := range js.Warnings {
			if strings.HasPrefix(w, "clock skew adjustment disabled") {
				continue // Jaeger v2's note that it changed nothing, on every span
			}
			t.Warnings = append(t.Warnings, fmt.Sprintf("span %s (%s): %s", s.SpanID, js.OperationName, w))
		}
		for _, ref := range js.References {
			rt, _ := normalizeTraceID(ref.TraceID)
			rs, ok := normalizeSpanID(ref.SpanID)
			if !ok {
				continue
			}
			if rt == "" {
				rt = s.TraceID
			}
			if ref.RefType == "CHILD_OF" && rt == s.TraceID && s.ParentSpanID == "" {
				s.ParentSpanID = rs
				continue
			}
			s.Links = append(s.Links, Link{TraceID: rt, SpanID: rs})
		}
		for _, kv := range js.Tags {
			v := jaegerValue(kv.Value)
			switch kv.Key {
			case "span.kind":
				s.Kind = v
			case "error":
				s.Error = s.Error || v == "true"
			case "otel.status_code":
				s.Error = s.Error || v == "ERROR"
			case "otel.status_description":
				s.Status = v
			case "otel.scope.name", "otel.scope.version", "internal.span.format":
			default:
				s.Attributes[kv.Key] = v
			}
		}
		for _, l := range js.Logs {
			e := Event{Time: time.UnixMicro(l.Timestamp).UTC()}
			for _, f := range l.Fields {
				if f.Key == "event" || (e.Name == "" && f.Key == "message") {
					e.Name = jaegerValue(f.Value)
				}
			}
			if e.Name == "" {
				e.Name = "log"
			}
			s.Events = append(s.Events, e)
		}
		t.Spans = append(t.Spans, s)
	}
	return t, nil
}

// jaegerValue renders a tag value: strings unquoted, numbers and booleans as written (Jaeger sends
// int64 beyond 2^53 as strings already), binary as its base64 string.
func jaegerValue(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}
