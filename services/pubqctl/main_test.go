package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/trace/apiv1/tracepb"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
	"github.com/pubq/pubq/pkg/traceview/cloudtracetest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testQueues = `
version: 1
queues:
  default:
    topic: t-default
    subscription: t-default-worker
    dead_letter_topic: t-default-dead
    dead_letter_subscription: t-default-dead-inspect
    kinds: [email.send]
  critical:
    topic: t-critical
    subscription: t-critical-worker
    dead_letter_topic: t-critical-dead
    dead_letter_subscription: t-critical-dead-inspect
    kinds: [payment.capture]
`

// env is one test's environment: a migrated database and a queue config file.
type env struct {
	vars map[string]string
	pool *pgxpool.Pool
}

func setup(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "queues.yaml")
	if err := os.WriteFile(path, []byte(testQueues), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &env{vars: map[string]string{"PUBQ_DATABASE_URL": testenv.Postgres(t), "PUBQ_QUEUES": path, "PUBQ_ACTOR": "alice@example.com"}}
	if code, _, stderr := e.run(t, "migrate"); code != 0 {
		t.Fatalf("migrate: %d %s", code, stderr)
	}
	st, err := store.Open(context.Background(), store.Config{URL: e.vars["PUBQ_DATABASE_URL"], MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	e.pool = st.Pool()
	return e
}

func (e *env) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

func (e *env) state(t *testing.T, key string) string {
	t.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), `SELECT state FROM pubq.jobs WHERE key = $1`, key).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs pubqctl in-process with the env's variables.
func (e *env) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return e.runTTY(t, false, args...)
}

func (e *env) runTTY(t *testing.T, tty bool, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	vars := e.vars
	c := &cli{ctx: context.Background(), getenv: func(k string) string { return vars[k] }, stdout: &stdout, stderr: &stderr, tty: tty}
	code := c.run(args)
	return code, stdout.String(), stderr.String()
}

func (e *env) seedDead(t *testing.T, keys ...string) {
	t.Helper()
	for _, k := range keys {
		e.exec(t, `INSERT INTO pubq.jobs (key, id, queue, kind, state, attempt, fence, payload, finished_at, last_error, dead_reason, trace_parent)
			VALUES ($1, 'id-' || $1, 'default', 'email.send', 'dead', 2, 2, '{"to":"x@example.com"}', now() - interval '5 minutes',
				'smtp 550: no such mailbox', 'permanent', '00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01')`, k)
		e.exec(t, `INSERT INTO pubq.attempts (job_key, attempt, fence, worker, started_at, outcome, error, trace_parent)
			VALUES ($1, 1, 1, 'w1', now() - interval '10 minutes', 'retry', 'smtp 451: try later', '00-7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f90-00f067aa0ba902b7-01'),
			       ($1, 2, 2, 'w1', now() - interval '6 minutes', 'dead', 'smtp 550: no such mailbox', '00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01')`, k)
	}
}

func TestUsageAndConfigurationErrors(t *testing.T) {
	t.Parallel()
	e := &env{vars: map[string]string{}}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage: pubqctl"},
		{[]string{"explode"}, 2, `unknown command "explode"`},
		{[]string{"job"}, 2, "exactly one job key"},
		{[]string{"job", "a", "b"}, 2, "exactly one job key"},
		{[]string{"job", "k", "--nope"}, 2, "flag provided but not defined"},
		{[]string{"job", "k"}, 2, "queue config (--queues or PUBQ_QUEUES)"},
		{[]string{"migrate"}, 2, "PUBQ_DATABASE_URL is required"},
		{[]string{"jobs", "--since", "yesterday"}, 2, "--since"},
		{[]string{"replay"}, 2, "needs job keys, a selection"},
		{[]string{"replay", "k", "--all"}, 2, "not both"},
		{[]string{"replay", "k"}, 2, "PUBQ_ACTOR is required"},
		{[]string{"stats", "--window", "-1h"}, 2, "--window must be positive"},
		{[]string{"dashboard", "--addr", "127.0.0.1:0"}, 2, "PUBQ_DASHBOARD_TOKENS"},
	} {
		code, _, stderr := e.run(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("pubqctl %q: exit %d, stderr %q; want %d containing %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	code, stdout, _ := e.run(t, "help")
	if code != 0 || !strings.Contains(stdout, "Exit codes: 0 ok") {
		t.Errorf("help: %d %q", code, stdout)
	}
}

func TestJobAndJobs(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.seedDead(t, "order-1", "order-2")

	code, stdout, stderr := e.run(t, "job", "order-1")
	if code != 0 {
		t.Fatalf("job: %d %s", code, stderr)
	}
	for _, want := range []string{"dead (permanent)", "smtp 451: try later", "smtp 550: no such mailbox", "0af7651916cd43dd8448eb211c80319c", "pubqctl trace order-1"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("job output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "x@example.com") {
		t.Error("payload printed without --payload")
	}
	code, stdout, _ = e.run(t, "job", "--json", "order-1", "--payload")
	var j struct {
		State    string
		Attempts []struct{ Outcome, Error string }
		Payload  map[string]string
	}
	if err := json.Unmarshal([]byte(stdout), &j); code != 0 || err != nil {
		t.Fatalf("job --json: %d %v\n%s", code, err, stdout)
	}
	if j.State != "dead" || len(j.Attempts) != 2 || j.Attempts[1].Outcome != "dead" || j.Payload["to"] != "x@example.com" {
		t.Errorf("job --json = %+v", j)
	}
	if code, _, stderr = e.run(t, "job", "nope"); code != 3 || !strings.Contains(stderr, "job not found") {
		t.Errorf("missing job: %d %q", code, stderr)
	}

	code, stdout, _ = e.run(t, "jobs", "--state", "dead", "--queue", "default")
	if code != 0 || !strings.Contains(stdout, "order-1") || !strings.Contains(stdout, "order-2") || !strings.Contains(stdout, "permanent: smtp 550") {
		t.Fatalf("jobs: %d\n%s", code, stdout)
	}
	code, stdout, stderr = e.run(t, "jobs", "--state", "dead", "--limit", "1", "--json")
	var page struct {
		Jobs []struct{ Key string }
		Next string
	}
	if err := json.Unmarshal([]byte(stdout), &page); code != 0 || err != nil || len(page.Jobs) != 1 || page.Next == "" {
		t.Fatalf("jobs --limit 1 --json: %d %v %s %s", code, err, stdout, stderr)
	}
	code, stdout, _ = e.run(t, "jobs", "--state", "dead", "--limit", "1", "--cursor", page.Next)
	if code != 0 || strings.Contains(stdout, page.Jobs[0].Key) {
		t.Errorf("second page repeats the first:\n%s", stdout)
	}
	if code, _, stderr = e.run(t, "jobs", "--state", "exploded"); code != 2 || !strings.Contains(stderr, "invalid filter") {
		t.Errorf("bad state: %d %q", code, stderr)
	}
	if code, _, stderr = e.run(t, "jobs", "--queue", "default", "--since", "2h", "--kind", "nope"); code != 0 || !strings.Contains(stderr, "no jobs match") {
		t.Errorf("empty listing: %d %q", code, stderr)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.seedDead(t, "d1")
	e.exec(t, `INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, lease_until, lease_owner) VALUES
		('stuck-1', 'i', 'critical', 'payment.capture', 'running', '{}', now() - interval '5 minutes', 'gone-worker')`)
	e.exec(t, `INSERT INTO pubq.claims (owner, keys) VALUES ('gone-worker', '{stuck-1}')`) // as the claim records a running job
	code, stdout, stderr := e.run(t, "stats")
	if code != 0 || !strings.Contains(stdout, "STUCK") || !strings.Contains(stderr, "1 stuck job(s)") {
		t.Fatalf("stats: %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, _ = e.run(t, "stats", "--json", "--window", "24h")
	var st struct {
		Queues []struct {
			Queue  string
			Stuck  int
			Died   int
			Counts map[string]int
		}
	}
	if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil {
		t.Fatalf("stats --json: %v\n%s", err, stdout)
	}
	got := map[string]string{}
	for _, q := range st.Queues {
		got[q.Queue] = fmt.Sprintf("stuck=%d died=%d dead=%d", q.Stuck, q.Died, q.Counts["dead"])
	}
	if got["critical"] != "stuck=1 died=0 dead=0" || got["default"] != "stuck=0 died=1 dead=1" {
		t.Errorf("stats = %v", got)
	}
}

func TestReplayFromTheCommandLine(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.seedDead(t, "order-1", "order-2", "order-3")

	// Without an actor: refused, nothing changes.
	delete(e.vars, "PUBQ_ACTOR")
	if code, _, stderr := e.run(t, "replay", "order-1"); code != 2 || !strings.Contains(stderr, "PUBQ_ACTOR is required") {
		t.Fatalf("replay without actor: %d %q", code, stderr)
	}
	if e.state(t, "order-1") != "dead" {
		t.Fatal("replayed without an actor")
	}
	e.vars["PUBQ_ACTOR"] = "alice@example.com"

	code, stdout, _ := e.run(t, "replay", "order-1", "--dry-run")
	if code != 0 || !strings.Contains(stdout, "would have replayed 1 of 1") || e.state(t, "order-1") != "dead" {
		t.Fatalf("dry run: %d %q", code, stdout)
	}
	code, stdout, stderr := e.run(t, "replay", "order-1")
	if code != 0 || !strings.Contains(stdout, "replayed 1 of 1") || e.state(t, "order-1") != "pending" {
		t.Fatalf("replay: %d %q %q", code, stdout, stderr)
	}
	code, stdout, _ = e.run(t, "replay", "order-1")
	if code != 0 || !strings.Contains(stdout, "nothing to replay") {
		t.Fatalf("second replay: %d %q", code, stdout)
	}
	if code, _, stderr = e.run(t, "replay", "no-such-job"); code != 3 {
		t.Fatalf("replay of a missing key: %d %q", code, stderr)
	}
	// A dead job that cannot be replayed (its queue is gone from the config) is a failure: exit 1.
	e.exec(t, `INSERT INTO pubq.jobs (key, id, queue, kind, state, payload, finished_at) VALUES ('orphaned', 'o', 'retired', 'old.kind', 'dead', '{}', now())`)
	code, stdout, stderr = e.run(t, "replay", "orphaned")
	if code != 1 || !strings.Contains(stdout, "1 failed") || !strings.Contains(stderr, "could not be replayed") {
		t.Fatalf("replay that cannot be done: %d %q %q", code, stdout, stderr)
	}
	e.exec(t, `DELETE FROM pubq.jobs WHERE key = 'orphaned'`)
	// Keys mixing a dead job and a missing one: the dead one is replayed, and the exit code says 3.
	code, stdout, stderr = e.run(t, "replay", "order-2", "ghost", "--json")
	var res struct {
		Changed int
		Jobs    []struct{ Key, Reason string }
	}
	if err := json.Unmarshal([]byte(stdout), &res); code != 3 || err != nil || res.Changed != 1 || !strings.Contains(stderr, `"ghost"`) {
		t.Fatalf("mixed keys: %d %v %s %s", code, err, stdout, stderr)
	}

	// A bulk replay over a filter on a terminal draws a progress bar on stderr.
	code, stdout, stderr = e.runTTY(t, true, "replay", "--queue", "default", "--since", "1h")
	if code != 0 || !strings.Contains(stdout, "replayed 1 of 1") || !strings.Contains(stderr, "replay") {
		t.Fatalf("bulk replay: %d %q %q", code, stdout, stderr)
	}
	// Not on a terminal, or with --json: no bar.
	e.seedDead(t, "order-4")
	code, _, stderr = e.run(t, "replay", "--all")
	if code != 0 || stderr != "" {
		t.Fatalf("replay --all: %d %q", code, stderr)
	}

	var actions []string
	rows, err := e.pool.Query(context.Background(), `SELECT actor || ' ' || action || ' ' || coalesce(job_key, '*') || ' ' || (detail->>'result') FROM pubq.audit ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		actions = append(actions, s)
	}
	want := []string{
		"alice@example.com replay order-1 replayed", "alice@example.com replay order-1 noop",
		"alice@example.com replay orphaned skipped", "alice@example.com replay ghost noop", "alice@example.com replay order-2 replayed",
		"alice@example.com replay order-3 replayed", "alice@example.com replay * bulk",
		"alice@example.com replay order-4 replayed", "alice@example.com replay * bulk",
	}
	if strings.Join(actions, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit:\n%s\nwant:\n%s", strings.Join(actions, "\n"), strings.Join(want, "\n"))
	}
}

