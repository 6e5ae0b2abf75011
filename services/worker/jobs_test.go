package main

// Tests of the platform's jobs as the worker binary runs them. TestMain (testenv.Main) is the
// package's, in the fault tests' file.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/edtech/schema"
	"github.com/pubq/pubq/pkg/edtech/seed"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
	"github.com/pubq/pubq/pkg/worker"
)

func shippedQueues(t *testing.T) (string, *queue.Config) {
	t.Helper()
	path := filepath.Join(testenv.RepoRoot(t), "queues.yaml")
	cfg, err := queue.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

// The shipped queues.yaml routes every platform kind where the design puts it, and the nightly
// schedule's payload is a scan request the handler accepts.
func TestShippedQueuesRouteThePlatformJobs(t *testing.T) {
	_, cfg := shippedQueues(t)
	for kind, want := range map[string]string{jobs.KindMerge: "default", jobs.KindScan: "default", jobs.KindScanRange: "bulk"} {
		q, err := cfg.Route(kind)
		if err != nil || q.Name != want {
			t.Errorf("%s routes to %v (%v), want %s", kind, q, err, want)
		}
	}
	found := false
	for _, s := range cfg.Schedules {
		if s.Kind != jobs.KindScan {
			continue
		}
		found = true
		var req scan.ScanRequest
		dec := json.NewDecoder(bytes.NewReader(s.Payload))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			t.Errorf("schedule %s: payload %s: %v", s.Name, s.Payload, err)
		}
		if req.Ranges < 1 || req.Ranges > jobs.MaxRanges || (scan.Rule{Mode: req.Mode}).Validate() != nil {
			t.Errorf("schedule %s: %+v is not a scan the handler runs", s.Name, req)
		}
	}
	if !found {
		t.Error("no schedule fires students.scan")
	}
}

func TestRegisterPlatformJobs(t *testing.T) {
	t.Parallel()
	_, cfg := shippedQueues(t)
	st, err := store.Open(context.Background(), store.Config{URL: testenv.Postgres(t), MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "PUBQ_EDTECH_VERIFY" {
				return v
			}
			return ""
		}
	}
	for _, v := range []string{"", "pair", "full", "off"} {
		mux := worker.NewMux()
		if err := registerPlatformJobs(mux, st, platform{queues: cfg, getenv: env(v)}); err != nil {
			t.Fatalf("PUBQ_EDTECH_VERIFY=%q: %v", v, err)
		}
		if got := strings.Join(mux.Kinds(), " "); got != "account.merge students.scan students.scan_range" {
			t.Errorf("PUBQ_EDTECH_VERIFY=%q: kinds %q", v, got)
		}
	}
	var ue usageError
	if err := registerPlatformJobs(worker.NewMux(), st, platform{queues: cfg, getenv: env("sometimes")}); !errors.As(err, &ue) {
		t.Errorf("PUBQ_EDTECH_VERIFY=sometimes: %v, want a usage error", err)
	}
}

// platformProc runs the worker binary with one sub-command.
type platformProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *platformProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *platformProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startPlatformProc(t *testing.T, bin, sub string, env map[string]string) *platformProc {
	t.Helper()
	p := &platformProc{done: make(chan struct{})}
	p.cmd = exec.Command(bin, sub)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "PUBQ_TRACE_SQL=false",
		"OTEL_TRACES_EXPORTER=none", "PORT=" + strconv.Itoa(testenv.FreePort(t))}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.Dir = t.TempDir()
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("worker %s output:\n%s", sub, p.output())
		}
	})
	return p
}

func (p *platformProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("worker %s still running after %s:\n%s", p.cmd.Args[1], timeout, p.output())
		return -1
	}
}

