package traceview

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeJaeger serves the Jaeger query API from a fixture: /api/traces/{id}, /api/traces search by
// service, tags, start/end and limit (newest first, as Jaeger does), and /api/services.
type fakeJaeger struct {
	t      *testing.T
	traces map[string]jaegerTrace
	mu     sync.Mutex
	paths  []string // requests seen, path?query
}

func newFakeJaeger(t *testing.T, fixture string) (*fakeJaeger, *httptest.Server) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", fixture))
	if err != nil {
		t.Fatal(err)
	}
	var resp jaegerResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	f := &fakeJaeger{t: t, traces: map[string]jaegerTrace{}}
	for _, tr := range resp.Data {
		f.traces[tr.TraceID] = tr
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeJaeger) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.paths...)
}

func (f *fakeJaeger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.paths = append(f.paths, r.URL.RequestURI())
	f.mu.Unlock()
	writeData := func(data any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"data": data, "total": 0, "limit": 0, "offset": 0, "errors": nil})
	}
	notFound := func() {
		body, _ := json.Marshal(map[string]any{"data": nil, "errors": []map[string]any{{"code": 404, "msg": "trace not found"}}})
		http.Error(w, string(body), http.StatusNotFound)
	}
	switch {
	case r.URL.Path == "/api/services":
		names := map[string]bool{"jaeger": true}
		for _, tr := range f.traces {
			for _, p := range tr.Processes {
				names[p.ServiceName] = true
			}
		}
		var out []string
		for n := range names {
			out = append(out, n)
		}
		sort.Strings(out)
		writeData(out)
	case strings.HasPrefix(r.URL.Path, "/api/traces/"):
		tr, ok := f.traces[strings.TrimPrefix(r.URL.Path, "/api/traces/")]
		if !ok {
			notFound()
			return
		}
		writeData([]jaegerTrace{tr})
	case r.URL.Path == "/api/traces":
		q := r.URL.Query()
		service := q.Get("service")
		if service == "" {
			http.Error(w, `{"data":null,"errors":[{"code":400,"msg":"parameter 'service' is required"}]}`, http.StatusBadRequest)
			return
		}
		var tags map[string]string
		if err := json.Unmarshal([]byte(q.Get("tags")), &tags); err != nil {
			http.Error(w, "bad tags: "+err.Error(), http.StatusBadRequest)
			return
		}
		start, err1 := strconv.ParseInt(q.Get("start"), 10, 64)
		end, err2 := strconv.ParseInt(q.Get("end"), 10, 64)
		limit, err3 := strconv.Atoi(q.Get("limit"))
		if err1 != nil || err2 != nil || err3 != nil {
			http.Error(w, "bad start/end/limit", http.StatusBadRequest)
			return
		}
		var hits []jaegerTrace
		for _, tr := range f.traces {
			if traceMatches(tr, service, tags, start, end) {
				hits = append(hits, tr)
			}
		}
		sort.Slice(hits, func(i, j int) bool { return firstStart(hits[i]) > firstStart(hits[j]) })
		if len(hits) > limit {
			hits = hits[:limit]
		}
		writeData(hits)
	default:
		http.NotFound(w, r)
	}
}

// traceMatches: one span of service carries every tag, and starts within [start, end].
func traceMatches(tr jaegerTrace, service string, tags map[string]string, start, end int64) bool {
	for _, s := range tr.Spans {
		if tr.Processes[s.ProcessID].ServiceName != service || s.StartTime < start || s.StartTime > end {
			continue
		}
		matched := 0
		for _, kv := range s.Tags {
			if want, ok := tags[kv.Key]; ok && jaegerValue(kv.Value) == want {
				matched++
			}
		}
		if matched == len(tags) {
			return true
		}
	}
	return false
}

func firstStart(tr jaegerTrace) int64 {
	m := tr.Spans[0].StartTime
	for _, s := range tr.Spans {
		m = min(m, s.StartTime)
	}
	return m
}

// fixtureNow is "now" for searches over the fixture, whose traces start at 2026-11-18 11:06:40 UTC.
var fixtureNow = time.UnixMicro(1795000000000000).Add(time.Hour)