func TestRetryCancelAndPurge(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.exec(t, `INSERT INTO pubq.jobs (key, id, queue, kind, state, attempt, payload, run_at) VALUES
		('later', 'i', 'default', 'email.send', 'scheduled', 1, '{}', now() + interval '1 hour'),
		('later-2', 'i', 'default', 'email.send', 'scheduled', 1, '{}', now() + interval '1 hour');
		INSERT INTO pubq.outbox (job_key, topic, data, attributes, available_at) VALUES
		('later', 't-default', '{}', '{"pubq_key":"later","pubq_attempt":"2"}', now() + interval '1 hour')`)
	if code, stdout, stderr := e.run(t, "retry", "later"); code != 0 || !strings.Contains(stdout, "retried now 1 of 1") {
		t.Fatalf("retry: %d %q %q", code, stdout, stderr)
	}
	var due bool
	if err := e.pool.QueryRow(context.Background(), `SELECT available_at <= now() FROM pubq.outbox WHERE job_key = 'later'`).Scan(&due); err != nil || !due {
		t.Fatalf("outbox row not due after retry: %v %v", due, err)
	}
	if code, stdout, _ := e.run(t, "cancel", "later-2"); code != 0 || !strings.Contains(stdout, "cancelled 1 of 1") || e.state(t, "later-2") != "cancelled" {
		t.Fatalf("cancel: %d %q", code, stdout)
	}
	if code, stdout, _ := e.run(t, "cancel", "later-2"); code != 0 || !strings.Contains(stdout, "nothing to cancel") {
		t.Fatalf("cancel again: %d %q", code, stdout)
	}
	if code, _, _ := e.run(t, "retry", "nope"); code != 3 {
		t.Fatalf("retry of a missing job: %d", code)
	}

	e.seedDead(t, "d1")
	if code, _, stderr := e.run(t, "purge", "--state", "pending", "--queue", "default"); code != 2 || !strings.Contains(stderr, "finished") {
		t.Fatalf("purge pending: %d %q", code, stderr)
	}
	code, stdout, _ := e.run(t, "purge", "--queue", "default", "--dry-run")
	if code != 0 || !strings.Contains(stdout, "would have purged 2 of 2") {
		t.Fatalf("purge dry run: %d %q", code, stdout)
	}
	code, stdout, _ = e.run(t, "purge", "--queue", "default", "--state", "dead")
	if code != 0 || !strings.Contains(stdout, "purged 1 of 1") {
		t.Fatalf("purge: %d %q", code, stdout)
	}
	if code, _, _ := e.run(t, "job", "d1"); code != 3 {
		t.Error("purged job still found")
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	e := &env{vars: map[string]string{"PUBQ_DATABASE_URL": testenv.Postgres(t)}}
	code, stdout, stderr := e.run(t, "migrate")
	if code != 0 || !strings.Contains(stdout, "applied migration 1") {
		t.Fatalf("migrate: %d %q %q", code, stdout, stderr)
	}
	if code, stdout, _ = e.run(t, "migrate", "--json"); code != 0 || strings.TrimSpace(stdout) != `{
  "applied": []
}` {
		t.Fatalf("migrate again: %d %q", code, stdout)
	}
	e.vars["PUBQ_DATABASE_URL"] = "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"
	if code, _, stderr = e.run(t, "migrate"); code != 1 || !strings.Contains(stderr, "pubq: store") {
		t.Fatalf("unreachable database: %d %q", code, stderr)
	}
}

func TestTraceRendersTheJobsTraces(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.seedDead(t, "order-42")
	var searched bool
	jaeger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/services":
			fmt.Fprint(w, `{"data":["pubq-worker","jaeger"]}`)
		case r.URL.Path == "/api/traces" && strings.Contains(r.URL.Query().Get("tags"), "order-42"):
			searched = true
			fmt.Fprint(w, fakeTrace)
		default:
			http.NotFound(w, r)
		}
	}))
	defer jaeger.Close()
	code, stdout, stderr := e.run(t, "trace", "order-42", "--jaeger", jaeger.URL)
	if code != 0 || !searched || !strings.Contains(stdout, "0af7651916cd43dd8448eb211c80319c") || !strings.Contains(stdout, "pubq job email.send") {
		t.Fatalf("trace: %d searched=%v\n%s\n%s", code, searched, stdout, stderr)
	}
	// The search finds nothing (spans without the key): the trace ids the database recorded are fetched.
	e.exec(t, `UPDATE pubq.jobs SET trace_parent = '00-0af7651916cd43dd8448eb211c80319c-c300000000000002-01' WHERE key = 'order-42'`)
	var fetched bool
	byID := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/services":
			fmt.Fprint(w, `{"data":["pubq-worker"]}`)
		case "/api/traces":
			fmt.Fprint(w, `{"data":[]}`)
		case "/api/traces/0af7651916cd43dd8448eb211c80319c":
			fetched = true
			fmt.Fprint(w, fakeTrace)
		default:
			http.NotFound(w, r)
		}
	}))
	defer byID.Close()
	if code, stdout, stderr = e.run(t, "trace", "order-42", "--jaeger", byID.URL); code != 0 || !fetched || !strings.Contains(stdout, "pubq job email.send") {
		t.Fatalf("trace through the database's trace ids: %d fetched=%v\n%s\n%s", code, fetched, stdout, stderr)
	}
	// Jaeger down: exit 1 naming the URL.
	e.vars["PUBQ_JAEGER_URL"] = "http://127.0.0.1:1"
	if code, _, stderr = e.run(t, "trace", "order-42"); code != 1 || !strings.Contains(stderr, "http://127.0.0.1:1") {
		t.Fatalf("trace with Jaeger down: %d %q", code, stderr)
	}
}

