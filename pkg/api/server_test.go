package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

const testToken = "tok-0123456789abcdef"

// fakeEnqueuer validates and routes with a real publish.Client (Prepare needs no database) and answers
// EnqueueMany with many, so every database outcome can be staged.
type fakeEnqueuer struct {
	*publish.Client
	many func(ctx context.Context, rs []publish.Request) ([]publish.Result, error)

	mu    sync.Mutex
	calls [][]publish.Request
}

func (f *fakeEnqueuer) EnqueueMany(ctx context.Context, rs []publish.Request) ([]publish.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, rs)
	f.mu.Unlock()
	if f.many != nil {
		return f.many(ctx, rs)
	}
	out := make([]publish.Result, len(rs))
	for i, r := range rs {
		q, err := f.Prepare(r)
		if err != nil {
			return nil, err
		}
		out[i] = publish.Result{ID: "id-" + r.Key, Key: r.Key, Kind: r.Kind, Queue: q.Name, State: "pending"}
	}
	return out, nil
}

func (f *fakeEnqueuer) Calls() [][]publish.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]publish.Request(nil), f.calls...)
}

func testQueues(t testing.TB) *queue.Config {
	t.Helper()
	q, err := queue.Load(filepath.Join("..", "..", "queues.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return q
}

type bundle struct {
	h    http.Handler
	enq  *fakeEnqueuer
	logs *pubqtest.SyncBuffer
}

func setup(t *testing.T, cfg *Config) *bundle {
	t.Helper()
	// A zero Store is never reached: the fake answers EnqueueMany and Prepare needs no database.
	pc, err := publish.New(&store.Store{}, &publish.Config{Queues: testQueues(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{enq: &fakeEnqueuer{Client: pc}, logs: &pubqtest.SyncBuffer{}}
	c := Config{Tokens: []string{testToken}}
	if cfg != nil {
		c = *cfg
	}
	c.Logger = telemetry.NewLogger(b.logs, telemetry.LoggerOptions{Level: slog.LevelDebug}) // as the producer's
	b.h, err = newHandler(b.enq, &c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type req struct {
	method, path, body string
	header             map[string]string
	noAuth             bool
}

func (b *bundle) do(t *testing.T, r req) *httptest.ResponseRecorder {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = "/v1/jobs"
	}
	hr := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	if !r.noAuth {
		hr.Header.Set("Authorization", "Bearer "+testToken)
	}
	if r.method == http.MethodPost {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
			continue
		}
		hr.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, hr)
	return rec
}

// wantProblem checks an RFC 9457 answer: status, type, title, the status member, field, index and
// that detail contains want.
func wantProblem(t *testing.T, rec *httptest.ResponseRecorder, status int, typ, field string, index int, want string) Problem {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != ContentTypeProblem {
		t.Fatalf("Content-Type = %q, want %q", ct, ContentTypeProblem)
	}
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
	}
	for _, k := range []string{"type", "title", "status", "detail"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("problem has no %q: %s", k, rec.Body)
		}
	}
	var p Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Status != status || p.Type != typ || p.Title != titles[typ] {
		t.Errorf("problem = %+v, want status %d type %s title %q", p, status, typ, titles[typ])
	}
	if p.Field != field {
		t.Errorf("field = %q, want %q (detail %q)", p.Field, field, p.Detail)
	}
	switch {
	case index < 0 && p.Index != nil:
		t.Errorf("index = %d, want none", *p.Index)
	case index >= 0 && (p.Index == nil || *p.Index != index):
		t.Errorf("index = %v, want %d", p.Index, index)
	}
	if !strings.Contains(p.Detail, want) {
		t.Errorf("detail = %q, want it to contain %q", p.Detail, want)
	}
	return p
}

const noIndex = -1

func TestConfigValidation(t *testing.T) {
	pc, err := publish.New(&store.Store{}, &publish.Config{Queues: testQueues(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  *Config
		want string
	}{
		{"nil config", nil, "Config.Tokens is empty"},
		{"no tokens", &Config{}, "Config.Tokens is empty"},
		{"both", &Config{Tokens: []string{testToken}, Insecure: true}, "not both"},
		{"empty token", &Config{Tokens: []string{testToken, ""}}, "Config.Tokens[1] is empty"},
		{"token with space", &Config{Tokens: []string{"0123456789abcdef 0123"}}, "Config.Tokens[0] contains whitespace"},
		{"negative body", &Config{Tokens: []string{testToken}, MaxBodyBytes: -1}, "MaxBodyBytes"},
		{"negative timeout", &Config{Tokens: []string{testToken}, Timeout: -time.Second}, "Timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(pc, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "pubq: ") {
				t.Fatalf("err = %v, want pubq: … %q", err, tc.want)
			}
		})
	}
	if _, err := New(nil, &Config{Insecure: true}); err == nil {
		t.Fatal("New(nil client) succeeded")
	}
	if _, err := New(pc, &Config{Insecure: true}); err != nil {
		t.Fatalf("Insecure alone: %v", err)
	}
}

func TestAuth(t *testing.T) {
	b := setup(t, &Config{Tokens: []string{"other-token-0123456789", testToken}})
	body := `{"kind":"email.send","key":"k1","payload":{}}`
	for _, tc := range []struct {
		name, auth, challenge, detail string
	}{
		{"missing", "", `Bearer realm="pubq"`, "no bearer token"},
		{"wrong token", "Bearer tok-0123456789abcdeX", `Bearer realm="pubq", error="invalid_token"`, "not valid"},
		{"prefix of a token", "Bearer tok-0123456789", `Bearer realm="pubq", error="invalid_token"`, "not valid"},
		{"token plus suffix", "Bearer " + testToken + "x", `Bearer realm="pubq", error="invalid_token"`, "not valid"},
		{"basic scheme", "Basic " + testToken, `Bearer realm="pubq", error="invalid_request"`, "not a bearer token"},
		{"empty bearer", "Bearer ", `Bearer realm="pubq", error="invalid_request"`, "not a bearer token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := b.do(t, req{body: body, noAuth: true, header: map[string]string{"Authorization": tc.auth}})
			wantProblem(t, rec, http.StatusUnauthorized, TypeUnauthorized, "", noIndex, tc.detail)
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
		})
	}
	if n := len(b.enq.Calls()); n != 0 {
		t.Fatalf("%d enqueues without a valid token", n)
	}
	// Both configured tokens work, and the scheme is case-insensitive.
	for i, auth := range []string{"Bearer " + testToken, "bearer other-token-0123456789"} {
		rec := b.do(t, req{body: fmt.Sprintf(`{"kind":"email.send","key":"k%d"}`, i), noAuth: true, header: map[string]string{"Authorization": auth}})
		if rec.Code != http.StatusAccepted {
			t.Fatalf("%q: status %d: %s", auth, rec.Code, rec.Body)
		}
	}
	if strings.Contains(b.logs.String(), testToken) || strings.Contains(b.logs.String(), "other-token") {
		t.Fatalf("a token reached the log: %s", b.logs)
	}
}

func TestInsecureNeedsNoToken(t *testing.T) {
	b := setup(t, &Config{Insecure: true})
	rec := b.do(t, req{body: `{"kind":"email.send","key":"k1"}`, noAuth: true})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	b := setup(t, nil)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodGet, "/v1/jobs", "POST"},
		{http.MethodPut, "/v1/jobs", "POST"},
		{http.MethodDelete, "/v1/jobs", "POST"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
		{http.MethodPost, "/readyz", "GET, HEAD"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			rec := b.do(t, req{method: tc.method, path: tc.path})
			wantProblem(t, rec, http.StatusMethodNotAllowed, TypeMethod, "", noIndex, tc.method+" is not allowed on "+tc.path)
			if got := rec.Header().Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	b := setup(t, nil)
	for _, path := range []string{"/", "/v1/jobs/123", "/v2/jobs"} {
		rec := b.do(t, req{method: http.MethodGet, path: path})
		wantProblem(t, rec, http.StatusNotFound, TypeNotFound, "", noIndex, "no route GET "+path)
	}
}

func TestUnsupportedMediaType(t *testing.T) {
	b := setup(t, nil)
	body := `{"kind":"email.send","key":"k1"}`
	for _, tc := range []struct{ ct, detail string }{
		{"", "no Content-Type"},
		{"text/plain", `"text/plain" is not application/json`},
		{"application/x-www-form-urlencoded", "is not application/json"},
		{"application/json; charset=latin1", `charset "latin1" is not utf-8`},
		{"application/json;;", "is not application/json"},
	} {
		t.Run(tc.ct, func(t *testing.T) {
			hr := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(body))
			hr.Header.Set("Authorization", "Bearer "+testToken)
			if tc.ct != "" {
				hr.Header.Set("Content-Type", tc.ct)
			}
			rec := httptest.NewRecorder()
			b.h.ServeHTTP(rec, hr)
			wantProblem(t, rec, http.StatusUnsupportedMediaType, TypeUnsupportedMedia, "", noIndex, tc.detail)
			if got := rec.Header().Get("Accept-Post"); got != "application/json" {
				t.Errorf("Accept-Post = %q", got)
			}
		})
	}
	for _, ct := range []string{"application/json; charset=utf-8", "Application/JSON"} {
		rec := b.do(t, req{body: body, header: map[string]string{"Content-Type": ct}})
		if rec.Code != http.StatusAccepted {
			t.Fatalf("%q: status %d: %s", ct, rec.Code, rec.Body)
		}
	}
}

func TestTooLarge(t *testing.T) {
	b := setup(t, &Config{Tokens: []string{testToken}, MaxBodyBytes: 4 << 20})
	big := `{"kind":"email.send","key":"k1","payload":{"x":"` + strings.Repeat("a", 5<<20) + `"}}`

	t.Run("content-length over the limit", func(t *testing.T) {
		rec := b.do(t, req{body: big})
		wantProblem(t, rec, http.StatusRequestEntityTooLarge, TypeTooLarge, "", noIndex, "exceeds 4194304 bytes")
	})
	t.Run("streamed body over the limit", func(t *testing.T) {
		hr := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(big))
		hr.ContentLength = -1 // chunked: only reading finds out
		hr.Header.Set("Authorization", "Bearer "+testToken)
		hr.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		b.h.ServeHTTP(rec, hr)
		wantProblem(t, rec, http.StatusRequestEntityTooLarge, TypeTooLarge, "", noIndex, "exceeds 4194304 bytes")
	})
	t.Run("payload over job.MaxPayloadBytes", func(t *testing.T) {
		body := `{"kind":"email.send","key":"k1","payload":{"x":"` + strings.Repeat("a", job.MaxPayloadBytes) + `"}}`
		rec := b.do(t, req{body: body})
		wantProblem(t, rec, http.StatusRequestEntityTooLarge, TypeTooLarge, "payload", noIndex, fmt.Sprintf("at most %d", job.MaxPayloadBytes))
	})
	t.Run("payload over the limit in a batch", func(t *testing.T) {
		body := `{"jobs":[{"kind":"email.send","key":"k0"},{"kind":"email.send","key":"k1","payload":"` + strings.Repeat("a", job.MaxPayloadBytes) + `"}]}`
		rec := b.do(t, req{body: body})
		wantProblem(t, rec, http.StatusRequestEntityTooLarge, TypeTooLarge, "payload", 1, "at most")
	})
	t.Run("too many jobs", func(t *testing.T) {
		jobs := make([]string, publish.MaxBatch+1)
		for i := range jobs {
			jobs[i] = fmt.Sprintf(`{"kind":"email.send","key":"k%d"}`, i)
		}
		rec := b.do(t, req{body: `{"jobs":[` + strings.Join(jobs, ",") + `]}`})
		p := wantProblem(t, rec, http.StatusRequestEntityTooLarge, TypeTooLarge, "jobs", noIndex, fmt.Sprintf("%d jobs in one batch; at most %d", publish.MaxBatch+1, publish.MaxBatch))
		if !errors.Is(&p, publish.ErrTooMany) {
			t.Error("the problem is not publish.ErrTooMany")
		}
	})
	if n := len(b.enq.Calls()); n != 0 {
		t.Fatalf("%d enqueues of refused requests", n)
	}
	// A full batch of small jobs fits the default limit.
	d := setup(t, nil)
	jobs := make([]string, publish.MaxBatch)
	for i := range jobs {
		jobs[i] = fmt.Sprintf(`{"kind":"email.send","key":"k%d","payload":{"to":"user%d@example.com","body":"%s"}}`, i, i, strings.Repeat("x", 8<<10))
	}
	if rec := d.do(t, req{body: `{"jobs":[` + strings.Join(jobs, ",") + `]}`}); rec.Code != http.StatusAccepted {
		t.Fatalf("full batch: status %d: %.300s", rec.Code, rec.Body)
	}
}

func TestBadRequest(t *testing.T) {
	long := strings.Repeat("k", job.MaxKeyBytes+1)
	for _, tc := range []struct {
		name, body string
		header     map[string]string
		field      string
		index      int
		typ        string
		detail     string
	}{
		{"empty body", "", nil, "", noIndex, TypeMalformed, "the body is empty"},
		{"not JSON", "kind=email.send", nil, "", noIndex, TypeMalformed, "must be a JSON object"},
		{"array", `[{"kind":"email.send"}]`, nil, "", noIndex, TypeMalformed, "must be a JSON object"},
		{"truncated", `{"kind":"email.send","key":"k1"`, nil, "", noIndex, TypeMalformed, "invalid JSON"},
		{"trailing garbage", `{"kind":"email.send","key":"k1"} x`, nil, "", noIndex, TypeMalformed, "invalid JSON"},
		{"two objects", `{"kind":"email.send","key":"k1"}{"kind":"email.send","key":"k2"}`, nil, "", noIndex, TypeMalformed, "invalid JSON"},
		{"unknown field", `{"kind":"email.send","key":"k1","runat":"2026-01-01T00:00:00Z"}`, nil, "runat", noIndex, TypeInvalid, `unknown field "runat"`},
		{"kind not a string", `{"kind":7,"key":"k1"}`, nil, "kind", noIndex, TypeInvalid, `"kind" must be a JSON string, not number`},
		{"missing kind", `{"key":"k1"}`, nil, "kind", noIndex, TypeInvalid, `"kind" is required`},
		{"kind syntax", `{"kind":"Email Send","key":"k1"}`, nil, "kind", noIndex, TypeInvalid, "is not a kind like email.send"},
		{"missing key", `{"kind":"email.send"}`, nil, "key", noIndex, TypeInvalid, "send the Idempotency-Key header or the \"key\" field"},
		{"key too long", `{"kind":"email.send","key":"` + long + `"}`, nil, "key", noIndex, TypeInvalid, "257 bytes exceeds 256"},
		{"key with control char", `{"kind":"email.send","key":"a\u0007b"}`, nil, "key", noIndex, TypeInvalid, "non-printable"},
		{"header and field differ", `{"kind":"email.send","key":"k1"}`, map[string]string{"Idempotency-Key": "k2"}, "key", noIndex, TypeInvalid, "differ"},
		{"run_at not RFC 3339", `{"kind":"email.send","key":"k1","run_at":"tomorrow"}`, nil, "run_at", noIndex, TypeInvalid, `"tomorrow" is not an RFC 3339 time`},
		{"run_at a number", `{"kind":"email.send","key":"k1","run_at":1767225600}`, nil, "run_at", noIndex, TypeInvalid, `must be a JSON string`},
		{"run_in not a duration", `{"kind":"email.send","key":"k1","run_in":"30"}`, nil, "run_in", noIndex, TypeInvalid, `"30" is not a positive duration`},
		{"run_in negative", `{"kind":"email.send","key":"k1","run_in":"-5s"}`, nil, "run_in", noIndex, TypeInvalid, "not a positive duration"},
		{"run_at and run_in", `{"kind":"email.send","key":"k1","run_at":"2030-01-01T00:00:00Z","run_in":"5s"}`, nil, "run_in", noIndex, TypeInvalid, "not both"},
		{"batch: jobs not an array", `{"jobs":{"kind":"email.send"}}`, nil, "jobs", noIndex, TypeInvalid, "must be an array"},
		{"batch: null jobs", `{"jobs":null}`, nil, "jobs", noIndex, TypeInvalid, "must be an array"},
		{"batch: empty", `{"jobs":[]}`, nil, "jobs", noIndex, TypeInvalid, "is empty"},
		{"batch: a job not an object", `{"jobs":[{"kind":"email.send","key":"k0"},"x"]}`, nil, "jobs", 1, TypeInvalid, "must be a JSON object"},
		{"batch: missing key", `{"jobs":[{"kind":"email.send","key":"k0"},{"kind":"email.send"}]}`, nil, "key", 1, TypeInvalid, "each job in a batch needs its own idempotency key"},
		{"batch: same key twice", `{"jobs":[{"kind":"email.send","key":"k0"},{"kind":"email.send","key":"k1"},{"kind":"email.send","key":"k0"}]}`, nil, "key", 2, TypeInvalid, `key "k0" is also the key of job 0`},
		{"batch: Idempotency-Key header", `{"jobs":[{"kind":"email.send","key":"k0"}]}`, map[string]string{"Idempotency-Key": "k0"}, "key", noIndex, TypeInvalid, "give each job its own"},
		{"batch: mixed with a job", `{"kind":"email.send","jobs":[{"kind":"email.send","key":"k0"}]}`, nil, "kind", noIndex, TypeInvalid, `a batch body has only "jobs"`},
		{"batch: invalid run_in", `{"jobs":[{"kind":"email.send","key":"k0"},{"kind":"email.send","key":"k1","run_in":"soon"}]}`, nil, "run_in", 1, TypeInvalid, `"soon" is not a positive duration`},
		{"batch: unknown field", `{"jobs":[{"kind":"email.send","key":"k0","attrs":{}}]}`, nil, "attrs", 0, TypeInvalid, `unknown field "attrs"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, nil)
			rec := b.do(t, req{body: tc.body, header: tc.header})
			p := wantProblem(t, rec, http.StatusBadRequest, tc.typ, tc.field, tc.index, tc.detail)
			if !errors.Is(&p, publish.ErrInvalid) {
				t.Error("the problem is not publish.ErrInvalid")
			}
			if logs := b.logs.String(); !strings.Contains(logs, `"msg":"request refused"`) || !strings.Contains(logs, `"status":400`) ||
				(tc.field != "" && !strings.Contains(logs, `"field":"`+tc.field+`"`)) {
				t.Errorf("the refusal was not logged at debug level: %s", logs)
			}
			if n := len(b.enq.Calls()); n != 0 {
				t.Fatalf("a refused request reached the database (%d calls)", n)
			}
		})
	}
}

func TestUnknownKind(t *testing.T) {
	b := setup(t, nil)
	rec := b.do(t, req{body: `{"kind":"nobody.handles","key":"k1"}`})
	p := wantProblem(t, rec, http.StatusUnprocessableEntity, TypeUnknownKind, "kind", noIndex, `no queue accepts kind "nobody.handles"`)
	if !errors.Is(&p, publish.ErrUnknownKind) {
		t.Error("the problem is not publish.ErrUnknownKind")
	}
	rec = b.do(t, req{body: `{"jobs":[{"kind":"email.send","key":"k0"},{"kind":"email.send","key":"k1"},{"kind":"nobody.handles","key":"k2"}]}`})
	wantProblem(t, rec, http.StatusUnprocessableEntity, TypeUnknownKind, "kind", 2, `no queue accepts kind "nobody.handles"`)
	if n := len(b.enq.Calls()); n != 0 {
		t.Fatalf("an unroutable job reached the database (%d calls)", n)
	}
}

func TestKeyConflict(t *testing.T) {
	b := setup(t, nil)
	b.enq.many = func(_ context.Context, rs []publish.Request) ([]publish.Result, error) {
		return nil, fmt.Errorf("wrapped: %w", &store.KeyConflictError{Key: rs[len(rs)-1].Key, ExistingID: "0190-existing"})
	}
	rec := b.do(t, req{body: `{"kind":"email.send","payload":{"a":2}}`, header: map[string]string{"Idempotency-Key": "k1"}})
	p := wantProblem(t, rec, http.StatusConflict, TypeKeyConflict, "key", noIndex, `key "k1" is already used by job 0190-existing`)
	if p.JobID != "0190-existing" {
		t.Errorf("job_id = %q", p.JobID)
	}
	if !errors.Is(&p, publish.ErrKeyConflict) {
		t.Error("the problem is not publish.ErrKeyConflict")
	}
	rec = b.do(t, req{body: `{"jobs":[{"kind":"email.send","key":"k0"},{"kind":"email.send","key":"k1"}]}`})
	wantProblem(t, rec, http.StatusConflict, TypeKeyConflict, "key", 1, "already used by job 0190-existing")
}

func TestDatabaseFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		typ    string
		detail string
	}{
		{"pool closed", errors.New("closed pool"), http.StatusServiceUnavailable, TypeUnavailable, "retry with the same idempotency key"},
		{"connect failed", &pgconn.ConnectError{}, http.StatusServiceUnavailable, TypeUnavailable, "unavailable"},
		{"deadline", fmt.Errorf("pubq: enqueueing: %w", context.DeadlineExceeded), http.StatusServiceUnavailable, TypeUnavailable, "unavailable"},
		{"admin shutdown", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, http.StatusServiceUnavailable, TypeUnavailable, "unavailable"},
		{"too many connections", &pgconn.PgError{Code: "53300"}, http.StatusServiceUnavailable, TypeUnavailable, "unavailable"},
		{"serialization", &pgconn.PgError{Code: "40001"}, http.StatusServiceUnavailable, TypeUnavailable, "unavailable"},
		{"missing table", fmt.Errorf("pubq: enqueueing: %w", &pgconn.PgError{Code: "42P01", Message: `relation "pubq.jobs" does not exist`}), http.StatusInternalServerError, TypeInternal, "could not be enqueued"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, nil)
			b.enq.many = func(context.Context, []publish.Request) ([]publish.Result, error) { return nil, tc.err }
			rec := b.do(t, req{body: `{"kind":"email.send","key":"k1","payload":{"secret_plan":"world domination"}}`})
			wantProblem(t, rec, tc.status, tc.typ, "", noIndex, tc.detail)
			if tc.status == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") != "1" {
				t.Errorf("Retry-After = %q", rec.Header().Get("Retry-After"))
			}
			if strings.Contains(rec.Body.String(), "pubq.jobs") || strings.Contains(rec.Body.String(), "administrator") {
				t.Errorf("the answer leaks the database error: %s", rec.Body)
			}
			logs := b.logs.String()
			if !strings.Contains(logs, "enqueue failed") {
				t.Errorf("the failure was not logged: %s", logs)
			}
			if strings.Contains(logs, "world domination") {
				t.Errorf("the payload reached the log: %s", logs)
			}
		})
	}
}

// logLine returns the last JSON log line whose msg is msg, decoded, after checking no key appears in
// it twice.
func logLine(t *testing.T, logs, msg string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if m["msg"] != msg {
			continue
		}
		for k := range m {
			if n := strings.Count(l, `"`+k+`":`); n != 1 {
				t.Errorf("%s appears %d times in %s", k, n, l)
			}
		}
		found = m
	}
	if found == nil {
		t.Fatalf("no %q line in:\n%s", msg, logs)
	}
	return found
}

// batchBody is a batch of n email.send jobs keyed b0, b1, …
func batchBody(n int) string {
	jobs := make([]string, n)
	for i := range jobs {
		jobs[i] = fmt.Sprintf(`{"kind":"email.send","key":"b%d"}`, i)
	}
	return `{"jobs":[` + strings.Join(jobs, ",") + `]}`
}

// A failed enqueue names the job of a single-job request, and the count and first keys of a batch; so
// does an enqueued batch.
func TestEnqueueLogsNameTheJobs(t *testing.T) {
	first10 := []any{"b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"}
	for _, tc := range []struct {
		name string
		err  error
		msg  string
	}{
		{"unavailable", &pgconn.PgError{Code: "53300"}, "enqueue failed: database unavailable"},
		{"internal", &pgconn.PgError{Code: "42P01"}, "enqueue failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, nil)
			b.enq.many = func(context.Context, []publish.Request) ([]publish.Result, error) { return nil, tc.err }
			b.do(t, req{body: `{"kind":"email.send","key":"k1","payload":{"a":1}}`})
			line := logLine(t, b.logs.String(), tc.msg)
			if line["job_key"] != "k1" || line["job_kind"] != "email.send" || line["jobs"] != 1.0 {
				t.Errorf("single-job failure line %v, want job_key k1, job_kind email.send, jobs 1", line)
			}
			b.do(t, req{body: batchBody(12)})
			line = logLine(t, b.logs.String(), tc.msg)
			if fmt.Sprint(line["job_keys"]) != fmt.Sprint(first10) || line["jobs"] != 12.0 || line["job_key"] != nil {
				t.Errorf("batch failure line %v, want jobs 12 and the first 10 keys", line)
			}
		})
	}
	b := setup(t, nil)
	if rec := b.do(t, req{body: batchBody(12)}); rec.Code != http.StatusAccepted {
		t.Fatalf("batch: %d %s", rec.Code, rec.Body)
	}
	line := logLine(t, b.logs.String(), "batch enqueued")
	if fmt.Sprint(line["job_keys"]) != fmt.Sprint(first10) || line["jobs"] != 12.0 || line["new"] != 12.0 {
		t.Errorf("batch line %v, want jobs 12, new 12 and the first 10 keys", line)
	}
	if rec := b.do(t, req{body: batchBody(3)}); rec.Code != http.StatusAccepted {
		t.Fatalf("batch: %d %s", rec.Code, rec.Body)
	}
	if line := logLine(t, b.logs.String(), "batch enqueued"); fmt.Sprint(line["job_keys"]) != "[b0 b1 b2]" {
		t.Errorf("batch line %v, want all 3 keys", line)
	}
}

func TestEnqueueTimeout(t *testing.T) {
	b := setup(t, &Config{Tokens: []string{testToken}, Timeout: 50 * time.Millisecond})
	b.enq.many = func(ctx context.Context, _ []publish.Request) ([]publish.Result, error) {
		<-ctx.Done() // a database that does not answer
		return nil, fmt.Errorf("pubq: enqueueing: %w", ctx.Err())
	}
	start := time.Now()
	rec := b.do(t, req{body: `{"kind":"email.send","key":"k1"}`})
	wantProblem(t, rec, http.StatusServiceUnavailable, TypeUnavailable, "", noIndex, "unavailable")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v despite a 50ms timeout", d)
	}
}

func TestAccepted(t *testing.T) {
	b := setup(t, nil)
	runAt := "2031-02-03T04:05:06.5Z"
	rec := b.do(t, req{
		body:   `{"kind":"payment.capture", "payload": { "order" : 81723,  "cents": 1999 }, "run_at": "` + runAt + `"}`,
		header: map[string]string{"Idempotency-Key": "order-81723/capture"},
	})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"id": "id-order-81723/capture", "key": "order-81723/capture", "kind": "payment.capture",
		"queue": "critical", "state": "pending", "duplicate": false}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (body %s)", k, got[k], v, rec.Body)
		}
	}
	calls := b.enq.Calls()
	if len(calls) != 1 || len(calls[0]) != 1 {
		t.Fatalf("calls = %v", calls)
	}
	r := calls[0][0]
	if string(r.Payload) != `{"order":81723,"cents":1999}` {
		t.Errorf("payload = %s, want it compacted", r.Payload)
	}
	if want, _ := time.Parse(time.RFC3339, runAt); !r.RunAt.Equal(want) || r.RunIn != 0 {
		t.Errorf("run_at = %v, run_in = %v", r.RunAt, r.RunIn)
	}

	// The key field alone, the same key in both places, run_in, and a null payload.
	for i, tc := range []struct {
		body    string
		header  map[string]string
		payload string
		runIn   time.Duration
	}{
		{`{"kind":"email.send","key":"k1","payload":null,"run_in":"1m30s"}`, nil, `{}`, 90 * time.Second},
		{`{"kind":"email.send","key":"k2","payload":[1, 2]}`, map[string]string{"Idempotency-Key": "k2"}, `[1,2]`, 0},
		{`{"kind":"email.send"}`, map[string]string{"Idempotency-Key": "k3"}, `{}`, 0},
	} {
		rec := b.do(t, req{body: tc.body, header: tc.header})
		if rec.Code != http.StatusAccepted {
			t.Fatalf("case %d: status %d: %s", i, rec.Code, rec.Body)
		}
		calls := b.enq.Calls()
		r := calls[len(calls)-1][0]
		if string(r.Payload) != tc.payload || r.RunIn != tc.runIn || r.Key != fmt.Sprintf("k%d", i+1) {
			t.Errorf("case %d: request = %+v", i, r)
		}
	}
	logs := b.logs.String()
	if !strings.Contains(logs, `"job_key":"order-81723/capture"`) || !strings.Contains(logs, `"job_queue":"critical"`) {
		t.Errorf("the enqueue was not logged with the job: %s", logs)
	}
	if strings.Contains(logs, "81723,") || strings.Contains(logs, "cents") {
		t.Errorf("the payload reached the log: %s", logs)
	}
}

func TestDuplicateAnswers200(t *testing.T) {
	b := setup(t, nil)
	b.enq.many = func(_ context.Context, rs []publish.Request) ([]publish.Result, error) {
		out := make([]publish.Result, len(rs))
		for i, r := range rs {
			out[i] = publish.Result{ID: "first", Key: r.Key, Kind: r.Kind, Queue: "bulk", State: "succeeded", Duplicate: i > 0 || len(rs) == 1}
		}
		return out, nil
	}
	rec := b.do(t, req{body: `{"kind":"email.send","key":"k1"}`})
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"duplicate":true`) {
		t.Fatalf("duplicate: status %d: %s", rec.Code, rec.Body)
	}
	// A batch with one new job is 202 and lists every job in order.
	rec = b.do(t, req{body: `{"jobs":[{"kind":"email.send","key":"a"},{"kind":"email.send","key":"b"}]}`})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("batch: status %d: %s", rec.Code, rec.Body)
	}
	var res struct{ Jobs []publish.Result }
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Jobs) != 2 || res.Jobs[0].Key != "a" || res.Jobs[1].Key != "b" || res.Jobs[0].Duplicate || !res.Jobs[1].Duplicate {
		t.Fatalf("batch results = %+v", res.Jobs)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	var down error
	var mu sync.Mutex
	b := setup(t, &Config{Tokens: []string{testToken}, Ready: func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("no deadline")
		}
		mu.Lock()
		defer mu.Unlock()
		return down
	}})
	for _, path := range []string{"/healthz", "/readyz"} {
		rec := b.do(t, req{method: http.MethodGet, path: path, noAuth: true})
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"status"`) {
			t.Fatalf("%s: status %d: %s", path, rec.Code, rec.Body)
		}
		if rec := b.do(t, req{method: http.MethodHead, path: path, noAuth: true}); rec.Code != http.StatusOK {
			t.Fatalf("HEAD %s: status %d", path, rec.Code)
		}
	}
	mu.Lock()
	down = errors.New("dial tcp 10.1.2.3:5432: connect: connection refused")
	mu.Unlock()
	rec := b.do(t, req{method: http.MethodGet, path: "/readyz", noAuth: true})
	wantProblem(t, rec, http.StatusServiceUnavailable, TypeUnavailable, "", noIndex, "the database is unreachable")
	if strings.Contains(rec.Body.String(), "10.1.2.3") {
		t.Errorf("readyz leaks the error: %s", rec.Body)
	}
	if !strings.Contains(b.logs.String(), "10.1.2.3") {
		t.Errorf("the readiness error was not logged: %s", b.logs)
	}
	// Liveness does not depend on the database.
	if rec := b.do(t, req{method: http.MethodGet, path: "/healthz", noAuth: true}); rec.Code != http.StatusOK {
		t.Fatalf("healthz while the database is down: %d", rec.Code)
	}
}

func TestProblemError(t *testing.T) {
	i := 3
	p := &Problem{Type: TypeInvalid, Title: titles[TypeInvalid], Status: 400, Detail: `"kind" is required`, Field: "kind", Index: &i}
	if got, want := p.Error(), `pubq: api: 400 Invalid field (job 3): "kind" is required`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if errors.Is(p, publish.ErrKeyConflict) || errors.Is(p, publish.ErrUnknownKind) || !errors.Is(p, publish.ErrInvalid) {
		t.Fatal("Is maps the wrong sentinel")
	}
}

// The HTTP metrics name the server by Config.ServerName, not by the Host header a client sends:
// otherwise every made-up host would be a new series, before any authentication.
func TestHTTPMetricsIgnoreTheHostHeader(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	b := setup(t, &Config{Tokens: []string{testToken}, ServerName: "pubq-producer:9090",
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	for i := range 20 {
		r := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(`{}`))
		r.Host = fmt.Sprintf("attacker-%d.example:%d", i, 1000+i)
		b.h.ServeHTTP(httptest.NewRecorder(), r) // no token: 401
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sets := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if h, ok := md.Data.(metricdata.Histogram[float64]); ok && md.Name == "http.server.request.duration" {
				for _, dp := range h.DataPoints {
					addr, _ := dp.Attributes.Value("server.address")
					port, _ := dp.Attributes.Value("server.port")
					sets[addr.String()+":"+port.String()] = true
				}
			}
		}
	}
	if len(sets) != 1 || !sets["pubq-producer:9090"] {
		t.Errorf("server address/port label sets: %v, want only pubq-producer:9090", sets)
	}
	if _, err := newHandler(b.enq, &Config{Tokens: []string{testToken}, ServerName: "no-port"}); err == nil {
		t.Error("a ServerName without a port was accepted")
	}
}