func newTestJaeger(srv *httptest.Server) *Jaeger {
	j := NewJaeger(srv.URL+"/", srv.Client())
	j.now = func() time.Time { return fixtureNow }
	return j
}

func TestJaegerTrace(t *testing.T) {
	_, srv := newFakeJaeger(t, "job_retry.json")
	j := newTestJaeger(srv)
	tr, err := j.Trace(context.Background(), "4BF92F3577B34DA6A3CE929D0E0E4736")
	if err != nil {
		t.Fatal(err)
	}
	if tr.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || len(tr.Spans) != 6 {
		t.Fatalf("trace %s with %d spans", tr.TraceID, len(tr.Spans))
	}
	proc, ok := tr.Span("a100000000000004")
	if !ok {
		t.Fatal("process span missing")
	}
	if proc.Service != "pubq-worker" || proc.ParentSpanID != "a100000000000002" || proc.Kind != "consumer" ||
		!proc.Error || proc.Status != "handler: smtp: 421 try again later" ||
		proc.Attributes["pubq.job.attempt"] != "1" || proc.Attributes["pubq.job.key"] != "order-42" ||
		proc.Duration != 131*time.Millisecond || !proc.Start.Equal(time.UnixMicro(1795000000052000)) {
		t.Errorf("process span = %+v", proc)
	}
	for _, k := range []string{"error", "otel.status_code", "otel.status_description", "span.kind"} {
		if _, ok := proc.Attributes[k]; ok {
			t.Errorf("%s kept as an attribute", k)
		}
	}
	send, _ := tr.Span("a100000000000005")
	if len(send.Events) != 2 || send.Events[0].Name != "lease.renewed" || !send.Events[0].Time.Equal(time.UnixMicro(1795000000085000)) {
		t.Errorf("events = %+v", send.Events)
	}
	root, _ := tr.Span("a100000000000001")
	if root.ParentSpanID != "" || root.Error || root.Attributes["http.response.status_code"] != "202" {
		t.Errorf("root = %+v", root)
	}
}