// Without a database: a trace id is fetched as is, and a job key the backend finds needs no database;
// one it does not find names the database it would have asked.
func TestTraceWithoutDatabase(t *testing.T) {
	t.Parallel()
	jaeger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/services":
			fmt.Fprint(w, `{"data":["pubq-worker"]}`)
		case r.URL.Path == "/api/traces/0af7651916cd43dd8448eb211c80319c",
			r.URL.Path == "/api/traces" && strings.Contains(r.URL.Query().Get("tags"), "order-42"):
			fmt.Fprint(w, fakeTrace)
		case r.URL.Path == "/api/traces":
			fmt.Fprint(w, `{"data":[]}`)
		default:
			http.Error(w, `{"data":null,"errors":[{"code":404,"msg":"trace not found"}]}`, http.StatusNotFound)
		}
	}))
	defer jaeger.Close()
	e := &env{vars: map[string]string{"PUBQ_JAEGER_URL": jaeger.URL}}
	code, stdout, stderr := e.run(t, "trace", "--id", "0af7651916cd43dd8448eb211c80319c")
	if code != 0 || !strings.Contains(stdout, "pubq job email.send") {
		t.Fatalf("trace --id: %d\n%s\n%s", code, stdout, stderr)
	}
	if code, _, stderr = e.run(t, "trace", "--id", "00000000000000000000000000000bad"); code != 3 || !strings.Contains(stderr, "00000000000000000000000000000bad") {
		t.Fatalf("trace --id of a missing trace: %d %q", code, stderr)
	}
	if code, stdout, stderr = e.run(t, "trace", "order-42"); code != 0 || !strings.Contains(stdout, "0af7651916cd43dd8448eb211c80319c") {
		t.Fatalf("trace by key without a database: %d\n%s\n%s", code, stdout, stderr)
	}
	if code, _, stderr = e.run(t, "trace", "nowhere"); code != 3 || !strings.Contains(stderr, `no span of job "nowhere"`) || !strings.Contains(stderr, "PUBQ_DATABASE_URL") {
		t.Fatalf("trace of a key the backend lacks, without a database: %d %q", code, stderr)
	}
}

