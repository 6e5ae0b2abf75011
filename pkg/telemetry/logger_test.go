package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

var (
	testTraceID = trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c}
	testSpanID  = trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31}
)

func spanCtx(sampled bool) context.Context {
	var flags trace.TraceFlags
	if sampled {
		flags = trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: testTraceID, SpanID: testSpanID, TraceFlags: flags})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

// lines decodes each JSON line the logger wrote.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func one(t *testing.T, buf *bytes.Buffer) map[string]any {
	t.Helper()
	ls := lines(t, buf)
	if len(ls) != 1 {
		t.Fatalf("got %d log lines, want 1:\n%s", len(ls), buf.String())
	}
	return ls[0]
}

func TestLoggerTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, LoggerOptions{})
	log.InfoContext(spanCtx(true), "hello", "n", 1)
	rec := one(t, &buf)
	if rec["trace_id"] != "0af7651916cd43dd8448eb211c80319c" || rec["span_id"] != "b7ad6b7169203331" {
		t.Errorf("ids = %v / %v", rec["trace_id"], rec["span_id"])
	}
	if rec["level"] != "INFO" || rec["msg"] != "hello" || rec["n"] != 1.0 {
		t.Errorf("record = %v", rec)
	}
	if _, ok := rec[gcpTraceKey]; ok {
		t.Errorf("GCP fields without GCPProject: %v", rec)
	}

	buf.Reset()
	log.Info("no context") // Info uses context.Background: no ids
	rec = one(t, &buf)
	if _, ok := rec["trace_id"]; ok {
		t.Errorf("trace_id without a span: %v", rec)
	}
}

func TestLoggerGCPFormat(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, LoggerOptions{GCPProject: "my-proj", Level: slog.LevelDebug})
	log.WarnContext(spanCtx(true), "slow")
	rec := one(t, &buf)
	want := map[string]any{
		"severity":    "WARNING",
		"message":     "slow",
		gcpTraceKey:   "projects/my-proj/traces/0af7651916cd43dd8448eb211c80319c",
		gcpSpanKey:    "b7ad6b7169203331",
		gcpSampledKey: true,
		"trace_id":    "0af7651916cd43dd8448eb211c80319c",
		"span_id":     "b7ad6b7169203331",
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
	for _, k := range []string{"level", "msg"} {
		if _, ok := rec[k]; ok {
			t.Errorf("GCP record still has %q: %v", k, rec)
		}
	}

	buf.Reset()
	log.ErrorContext(spanCtx(false), "unsampled")
	rec = one(t, &buf)
	if rec[gcpSampledKey] != false || rec["severity"] != "ERROR" {
		t.Errorf("unsampled record = %v", rec)
	}

	for level, want := range map[slog.Level]string{
		slog.LevelDebug: "DEBUG", slog.LevelInfo: "INFO", slog.LevelWarn: "WARNING",
		slog.LevelError: "ERROR", slog.LevelError + 4: "CRITICAL",
	} {
		buf.Reset()
		log.Log(context.Background(), level, "x")
		if got := one(t, &buf)["severity"]; got != want {
			t.Errorf("severity for %v = %v, want %s", level, got, want)
		}
	}
}

func TestLoggerLevel(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, LoggerOptions{Level: slog.LevelWarn})
	log.Info("dropped")
	log.Warn("kept")
	if rec := one(t, &buf); rec["msg"] != "kept" {
		t.Errorf("record = %v", rec)
	}
}

func TestLoggerJobAttrs(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, LoggerOptions{})
	ctx := WithJob(spanCtx(true), Job{Queue: "critical", Kind: "email.send", Key: "k-1", ID: "j-9", Attempt: 1})
	ctx = WithJob(ctx, Job{Queue: "critical", Kind: "email.send", Key: "k-1", ID: "j-9", Attempt: 2}) // next attempt
	ctx = WithLogAttrs(ctx, slog.String("worker", "w1"))
	log.InfoContext(ctx, "running")
	raw := buf.String()
	rec := one(t, &buf)
	want := map[string]any{"job_queue": "critical", "job_kind": "email.send", "job_key": "k-1", "job_id": "j-9",
		"job_attempt": 2.0, "worker": "w1", "trace_id": "0af7651916cd43dd8448eb211c80319c"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
	if n := strings.Count(raw, `"job_attempt"`); n != 1 {
		t.Errorf("job_attempt appears %d times: %s", n, raw)
	}
	if got := len(LogAttrsFromContext(ctx)); got != 6 {
		t.Errorf("context carries %d attrs, want 6", got)
	}
	if WithLogAttrs(ctx) != ctx {
		t.Errorf("WithLogAttrs without attrs made a new context")
	}
}