func TestJaegerTraceErrors(t *testing.T) {
	f, srv := newFakeJaeger(t, "job_retry.json")
	j := newTestJaeger(srv)
	ctx := context.Background()

	_, err := j.Trace(ctx, "00000000000000000000000000000bad")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "trace not found") {
		t.Errorf("missing trace: %v", err)
	}
	before := len(f.requests())
	for _, bad := range []string{"", "xyz", "../api/services", strings.Repeat("a", 33)} {
		if _, err := j.Trace(ctx, bad); err == nil || !strings.HasPrefix(err.Error(), "traceview: ") {
			t.Errorf("Trace(%q) = %v, want a traceview error", bad, err)
		}
	}
	if len(f.requests()) != before {
		t.Errorf("invalid ids reached the server: %v", f.requests()[before:])
	}

	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/traces/00000000000000000000000000000001":
			http.Error(w, `{"data":null,"errors":[{"code":500,"msg":"storage unavailable"}]}`, http.StatusInternalServerError)
		case "/api/traces/00000000000000000000000000000002":
			_, _ = w.Write([]byte(`{"data": [`))
		default:
			http.Error(w, "gateway says no", http.StatusBadGateway)
		}
	}))
	defer broken.Close()
	jb := NewJaeger(broken.URL, nil)
	if _, err := jb.Trace(ctx, "1"); err == nil || !strings.Contains(err.Error(), "storage unavailable") || errors.Is(err, ErrNotFound) {
		t.Errorf("500: %v", err)
	}
	if _, err := jb.Trace(ctx, "2"); err == nil || !strings.Contains(err.Error(), "decoding") {
		t.Errorf("truncated JSON: %v", err)
	}
	if _, err := jb.Trace(ctx, "3"); err == nil || !strings.Contains(err.Error(), "gateway says no") {
		t.Errorf("502 plain text: %v", err)
	}
	if _, err := jb.FindJob(ctx, JobQuery{Key: "k"}); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("services failing: %v", err)
	}
	down := NewJaeger("http://127.0.0.1:1", nil)
	if _, err := down.Trace(ctx, "1"); err == nil || !strings.Contains(err.Error(), "querying Jaeger") {
		t.Errorf("unreachable Jaeger: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := j.Trace(cctx, "1"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

func TestJaegerFindJob(t *testing.T) {
	f, srv := newFakeJaeger(t, "job_retry.json")
	j := newTestJaeger(srv)
	ctx := context.Background()

	got, err := j.FindJob(ctx, JobQuery{Key: "order-42", Service: "pubq-worker"})
	if err != nil {
		t.Fatal(err)
	}
	if ids := traceIDs(got); strings.Join(ids, ",") != "4bf92f3577b34da6a3ce929d0e0e4736,a3c1e5f7092b4d6e8f1a2b3c4d5e6f70,0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("FindJob = %v, want all three in start order", ids)
	}
	reqs := f.requests()
	last := reqs[len(reqs)-1]
	for _, want := range []string{"service=pubq-worker", "tags=%7B%22pubq.job.key%22%3A%22order-42%22%7D", "limit=20",
		"start=" + strconv.FormatInt(fixtureNow.Add(-48*time.Hour).UnixMicro(), 10), "end=" + strconv.FormatInt(fixtureNow.UnixMicro(), 10)} {
		if !strings.Contains(last, want) {
			t.Errorf("search request %s lacks %s", last, want)
		}
	}

	// Only the producer's trace has a pubq-producer span with the key.
	got, err = j.FindJob(ctx, JobQuery{Key: "order-42", Service: "pubq-producer"})
	if err != nil || len(got) != 1 || got[0].TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("producer search = %v, %v", traceIDs(got), err)
	}
	// No service: every service is searched (Jaeger's own skipped) and results merged.
	got, err = j.FindJob(ctx, JobQuery{Key: "order-42"})
	if err != nil || len(got) != 3 {
		t.Errorf("all-services search = %v, %v", traceIDs(got), err)
	}
	for _, r := range f.requests() {
		if strings.Contains(r, "service=jaeger") {
			t.Errorf("searched Jaeger's own service: %s", r)
		}
	}
	// A lookback that ends before the traces finds nothing; unknown keys find nothing.
	got, err = j.FindJob(ctx, JobQuery{Key: "order-42", Service: "pubq-worker", Lookback: 30 * time.Minute})
	if err != nil || len(got) != 0 {
		t.Errorf("short lookback = %v, %v", traceIDs(got), err)
	}
	got, err = j.FindJob(ctx, JobQuery{Key: "nope", Service: "pubq-worker"})
	if err != nil || len(got) != 0 {
		t.Errorf("unknown key = %v, %v", traceIDs(got), err)
	}
	if _, err := j.FindJob(ctx, JobQuery{}); err == nil || !strings.Contains(err.Error(), "Key") {
		t.Errorf("empty key: %v", err)
	}
}

func TestFetchJobFollowsLinks(t *testing.T) {
	f, srv := newFakeJaeger(t, "job_retry.json")
	j := newTestJaeger(srv)
	ctx := context.Background()

	// The search returns only the newest attempt; its links lead to the earlier ones, and the link to
	// a trace Jaeger no longer has is skipped.
	got, err := FetchJob(ctx, j, JobQuery{Key: "order-42", Service: "pubq-worker", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ids := traceIDs(got); strings.Join(ids, ",") != "4bf92f3577b34da6a3ce929d0e0e4736,a3c1e5f7092b4d6e8f1a2b3c4d5e6f70,0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("FetchJob = %v", ids)
	}
	var fetched []string
	for _, r := range f.requests() {
		if strings.HasPrefix(r, "/api/traces/") {
			fetched = append(fetched, strings.TrimPrefix(r, "/api/traces/"))
		}
	}
	if strings.Join(fetched, ",") != "a3c1e5f7092b4d6e8f1a2b3c4d5e6f70,7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f90,4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("link fetches = %v", fetched)
	}

	got, err = FetchJob(ctx, j, JobQuery{Key: "order-42", Service: "pubq-worker", Limit: 1, MaxTraces: 2})
	if err != nil || len(got) != 2 {
		t.Errorf("MaxTraces 2: %v, %v", traceIDs(got), err)
	}

	_, err = FetchJob(ctx, j, JobQuery{Key: "missing", Service: "pubq-worker"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("no traces: %v", err)
	}

	got, err = Fetch(ctx, j, "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736")
	if err != nil || strings.Join(traceIDs(got), ",") != "4bf92f3577b34da6a3ce929d0e0e4736,0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("Fetch = %v, %v", traceIDs(got), err)
	}
	if _, err := Fetch(ctx, j, "0af7651916cd43dd8448eb211c80319c", "00000000000000000000000000000bad"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Fetch with a missing id: %v", err)
	}
}