// fakeCloudTrace serves one trace of job order-42 in project proj.
type fakeCloudTrace struct {
	tracepb.UnimplementedTraceServiceServer
	mu      sync.Mutex
	filters []string
}

const ctTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"

func ctJobTrace() *tracepb.Trace {
	t0 := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	return &tracepb.Trace{ProjectId: "proj", TraceId: ctTraceID, Spans: []*tracepb.TraceSpan{{
		SpanId: 0xa4, Name: "pubq job email.send", StartTime: timestamppb.New(t0), EndTime: timestamppb.New(t0.Add(30 * time.Millisecond)),
		Labels: map[string]string{"service.name": "pubq-worker", "pubq.job.key": "order-42", "pubq.job.attempt": "1"},
	}}}
}

func (f *fakeCloudTrace) GetTrace(_ context.Context, req *tracepb.GetTraceRequest) (*tracepb.Trace, error) {
	if req.GetProjectId() != "proj" || req.GetTraceId() != ctTraceID {
		return nil, status.Error(codes.NotFound, "trace not found")
	}
	return ctJobTrace(), nil
}

func (f *fakeCloudTrace) ListTraces(_ context.Context, req *tracepb.ListTracesRequest) (*tracepb.ListTracesResponse, error) {
	f.mu.Lock()
	f.filters = append(f.filters, req.GetFilter())
	f.mu.Unlock()
	if req.GetProjectId() != "proj" || !strings.Contains(req.GetFilter(), `"order-42"`) {
		return &tracepb.ListTracesResponse{}, nil
	}
	return &tracepb.ListTracesResponse{Traces: []*tracepb.Trace{ctJobTrace()}}, nil
}

