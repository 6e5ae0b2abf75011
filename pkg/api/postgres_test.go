package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pubq/pubq/pkg/api"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const token = "pg-test-token-0123456789"

type pgBundle struct {
	st    *store.Store
	pc    *publish.Client
	srv   *httptest.Server
	spans *tracetest.SpanRecorder
}

// setupPG serves the API over a fresh, migrated database, with spans recorded.
func setupPG(t *testing.T) *pgBundle {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t), MaxConns: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	qs, err := queue.Load(filepath.Join("..", "..", "queues.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b := &pgBundle{st: st, spans: tracetest.NewSpanRecorder()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b.spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	pc, err := publish.New(st, &publish.Config{Queues: qs, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	b.pc = pc
	h, err := api.New(pc, &api.Config{Tokens: []string{token}, TracerProvider: tp,
		Ready: func(ctx context.Context) error { return st.Pool().Ping(ctx) }})
	if err != nil {
		t.Fatal(err)
	}
	b.srv = httptest.NewServer(h)
	t.Cleanup(b.srv.Close)
	return b
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) result(t *testing.T) publish.Result {
	t.Helper()
	var r publish.Result
	if err := json.Unmarshal([]byte(a.body), &r); err != nil {
		t.Fatalf("%v: %s", err, a.body)
	}
	return r
}

func (a answer) problem(t *testing.T) api.Problem {
	t.Helper()
	var p api.Problem
	if err := json.Unmarshal([]byte(a.body), &p); err != nil || p.Status != a.status {
		t.Fatalf("not a problem (%v): %d %s", err, a.status, a.body)
	}
	return p
}

func (b *pgBundle) post(t *testing.T, key, body string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+"/v1/jobs", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Error(err) // also called from goroutines
		return answer{}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

// client is a Go client of b's server with its token.
func (b *pgBundle) client(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.NewClient(b.srv.URL, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *pgBundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := b.st.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (b *pgBundle) wantRows(t *testing.T, jobs, outbox int) {
	t.Helper()
	if got := b.count(t, "pubq.jobs"); got != jobs {
		t.Errorf("pubq.jobs has %d rows, want %d", got, jobs)
	}
	if got := b.count(t, "pubq.outbox"); got != outbox {
		t.Errorf("pubq.outbox has %d rows, want %d", got, outbox)
	}
}

func TestSameKeyIsOneJob(t *testing.T) {
	t.Parallel()
	b := setupPG(t)
	first := b.post(t, "order-1/capture", `{"kind":"payment.capture","payload":{"order":1,"cents":1999}}`)
	if first.status != http.StatusAccepted {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	r1 := first.result(t)
	if r1.ID == "" || r1.Key != "order-1/capture" || r1.Kind != "payment.capture" || r1.Queue != "critical" || r1.State != "pending" || r1.Duplicate {
		t.Fatalf("first result = %+v", r1)
	}
	b.wantRows(t, 1, 1)

	// The same job again, re-serialised with other whitespace and the key in the body.
	again := b.post(t, "", `{ "kind": "payment.capture", "key": "order-1/capture", "payload": {"order": 1, "cents": 1999} }`)
	if again.status != http.StatusOK {
		t.Fatalf("again: %d %s", again.status, again.body)
	}
	if r2 := again.result(t); r2.ID != r1.ID || !r2.Duplicate {
		t.Fatalf("again = %+v, want id %s duplicate", r2, r1.ID)
	}
	b.wantRows(t, 1, 1)

	// The same key for another payload or kind is a conflict naming the first job.
	for _, body := range []string{
		`{"kind":"payment.capture","payload":{"order":1,"cents":2999}}`,
		`{"kind":"demo.payment","payload":{"order":1,"cents":1999}}`,
	} {
		c := b.post(t, "order-1/capture", body)
		if c.status != http.StatusConflict {
			t.Fatalf("conflict: %d %s", c.status, c.body)
		}
		p := c.problem(t)
		if p.Type != api.TypeKeyConflict || p.JobID != r1.ID || !strings.Contains(p.Detail, r1.ID) || p.Field != "key" || p.Index != nil {
			t.Fatalf("conflict problem = %+v, want it to name job %s", p, r1.ID)
		}
	}
	b.wantRows(t, 1, 1)
}

func TestConcurrentSameKeyIsOneJob(t *testing.T) {
	t.Parallel()
	b := setupPG(t)
	const n = 20
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = b.post(t, "race-1", `{"kind":"email.send","payload":{"to":"a@example.com"}}`)
		}()
	}
	close(start)
	wg.Wait()
	accepted, ids := 0, map[string]bool{}
	for i, a := range answers {
		switch a.status {
		case http.StatusAccepted:
			accepted++
		case http.StatusOK:
		default:
			t.Fatalf("request %d: %d %s", i, a.status, a.body)
		}
		r := a.result(t)
		ids[r.ID] = true
		if r.Duplicate != (a.status == http.StatusOK) {
			t.Errorf("request %d: status %d with duplicate %v", i, a.status, r.Duplicate)
		}
	}
	if accepted != 1 || len(ids) != 1 {
		t.Fatalf("%d answers were 202 and %d ids came back; want exactly one job", accepted, len(ids))
	}
	b.wantRows(t, 1, 1)
}

func TestBatchIsAtomic(t *testing.T) {
	t.Parallel()
	b := setupPG(t)
	seed := b.post(t, "b-2", `{"kind":"email.send","payload":{"n":2}}`)
	if seed.status != http.StatusAccepted {
		t.Fatalf("seed: %d %s", seed.status, seed.body)
	}
	seedID := seed.result(t).ID
	b.wantRows(t, 1, 1)

	// Jobs 0 and 1 are new and would be inserted first; job 2 reuses b-2 for another payload. Nothing
	// of the batch may remain.
	bad := b.post(t, "", `{"jobs":[
		{"kind":"email.send","key":"b-0","payload":{"n":0}},
		{"kind":"demo.record","key":"b-1","payload":{"n":1}},
		{"kind":"email.send","key":"b-2","payload":{"n":"two"}}]}`)
	if bad.status != http.StatusConflict {
		t.Fatalf("bad batch: %d %s", bad.status, bad.body)
	}
	p := bad.problem(t)
	if p.Index == nil || *p.Index != 2 || p.JobID != seedID {
		t.Fatalf("problem = %+v, want index 2 and job %s", p, seedID)
	}
	b.wantRows(t, 1, 1)

	// An invalid job anywhere refuses the whole batch before the database.
	invalid := b.post(t, "", `{"jobs":[{"kind":"email.send","key":"b-0"},{"kind":"no.such_kind","key":"b-1"}]}`)
	if invalid.status != http.StatusUnprocessableEntity {
		t.Fatalf("unknown kind in batch: %d %s", invalid.status, invalid.body)
	}
	b.wantRows(t, 1, 1)

	good := `{"jobs":[
		{"kind":"email.send","key":"b-0","payload":{"n":0}},
		{"kind":"demo.record","key":"b-1","payload":{"n":1}},
		{"kind":"email.send","key":"b-2","payload":{"n":2}}]}`
	ok := b.post(t, "", good)
	if ok.status != http.StatusAccepted {
		t.Fatalf("good batch: %d %s", ok.status, ok.body)
	}
	var res struct{ Jobs []publish.Result }
	if err := json.Unmarshal([]byte(ok.body), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Jobs) != 3 || res.Jobs[0].Key != "b-0" || res.Jobs[1].Queue != "default" || res.Jobs[0].Duplicate ||
		res.Jobs[1].Duplicate || !res.Jobs[2].Duplicate || res.Jobs[2].ID != seedID {
		t.Fatalf("good batch results = %+v", res.Jobs)
	}
	b.wantRows(t, 3, 3)

	if again := b.post(t, "", good); again.status != http.StatusOK {
		t.Fatalf("repeated batch: %d %s", again.status, again.body)
	}
	b.wantRows(t, 3, 3)
}

func TestDelayedJob(t *testing.T) {
	t.Parallel()
	b := setupPG(t)
	a := b.post(t, "later-1", `{"kind":"email.send","run_in":"1h"}`)
	if a.status != http.StatusAccepted {
		t.Fatalf("%d %s", a.status, a.body)
	}
	r := a.result(t)
	if r.State != "scheduled" || time.Until(r.RunAt) < 59*time.Minute || time.Until(r.RunAt) > 61*time.Minute {
		t.Fatalf("result = %+v, want scheduled in 1h", r)
	}
	var due bool
	if err := b.st.Pool().QueryRow(context.Background(),
		`SELECT available_at > now() + interval '59 minutes' FROM pubq.outbox WHERE job_key = 'later-1'`).Scan(&due); err != nil || !due {
		t.Fatalf("the outbox row is not held back an hour (%v)", err)
	}
}

func TestDatabaseDownIs503(t *testing.T) {
	t.Parallel()
	b := setupPG(t)
	if a := b.post(t, "up-1", `{"kind":"email.send"}`); a.status != http.StatusAccepted {
		t.Fatalf("%d %s", a.status, a.body)
	}
	b.st.Close()
	a := b.post(t, "down-1", `{"kind":"email.send"}`)
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
		t.Fatalf("%d %v %s", a.status, a.header, a.body)
	}
	if p := a.problem(t); p.Type != api.TypeUnavailable || !strings.Contains(p.Detail, "retry with the same idempotency key") {
		t.Fatalf("problem = %+v", p)
	}
	resp, err := http.Get(b.srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the database closed: %d", resp.StatusCode)
	}
}

func TestHTTPSpanIsTheTraceRoot(t *testing.T) {
	t.Parallel()
	b := setupPG(t)
	a := b.post(t, "traced-1", `{"kind":"email.send"}`)
	if a.status != http.StatusAccepted {
		t.Fatalf("%d %s", a.status, a.body)
	}
	var server, enqueue sdktrace.ReadOnlySpan
	for _, s := range b.spans.Ended() {
		switch s.Name() {
		case "POST /v1/jobs":
			server = s
		case "pubq enqueue":
			enqueue = s
		}
	}
	if server == nil || enqueue == nil {
		t.Fatalf("spans: server %v, enqueue %v", server != nil, enqueue != nil)
	}
	if server.Parent().IsValid() {
		t.Errorf("the HTTP span has a parent %v; it should be the root", server.Parent())
	}
	if enqueue.Parent().SpanID() != server.SpanContext().SpanID() || enqueue.SpanContext().TraceID() != server.SpanContext().TraceID() {
		t.Errorf("the enqueue span is not a child of the HTTP span")
	}
	// The outbox row carries the trace on to the publish and the worker.
	var tp string
	if err := b.st.Pool().QueryRow(context.Background(), `SELECT trace_parent FROM pubq.outbox WHERE job_key = 'traced-1'`).Scan(&tp); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tp, server.SpanContext().TraceID().String()) {
		t.Errorf("outbox traceparent %q is not in trace %s", tp, server.SpanContext().TraceID())
	}
}

func TestClientAgainstServer(t *testing.T) {
	t.Parallel()
	b := setupPG(t)
	c := b.client(t)
	ctx := context.Background()
	r := publish.Request{Kind: "email.send", Key: "client-1", Payload: json.RawMessage(`{"to":"a@example.com"}`)}
	first, err := c.Enqueue(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Enqueue(ctx, r)
	if err != nil || again.ID != first.ID || !again.Duplicate || first.Duplicate {
		t.Fatalf("first %+v, again %+v, err %v", first, again, err)
	}
	r.Payload = json.RawMessage(`{"to":"b@example.com"}`)
	_, err = c.Enqueue(ctx, r)
	var p *api.Problem
	if !errors.Is(err, publish.ErrKeyConflict) || !errors.As(err, &p) || p.JobID != first.ID {
		t.Fatalf("conflict: err = %v", err)
	}
	many := make([]publish.Request, 50)
	for i := range many {
		many[i] = publish.Request{Kind: "demo.record", Key: fmt.Sprintf("client-many-%d", i), RunIn: time.Minute}
	}
	res, err := c.EnqueueMany(ctx, many)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range res {
		if x.Key != many[i].Key || x.State != "scheduled" || x.Duplicate {
			t.Fatalf("result %d = %+v", i, x)
		}
	}
	b.wantRows(t, 51, 51)

	bad, err := api.NewClient(b.srv.URL, "wrong-token-0123456789", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Enqueue(ctx, r); !errors.As(err, &p) || p.Status != http.StatusUnauthorized {
		t.Fatalf("wrong token: err = %v", err)
	}
}

// One job sent through the Go client, curl and the in-process client is one job: its payload has one
// form whatever the path (the Go client used to HTML-escape "<" and "&", a false key conflict).
func TestSamePayloadAcrossPaths(t *testing.T) {
	t.Parallel()
	b := setupPG(t)
	c := b.client(t)
	ctx := context.Background()
	first, err := c.Enqueue(ctx, publish.Request{Kind: "email.send", Key: "html-1", Payload: json.RawMessage(`{"html": "<p>Hi & bye</p>"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if a := b.post(t, "html-1", `{"kind":"email.send","payload":{"html":"<p>Hi & bye</p>"}}`); a.status != http.StatusOK || a.result(t).ID != first.ID {
		t.Errorf("the same job over curl: %d %s", a.status, a.body)
	}
	r, err := b.pc.Enqueue(ctx, publish.Request{Kind: "email.send", Key: "html-1", Payload: json.RawMessage("{ \"html\" :\n \"<p>Hi & bye</p>\" }")})
	if err != nil || !r.Duplicate || r.ID != first.ID {
		t.Errorf("the same job in-process, other whitespace: %+v %v", r, err)
	}
	var stored string
	if err := b.st.Pool().QueryRow(ctx, `SELECT convert_from(payload, 'UTF8') FROM pubq.jobs WHERE key = 'html-1'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != `{"html":"<p>Hi & bye</p>"}` {
		t.Errorf("stored payload %s", stored)
	}
	b.wantRows(t, 1, 1)
}