// errSource fails link fetches with something other than not-found.
type errSource struct{ Source }

func (e errSource) Trace(context.Context, string) (*Trace, error) {
	return nil, errors.New("backend down")
}

func TestFetchJobLinkError(t *testing.T) {
	_, srv := newFakeJaeger(t, "job_retry.json")
	_, err := FetchJob(context.Background(), errSource{newTestJaeger(srv)}, JobQuery{Key: "order-42", Service: "pubq-worker", Limit: 1})
	if err == nil || !strings.Contains(err.Error(), "backend down") || !strings.Contains(err.Error(), "following a link") {
		t.Errorf("link fetch failure: %v", err)
	}
}

func traceIDs(ts []*Trace) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.TraceID)
	}
	return out
}

// TestDecodeCapturedJaeger decodes a search response captured from a real Jaeger v1.76.0 (built and
// run by infra/jaeger.sh) after sending it spans through telemetry's exporters: a producer→worker
// trace and a retry trace linked to it. It pins the real format the hand-written fixture imitates.
func TestDecodeCapturedJaeger(t *testing.T) {
	traces := loadFixture(t, "jaeger_v1.76_search.json")
	if len(traces) != 2 {
		t.Fatalf("got %d traces", len(traces))
	}
	sortTraces(traces)
	first, retry := traces[0], traces[1]
	if len(first.Spans) != 5 || len(retry.Spans) != 2 {
		t.Fatalf("spans: %d and %d", len(first.Spans), len(retry.Spans))
	}
	byName := map[string]Span{}
	for _, s := range first.Spans {
		byName[s.Name] = s
	}
	root, create, proc, send := byName["POST /jobs"], byName["pubq-critical create"], byName["pubq-critical-worker process"], byName["email.send"]
	if root.ParentSpanID != "" || create.ParentSpanID != root.SpanID || proc.ParentSpanID != create.SpanID || send.ParentSpanID != proc.SpanID {
		t.Errorf("parents: %+v", first.Spans)
	}
	if root.Service != "pubq-producer" || proc.Service != "pubq-worker" || root.Kind != "server" || create.Kind != "producer" || proc.Kind != "consumer" {
		t.Errorf("services/kinds: %+v %+v", root, proc)
	}
	if !send.Error || send.Status != "smtp: 421 try again later" || len(send.Events) != 1 || send.Events[0].Name != "lease.renewed" {
		t.Errorf("email.send = %+v", send)
	}
	if create.Error || create.Attributes["pubq.job.key"] != "order-42" || proc.Attributes["pubq.job.attempt"] != "1" {
		t.Errorf("attributes: %+v %+v", create.Attributes, proc.Attributes)
	}
	var rproc Span
	for _, s := range retry.Spans {
		if s.Name == "pubq-critical-worker process" {
			rproc = s
		}
	}
	if rproc.ParentSpanID != "" || len(rproc.Links) != 1 || rproc.Links[0] != (Link{TraceID: first.TraceID, SpanID: proc.SpanID}) {
		t.Errorf("retry root links = %+v, want a link to %s/%s", rproc.Links, first.TraceID, proc.SpanID)
	}
	var buf strings.Builder
	if err := Render(&buf, traces, RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "link: \"pubq-critical-worker process\" "+rproc.SpanID+" -> trace 1/2 span "+proc.SpanID) {
		t.Errorf("retry link not rendered:\n%s", buf.String())
	}
}