func TestLoggerContextAttrsStayTopLevelInGroups(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, LoggerOptions{}).With("svc", "worker").WithGroup("req").With("path", "/x").WithGroup("inner")
	ctx := WithJob(spanCtx(true), Job{Key: "k-1"})
	log.InfoContext(ctx, "grouped", "a", 1)
	rec := one(t, &buf)
	if rec["trace_id"] != "0af7651916cd43dd8448eb211c80319c" || rec["job_key"] != "k-1" || rec["svc"] != "worker" {
		t.Errorf("top level = %v", rec)
	}
	req, _ := rec["req"].(map[string]any)
	inner, _ := req["inner"].(map[string]any)
	if req["path"] != "/x" || inner["a"] != 1.0 {
		t.Errorf("groups = %v", rec["req"])
	}
	if _, ok := req["trace_id"]; ok {
		t.Errorf("trace_id went into the group: %v", req)
	}

	// Without a context the grouped logger still works.
	buf.Reset()
	log.Info("plain", "b", 2)
	rec = one(t, &buf)
	if rec["req"].(map[string]any)["inner"].(map[string]any)["b"] != 2.0 {
		t.Errorf("plain grouped record = %v", rec)
	}
}

func TestLoggerDropsSensitiveAttrs(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, LoggerOptions{GCPProject: "p"}).With("token", "tok-with", slog.Group("creds", "password", "pw-with"))
	ctx := WithLogAttrs(context.Background(), slog.String("Authorization", "Bearer ctx-secret"))
	log.InfoContext(ctx, "sensitive",
		"payload", `{"card":"4111"}`,
		"access_token", "at-123",
		"http.request.header.authorization", "Basic abc",
		slog.Group("payload", "card", "4111-nested"),
		slog.Group("req", "api_key", "ak-1", "id", "r-1"),
		slog.Any("user", userValuer{}),
		"kept", "visible")
	log.WithGroup("payload").Info("group-named-payload", "card", "4111-group")
	out := buf.String()
	for _, leak := range []string{"tok-with", "pw-with", "ctx-secret", "4111", "at-123", "Basic abc", "ak-1", "valuer-token"} {
		if strings.Contains(out, leak) {
			t.Errorf("log leaks %q:\n%s", leak, out)
		}
	}
	recs := lines(t, &buf)
	if len(recs) != 2 {
		t.Fatalf("got %d lines", len(recs))
	}
	if recs[0]["kept"] != "visible" || recs[0]["req"].(map[string]any)["id"] != "r-1" ||
		recs[0]["user"].(map[string]any)["name"] != "ann" {
		t.Errorf("non-sensitive attrs lost: %v", recs[0])
	}
}

// userValuer logs as a group holding a token, which must be dropped after resolution.
type userValuer struct{}

func (userValuer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", "ann"), slog.String("token", "valuer-token"))
}

func TestSensitive(t *testing.T) {
	for key, want := range map[string]bool{
		"payload": true, "Payload": true, "token": true, "TOKEN": true, "authorization": true,
		"id_token": true, "refresh-token": true, "client_secret": true, "db_password": true,
		"http.request.header.authorization": true, "cookie": true,
		"kind": false, "key": false, "tokens_used": false, "payload_bytes": false, "job_key": false, "": false,
	} {
		if got := Sensitive(key); got != want {
			t.Errorf("Sensitive(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestJobAttributes(t *testing.T) {
	got := map[string]string{}
	for _, kv := range JobAttributes("critical", "email.send", "k-1", "", 3) {
		got[string(kv.Key)] = kv.Value.String()
	}
	want := map[string]string{"messaging.system": "gcp_pubsub", "pubq.job.queue": "critical",
		"pubq.job.kind": "email.send", "pubq.job.key": "k-1", "pubq.job.attempt": "3"}
	if len(got) != len(want) {
		t.Errorf("JobAttributes = %v, want %v (empty id left out)", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if n := len(JobAttributes("q", "k", "key", "id", 0)); n != 5 {
		t.Errorf("attempt 0 should be left out: %d attrs", n)
	}

	j := Job{Queue: "q", Kind: "k", Key: "key", Attempt: 2}
	if j.String() != "q/k/key#2" || len(j.SpanAttributes()) != 5 || len(j.LogAttrs()) != 4 {
		t.Errorf("Job helpers: %s %v %v", j, j.SpanAttributes(), j.LogAttrs())
	}
}