// With PUBQ_CLOUD_TRACE_PROJECT (or --cloud-trace-project), trace reads Cloud Trace, by id and by key.
func TestTraceFromCloudTrace(t *testing.T) {
	t.Parallel()
	fake := &fakeCloudTrace{}
	e := &env{vars: map[string]string{"PUBQ_CLOUD_TRACE_ENDPOINT": cloudtracetest.Serve(t, fake),
		"PUBQ_JAEGER_URL": "http://127.0.0.1:1"}} // never asked
	code, stdout, stderr := e.run(t, "trace", "--cloud-trace-project", "proj", "--id", ctTraceID)
	if code != 0 || !strings.Contains(stdout, "pubq job email.send") || !strings.Contains(stdout, ctTraceID) {
		t.Fatalf("trace --id from Cloud Trace: %d\n%s\n%s", code, stdout, stderr)
	}
	e.vars["PUBQ_CLOUD_TRACE_PROJECT"] = "proj"
	if code, stdout, stderr = e.run(t, "trace", "order-42"); code != 0 || !strings.Contains(stdout, "pubq job email.send") {
		t.Fatalf("trace by key from Cloud Trace: %d\n%s\n%s", code, stdout, stderr)
	}
	// An explicit --jaeger wins over the project in the environment (set for the dashboard).
	if code, _, stderr = e.run(t, "trace", "order-42", "--jaeger", "http://127.0.0.1:1"); code != 1 || !strings.Contains(stderr, "http://127.0.0.1:1") {
		t.Fatalf("--jaeger with PUBQ_CLOUD_TRACE_PROJECT set: %d %q", code, stderr)
	}
	if code, _, _ = e.run(t, "trace", "order-42", "--jaeger", "http://127.0.0.1:1", "--cloud-trace-project", "proj"); code != 2 {
		t.Fatalf("both backends: exit %d, want 2", code)
	}
	fake.mu.Lock()
	filters := strings.Join(fake.filters, " | ")
	fake.mu.Unlock()
	if !strings.Contains(filters, `pubq.job.key:"order-42"`) {
		t.Errorf("Cloud Trace was searched with %q", filters)
	}
	if code, _, stderr = e.run(t, "trace", "--id", "00000000000000000000000000000bad"); code != 3 || !strings.Contains(stderr, "Cloud Trace project proj") {
		t.Fatalf("missing trace in Cloud Trace: %d %q", code, stderr)
	}
}