func TestDecodeJaegerVariants(t *testing.T) {
	// A 64-bit trace id (Jaeger prints 16 digits), a span carrying its process inline, a link without
	// a trace id (same trace), a large int64 sent as a string, binary as base64, an unnamed log.
	const body = `{"data":[{"traceID":"00f067aa0ba902b7","spans":[
	 {"traceID":"00f067aa0ba902b7","spanID":"1","operationName":"a","references":[],"startTime":1000,"duration":5,
	  "tags":[{"key":"big","type":"int64","value":"9007199254740993"},{"key":"bin","type":"binary","value":"AQI="},
	          {"key":"f","type":"float64","value":1.5},{"key":"b","type":"bool","value":false}],
	  "logs":[{"timestamp":1001,"fields":[{"key":"message","type":"string","value":"hello"}]},{"timestamp":1002,"fields":[]}],
	  "process":{"serviceName":"inline","tags":[]}},
	 {"traceID":"00f067aa0ba902b7","spanID":"2","operationName":"b","references":[{"refType":"FOLLOWS_FROM","spanID":"1"}],
	  "startTime":1002,"duration":1,"tags":[],"logs":[],"processID":"p9",
	  "warnings":["This span's timestamps were adjusted by 1.5ms","clock skew adjustment disabled; not applying calculated delta of -5.899µs"]}],
	 "processes":{}}],"errors":null}`
	traces, err := DecodeJaeger(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	tr := traces[0]
	if tr.TraceID != "000000000000000000f067aa0ba902b7" {
		t.Errorf("trace id = %s", tr.TraceID)
	}
	a, b := tr.Spans[0], tr.Spans[1]
	if a.SpanID != "0000000000000001" || a.Service != "inline" || a.Attributes["big"] != "9007199254740993" ||
		a.Attributes["bin"] != "AQI=" || a.Attributes["f"] != "1.5" || a.Attributes["b"] != "false" {
		t.Errorf("span a = %+v", a)
	}
	if len(a.Events) != 2 || a.Events[0].Name != "hello" || a.Events[1].Name != "log" {
		t.Errorf("events = %+v", a.Events)
	}
	if b.Service != "" || b.ParentSpanID != "" || len(b.Links) != 1 || b.Links[0].TraceID != tr.TraceID {
		t.Errorf("span b = %+v", b)
	}
	// A span's own warning (Jaeger's clock-skew note) reaches the trace's warnings, naming the span by
	// its normalised id; Jaeger v2's note that it adjusted nothing does not.
	if len(tr.Warnings) != 1 || !strings.Contains(tr.Warnings[0], "span 0000000000000002 (b)") || !strings.Contains(tr.Warnings[0], "adjusted by 1.5ms") {
		t.Errorf("warnings = %q", tr.Warnings)
	}

	for name, bad := range map[string]string{
		"not json":     `<html>`,
		"bad trace id": `{"data":[{"traceID":"zz","spans":[]}]}`,
		"bad span id":  `{"data":[{"traceID":"01","spans":[{"spanID":"nothex"}]}]}`,
		"errors only":  `{"data":null,"errors":[{"code":400,"msg":"parameter 'service' is required"}]}`,
	} {
		if _, err := DecodeJaeger(strings.NewReader(bad)); err == nil || !strings.HasPrefix(err.Error(), "traceview: ") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// memSource serves traces from memory and records which ids were fetched.
type memSource struct {
	traces  map[string]*Trace
	fetched []string
}

func (m *memSource) Trace(_ context.Context, id string) (*Trace, error) {
	m.fetched = append(m.fetched, id)
	if t, ok := m.traces[id]; ok {
		return t, nil
	}
	return nil, ErrNotFound
}

func (m *memSource) FindJob(_ context.Context, q JobQuery) ([]*Trace, error) {
	var out []*Trace
	for _, t := range m.traces {
		for _, s := range t.Spans {
			if s.Attributes[attrJobKey] == q.Key {
				out = append(out, t)
				break
			}
		}
	}
	return out, nil
}

// A job's span links to the round trip that claimed it, which links to every job it carried (as the
// Pub/Sub client's ack and publish batches do): FetchJob
// brings the round trip's trace (its SQL) but not the other jobs', and Render lists the round trip's
// links to traces not shown as a count.
func TestFetchJobStopsAtRoundTrips(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	id := func(c byte) string { return strings.Repeat(string(c), 32) }
	sid := func(c byte) string { return strings.Repeat(string(c), 16) }
	job := func(c byte, key string) *Trace {
		return &Trace{TraceID: id(c), Spans: []Span{{TraceID: id(c), SpanID: sid(c), Name: "pubq job demo", Service: "pubq-worker",
			Start: t0, Duration: time.Millisecond, Attributes: map[string]string{attrJobKey: key},
			Links: []Link{{TraceID: id('f'), SpanID: sid('f')}}}}}
	}
	var links []Link
	for _, c := range []byte("abcde") {
		links = append(links, Link{TraceID: id(c), SpanID: sid(c)})
	}
	rt := &Trace{TraceID: id('f'), Spans: []Span{
		{TraceID: id('f'), SpanID: sid('f'), Name: "pubq batch", Service: "pubq-worker", Start: t0, Duration: 2 * time.Millisecond,
			Attributes: map[string]string{"pubq.batch.claims": "5"}, Links: links},
		{TraceID: id('f'), SpanID: "1111111111111111", ParentSpanID: sid('f'), Name: "WITH", Service: "pubq-worker", Start: t0, Duration: time.Millisecond},
	}}
	src := &memSource{traces: map[string]*Trace{id('f'): rt}}
	for _, c := range []byte("abcde") {
		src.traces[id(c)] = job(c, "job-"+string(c))
	}
	got, err := FetchJob(context.Background(), src, JobQuery{Key: "job-a"})
	if err != nil {
		t.Fatal(err)
	}
	if ids := strings.Join(traceIDs(got), ","); ids != id('a')+","+id('f') {
		t.Errorf("FetchJob = %s, want the job's trace and its round trip's only", ids)
	}
	if f := strings.Join(src.fetched, ","); f != id('f') {
		t.Errorf("fetched %s, want the round trip only", f)
	}
	var out bytes.Buffer
	if err := Render(&out, got, RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !strings.Contains(text, `"pubq batch" `+sid('f')+" -> 4 more spans not shown") ||
		!strings.Contains(text, "span "+sid('a')+` "pubq job demo"`) || strings.Contains(text, sid('b')) {
		t.Errorf("render:\n%s", text)
	}
}

// One request enqueued two jobs: their trace holds both. Focus keeps the asked job's spans, their
// ancestors and descendants, and counts the rest.
func TestFocus(t *testing.T) {
	pad := func(id string) string {
		if id == "" {
			return ""
		}
		return strings.Repeat("0", 14) + id
	}
	sp := func(id, parent, name, key string) Span {
		s := Span{TraceID: "t", SpanID: pad(id), ParentSpanID: pad(parent), Name: name, Attributes: map[string]string{}}
		if key != "" {
			s.Attributes[attrJobKey] = key
		}
		return s
	}
	tr := &Trace{TraceID: "t", Spans: []Span{
		sp("01", "", "POST /v1/jobs", ""),
		sp("02", "01", "pubq enqueue", ""),
		sp("03", "02", "create a", ""), sp("04", "03", "process a", ""), sp("05", "04", "pubq job", "a"), sp("06", "05", "INSERT a", ""),
		sp("07", "02", "create b", ""), sp("08", "07", "process b", ""), sp("09", "08", "pubq job", "b"), sp("10", "09", "INSERT b", ""),
		sp("11", "05", "create a retry", ""), sp("12", "11", "pubq job", "a"),
		sp("13", "13", "self-parented", "a"), // malformed data must not loop
	}, Warnings: []string{"span " + pad("10") + " (INSERT b): invalid parent span IDs", "span " + pad("06") + " (INSERT a): invalid parent span IDs", "trace-wide note"}}
	f := Focus(tr, "a")
	var names []string
	for _, s := range f.Spans {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "POST /v1/jobs,pubq enqueue,create a,process a,pubq job,INSERT a,create a retry,pubq job,self-parented" || f.Omitted != 4 {
		t.Errorf("Focus = %s, omitted %d", got, f.Omitted)
	}
	if got := strings.Join(f.Warnings, " | "); got != "span "+pad("06")+" (INSERT a): invalid parent span IDs | trace-wide note" {
		t.Errorf("Focus kept warnings %q", got)
	}
	if g := Focus(tr, "nobody"); g != tr {
		t.Errorf("a trace without the key changed")
	}
	var out bytes.Buffer
	if err := Render(&out, []*Trace{f}, RenderOptions{}); err != nil || !strings.Contains(out.String(), "9 spans (4 others not about this job)") {
		t.Errorf("render: %v\n%s", err, out.String())
	}
}