// The binary applies the edtech schema on migrate (idempotently) and runs the nightly fan-out:
// a scan enqueued against a seeded database ends with every planted pair merged once.
func TestWorkerBinaryMigratesAndRunsTheNightlyScan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	testenv.Emulator(t)
	bin := testenv.BuildBinary(t, "services/worker")
	path, cfg := shippedQueues(t)
	dsn := testenv.Postgres(t)
	env := map[string]string{"PUBQ_PROJECT": testenv.ProjectID(t), "PUBQ_QUEUES": path, "PUBQ_DATABASE_URL": dsn,
		"PUBSUB_EMULATOR_HOST": os.Getenv("PUBSUB_EMULATOR_HOST")}
	for i := range 2 {
		if p := startPlatformProc(t, bin, "migrate", env); p.wait(t, 2*time.Minute) != 0 {
			t.Fatalf("migrate #%d failed:\n%s", i+1, p.output())
		}
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var applied int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+schema.VersionTable).Scan(&applied); err != nil || applied != len(ms) {
		t.Fatalf("edtech migrations recorded: %d (%v), want %d", applied, err, len(ms))
	}
	if p := startPlatformProc(t, bin, "bootstrap", env); p.wait(t, 2*time.Minute) != 0 {
		t.Fatalf("bootstrap failed:\n%s", p.output())
	}

	res, err := seed.Generate(ctx, pool, seed.Options{Students: 500, DuplicateRate: 0.1, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	w := startPlatformProc(t, bin, "run", env)
	st, err := store.Open(ctx, store.Config{URL: dsn, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pub, err := publish.New(st, &publish.Config{Queues: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Enqueue(ctx, publish.Request{Kind: jobs.KindScan, Key: "night", Payload: []byte(`{"ranges": 4, "mode": "auto"}`)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var scanState string
		var open int
		if err := pool.QueryRow(ctx, `SELECT (SELECT state FROM pubq.jobs WHERE key = 'night'),
			(SELECT count(*) FROM pubq.jobs WHERE state NOT IN ('succeeded', 'dead', 'cancelled'))`).Scan(&scanState, &open); err != nil {
			t.Fatal(err)
		}
		if scanState == "succeeded" && open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fan-out did not settle in 3m (scan %s, %d jobs open):\n%s", scanState, open, w.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var merges, succeeded int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE state = 'succeeded') FROM pubq.jobs WHERE kind = $1`,
		jobs.KindMerge).Scan(&merges, &succeeded); err != nil {
		t.Fatal(err)
	}
	if merges != len(res.Duplicates) || succeeded != merges {
		t.Fatalf("%d merge jobs, %d succeeded; want %d", merges, succeeded, len(res.Duplicates))
	}
	for _, p := range res.Duplicates {
		if err := merge.Verify(ctx, pool, p.SurvivorID, p.DuplicateID, nil); err != nil {
			t.Error(err)
		}
	}
	if n := strings.Count(w.output(), `"msg":"account merge"`); n != len(res.Duplicates) {
		t.Errorf("the worker logged %d merges, want %d", n, len(res.Duplicates))
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if code := w.wait(t, time.Minute); code != 0 {
		t.Fatalf("worker exited %d after SIGTERM", code)
	}
}

// A bad PUBQ_EDTECH_VERIFY stops the worker before it receives anything, as a usage error.
func TestWorkerBinaryRefusesABadVerifySetting(t *testing.T) {
	t.Parallel()
	testenv.Emulator(t)
	bin := testenv.BuildBinary(t, "services/worker")
	path, _ := shippedQueues(t)
	p := startPlatformProc(t, bin, "run", map[string]string{"PUBQ_PROJECT": testenv.ProjectID(t), "PUBQ_QUEUES": path,
		"PUBQ_DATABASE_URL": testenv.Postgres(t), "PUBSUB_EMULATOR_HOST": os.Getenv("PUBSUB_EMULATOR_HOST"), "PUBQ_EDTECH_VERIFY": "maybe"})
	if code := p.wait(t, 2*time.Minute); code != 2 || !strings.Contains(p.output(), "PUBQ_EDTECH_VERIFY") {
		t.Fatalf("exit %d, output:\n%s", code, p.output())
	}
}

// The worker reads its environment as strictly as the producer: a boolean is what strconv.ParseBool
// reads (so one env file means the same to both), durations are positive, a port is a port.
func TestReadEnvRefusesBadValues(t *testing.T) {
	path, _ := shippedQueues(t)
	base := map[string]string{"PUBQ_PROJECT": "p", "PUBQ_QUEUES": path, "PUBQ_DATABASE_URL": "postgres://127.0.0.1/x"}
	set := func(extra map[string]string) {
		for _, k := range []string{"PUBQ_MIGRATE", "PUBQ_CLOUDSQL_PRIVATE_IP", "PUBQ_TRACE_SQL", "PUBQ_NO_JITTER",
			"PUBQ_PRUNE_EVERY", "PUBQ_SHUTDOWN_TIMEOUT", "PUBQ_LEASE", "PORT"} {
			t.Setenv(k, "")
		}
		for k, v := range base {
			t.Setenv(k, v)
		}
		for k, v := range extra {
			t.Setenv(k, v)
		}
	}
	for name, v := range map[string]string{"PUBQ_MIGRATE": "yes please", "PUBQ_CLOUDSQL_PRIVATE_IP": "maybe",
		"PUBQ_TRACE_SQL": "off-ish", "PUBQ_NO_JITTER": "2", "PUBQ_PRUNE_EVERY": "-1m", "PUBQ_SHUTDOWN_TIMEOUT": "0s",
		"PUBQ_LEASE": "-5s", "PORT": "70000"} {
		set(map[string]string{name: v})
		var ue usageError
		if _, err := readEnv(); !errors.As(err, &ue) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: %v, want a usage error naming it", name, v, err)
		}
	}
	set(map[string]string{"PUBQ_CLOUDSQL_PRIVATE_IP": "1", "PUBQ_TRACE_SQL": "FALSE", "PUBQ_MIGRATE": "t", "PORT": "9090"})
	e, err := readEnv()
	if err != nil {
		t.Fatal(err)
	}
	if !e.db.PrivateIP || e.db.Trace || !e.migrate || e.addr != ":9090" {
		t.Errorf("read %+v, migrate %v, addr %q", e.db, e.migrate, e.addr)
	}
}