const fakeTrace = `{"data":[{"traceID":"0af7651916cd43dd8448eb211c80319c","spans":[{"traceID":"0af7651916cd43dd8448eb211c80319c",
"spanID":"c300000000000002","operationName":"pubq job email.send","references":[],"startTime":1795000004302000,"duration":30000,
"tags":[{"key":"pubq.job.key","type":"string","value":"order-42"},{"key":"pubq.job.attempt","type":"int64","value":2},
{"key":"otel.status_code","type":"string","value":"ERROR"}],"logs":[],"processID":"p1","warnings":null}],
"processes":{"p1":{"serviceName":"pubq-worker","tags":[]}},"warnings":null}],"total":0,"limit":0,"offset":0,"errors":null}`

func TestDashboardServesUntilCancelled(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.vars["PUBQ_DASHBOARD_TOKENS"] = "alice:0123456789abcdef0123"
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	vars := e.vars
	c := &cli{ctx: ctx, getenv: func(k string) string { return vars[k] }, stdout: &bytes.Buffer{}, stderr: &stderr}
	done := make(chan int, 1)
	go func() { done <- c.run([]string{"dashboard", "--addr", addr}) }()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err = http.Get("http://" + addr + "/login"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /login: %d", resp.StatusCode)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("dashboard exited %d: %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dashboard did not stop")
	}
}
