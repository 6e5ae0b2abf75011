package main

// Fault tests of the worker binary: real processes against the emulator and Postgres, killed, frozen and
// stopped mid-work. The property under test is the one pubq promises: every job's effect (one row in
// demo_effects, written in the job's own transaction) exists exactly once, whatever happens to a worker.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/pubq/pubq/pkg/demo"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// faultQueues is the queue file of these tests: one queue for demo.record, received through the
// subscription named by the last verb. max_delivery_attempts is high so Pub/Sub never dead-letters a
// message pubq still has to run.
const faultQueues = `
version: 1
defaults:
  ack_deadline: 10s
  max_delivery_attempts: 100
  message_retention: 1h
  key_retention: 2h
  concurrency: %d
  streams: %d
  timeout: 5m
  backoff: {initial: 100ms, multiplier: 2, max: 1s, randomization: 0.2, max_attempts: 5}
queues:
  default:
    topic: pubq-default
    subscription: %s
    dead_letter_topic: pubq-default-dead
    dead_letter_subscription: pubq-default-dead-inspect
    kinds: [demo.record]
`

// stack is one test's project, database and queue file, bootstrapped and migrated by the binary itself.
type stack struct {
	bin     string
	project string
	dsn     string
	queues  string // path of the queue file
	queuesB string // the same queue, received through a second subscription of its topic (see takeoverQueues)
	st      *store.Store
	pub     *publish.Client
}

func newStack(t *testing.T, concurrency, streams int) *stack {
	t.Helper()
	testenv.Emulator(t)
	s := &stack{bin: testenv.BuildBinary(t, "services/worker"), project: testenv.ProjectID(t), dsn: testenv.Postgres(t)}
	dir := t.TempDir()
	yaml := fmt.Sprintf(faultQueues, concurrency, streams, "pubq-default-worker")
	s.queues, s.queuesB = filepath.Join(dir, "queues.yaml"), filepath.Join(dir, "queues-b.yaml")
	if err := os.WriteFile(s.queues, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.queuesB, []byte(fmt.Sprintf(faultQueues, concurrency, streams, "pubq-default-worker-b")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ cmd, queues string }{{"bootstrap", s.queues}, {"bootstrap", s.queuesB}, {"migrate", s.queues}} {
		p := s.start(t, c.cmd, map[string]string{"PUBQ_QUEUES": c.queues})
		if code := p.wait(t, 2*time.Minute); code != 0 {
			t.Fatalf("worker %s exited %d:\n%s", c.cmd, code, p.output())
		}
	}
	ctx := context.Background()
	var err error
	if s.st, err = store.Open(ctx, store.Config{URL: s.dsn}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.st.Close)
	cfg, err := queue.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if s.pub, err = publish.New(s.st, &publish.Config{Queues: cfg}); err != nil {
		t.Fatal(err)
	}
	return s
}

// takeoverQueues is the environment of a worker B that takes over from a killed or frozen worker A
// through the second subscription of the queue's topic, which holds its own copy of every message.
//
// Why not A's subscription: the emulator does not return a dead or frozen subscriber's messages the way
// Pub/Sub does. It ignores client flow control, so A holds the whole backlog; after A dies, its
// messages come back only when the stream ack deadline (the client's default, 60 s) runs out, and then
// only in part, in further waves a minute apart. Measured with plain Pub/Sub clients and no pubq code:
// 8,000 messages, the subscriber SIGKILLed after 8 s, 100 of them still not redelivered 6 minutes
// later; in this test, B sat idle with ~1,000 jobs pending for 7 minutes. B on the second subscription
// gets every job again (the ones A finished included) at once; what is under test is pubq's part: the
// claim, the lease, the fence and the outbox decide that each job still runs exactly once.
func (s *stack) takeoverQueues(extra map[string]string) map[string]string {
	env := map[string]string{"PUBQ_QUEUES": s.queuesB}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// proc is a running worker binary.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	port    int
	done    chan struct{}
	err     error // Wait's result, once done is closed
}

// start runs the binary with sub-command cmd and exactly the environment it needs plus extra. The
// worker's database connections carry application_name=name so a test can see when they are gone.
func (s *stack) start(t *testing.T, cmd string, extra map[string]string) *proc {
	t.Helper()
	name := cmd
	if n, ok := extra["name"]; ok {
		name = n
	}
	p := &proc{name: name, port: testenv.FreePort(t), done: make(chan struct{}),
		logPath: filepath.Join(t.TempDir(), name+".log")}
	env := map[string]string{
		"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME"),
		"PUBSUB_EMULATOR_HOST": os.Getenv("PUBSUB_EMULATOR_HOST"),
		"PUBQ_PROJECT":         s.project,
		"PUBQ_QUEUES":          s.queues,
		"PUBQ_DATABASE_URL":    withAppName(t, s.dsn, name),
		"PUBQ_TRACE_SQL":       "false",
		"PORT":                 strconv.Itoa(p.port),
	}
	for k, v := range extra {
		if k != "name" {
			env[k] = v
		}
	}
	p.cmd = exec.Command(s.bin, cmd)
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Dir = t.TempDir()
	// Own process group, and killed by the kernel if this test process dies first.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGCONT) // a frozen process cannot die of SIGKILL any faster, but be tidy
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output (last lines):\n%s", p.name, tail(p.output(), 40))
		}
	})
	return p
}

// runWorker starts `worker run` and waits until it receives.
func (s *stack) runWorker(t *testing.T, name string, extra map[string]string) *proc {
	t.Helper()
	env := map[string]string{"name": name}
	for k, v := range extra {
		env[k] = v
	}
	p := s.start(t, "run", env)
	deadline := time.Now().Add(90 * time.Second) // a -race build starts slowly on a busy machine
	for !strings.Contains(p.output(), `"worker started"`) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before it started (%v):\n%s", name, p.err, tail(p.output(), 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start within 90s:\n%s", name, tail(p.output(), 40))
		}
	}
	return p
}

func withAppName(t *testing.T, dsn, name string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: sending %v: %v", p.name, sig, err)
	}
}

// wait returns the exit code (-1 for death by signal), failing the test if the process runs past timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still runs after %v", p.name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// metric sums the Prometheus series named name (all label sets) on the worker's /metrics.
func (p *proc) metric(t *testing.T, name string) float64 {
	t.Helper()
	v, _ := p.metricFound(t, name)
	return v
}

// metricFound is metric, and whether any series of that name exists.
func (p *proc) metricFound(t *testing.T, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", p.port))
	if err != nil {
		t.Fatalf("%s: scraping metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	return sum, found
}

// logLines returns the worker's JSON log records whose msg is msg.
func (p *proc) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(p.output(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && (rec["msg"] == msg || rec["message"] == msg) {
			out = append(out, rec)
		}
	}
	return out
}

func (s *stack) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := s.st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (s *stack) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// enqueue enqueues n demo.record jobs keyed prefix-0..n-1 with payload p, in batches of publish.MaxBatch.
func (s *stack) enqueue(t *testing.T, prefix string, n int, p demo.Payload) {
	t.Helper()
	data, _ := json.Marshal(p)
	for from := 0; from < n; from += publish.MaxBatch {
		var reqs []publish.Request
		for i := from; i < min(n, from+publish.MaxBatch); i++ {
			reqs = append(reqs, publish.Request{Kind: "demo.record", Key: fmt.Sprintf("%s-%d", prefix, i), Payload: data})
		}
		if _, err := s.pub.EnqueueMany(context.Background(), reqs); err != nil {
			t.Fatal(err)
		}
	}
}

// states returns the jobs' count per state, for progress logs.
func (s *stack) states(t *testing.T) string {
	t.Helper()
	rows, err := s.st.Pool().Query(context.Background(), `SELECT state, count(*) FROM pubq.jobs GROUP BY state ORDER BY state`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var st string
		var n int
		_ = rows.Scan(&st, &n)
		parts = append(parts, fmt.Sprintf("%s=%d", st, n))
	}
	return strings.Join(parts, " ")
}

// waitConnsGone waits until no database session of the named process is left, so that nothing it sent
// before it died can still commit after the test looks.
func (s *stack) waitConnsGone(t *testing.T, name string) {
	t.Helper()
	s.waitFor(t, 30*time.Second, name+"'s database sessions to end", func() bool {
		return s.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`, name) == 0
	})
}

// 10,000 jobs; worker A is SIGKILLed once about 2,000 effects exist — with jobs claimed, effects
// committed but not acked, and outbox rows possibly published but not deleted — and worker B finishes.
// It fails if any job's effect is missing (a message lost with A), doubled (a job run again after
// its effect committed, or a zombie's commit accepted), or if a job A held is not taken over.
func TestSIGKILLMidRunEveryEffectOnce(t *testing.T) {
	t.Parallel()
	const n = 10000
	s := newStack(t, 64, 4)
	s.enqueue(t, "k", n, demo.Payload{})
	leaseEnv := map[string]string{"PUBQ_LEASE": "3s"}

	a := s.runWorker(t, "worker-a", leaseEnv)
	s.waitFor(t, 3*time.Minute, "2,000 effects from worker A", func() bool {
		return s.count(t, `SELECT count(*) FROM demo_effects`) >= 2000
	})
	a.signal(t, syscall.SIGKILL)
	if code := a.wait(t, 30*time.Second); code != -1 {
		t.Fatalf("worker A exit code %d after SIGKILL, want death by signal", code)
	}
	s.waitConnsGone(t, "worker-a")
	var atKill, running, outbox, pending int
	atKill = s.count(t, `SELECT count(*) FROM demo_effects`)
	running = s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'running'`)
	pending = s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'pending'`)
	outbox = s.count(t, `SELECT count(*) FROM pubq.outbox`)
	t.Logf("after SIGKILL of A: %d effects, %d jobs running (A's orphaned leases), %d pending, %d outbox rows unpublished", atKill, running, pending, outbox)
	if atKill >= n {
		t.Fatalf("A finished all %d jobs before it was killed: the test proves nothing", n)
	}
	// The keys A held: they must be re-run by B after their lease expires, exactly once.
	rows, err := s.st.Pool().Query(context.Background(), `SELECT key FROM pubq.jobs WHERE state = 'running'`)
	if err != nil {
		t.Fatal(err)
	}
	var held []string
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		held = append(held, k)
	}
	rows.Close()

	start := time.Now()
	b := s.runWorker(t, "worker-b", s.takeoverQueues(leaseEnv))
	lastLog := time.Now()
	s.waitFor(t, 3*time.Minute, "all jobs to succeed", func() bool {
		if time.Since(lastLog) > 15*time.Second {
			lastLog = time.Now()
			t.Logf("%s after B started: jobs by state %s, %d outbox rows", time.Since(start).Round(time.Second), s.states(t), s.count(t, `SELECT count(*) FROM pubq.outbox`))
		}
		return s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'succeeded'`) == n
	})
	took := time.Since(start)
	rowsN := s.count(t, `SELECT count(*) FROM demo_effects`)
	distinct := s.count(t, `SELECT count(DISTINCT job_key) FROM demo_effects`)
	dups := b.metric(t, "pubq_jobs_duplicate_skipped_total")
	t.Logf("worker B: all %d jobs succeeded %s after it started; demo_effects count(*)=%d count(DISTINCT job_key)=%d; B skipped %.0f duplicate deliveries",
		n, took.Round(100*time.Millisecond), rowsN, distinct, dups)
	if rowsN != n || distinct != n {
		t.Fatalf("demo_effects: %d rows, %d distinct keys; want %d and %d (every effect exactly once)", rowsN, distinct, n, n)
	}
	if other := s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state <> 'succeeded'`); other != 0 {
		t.Fatalf("%d jobs not succeeded", other)
	}
	if strays := s.count(t, `SELECT count(*) FROM demo_effects e LEFT JOIN pubq.jobs j ON j.key = e.job_key WHERE j.key IS NULL OR j.attempt <> e.attempt`); strays != 0 {
		t.Fatalf("%d effects do not belong to the attempt that completed their job", strays)
	}
	if len(held) > 0 {
		// Each job A held when it died was taken over: its one effect comes from a later attempt.
		if retaken := s.count(t, `SELECT count(*) FROM demo_effects WHERE job_key = ANY($1) AND attempt >= 2`, held); retaken != len(held) {
			t.Fatalf("of %d jobs A held when killed, %d have their effect from a takeover attempt", len(held), retaken)
		}
	}
	b.signal(t, syscall.SIGTERM)
	if code := b.wait(t, time.Minute); code != 0 {
		t.Fatalf("worker B exited %d on SIGTERM", code)
	}
}

// A zombie: worker A is frozen (SIGSTOP) while it runs an 8s job with a 2s lease, so it can neither
// renew the lease nor extend the message. B gets the job (through its own subscription, see
// takeoverQueues: on A's, the emulator returns it only after 60 s, or later), finds A's lease live,
// waits it out, takes the job over with a higher fence and completes it; then A wakes up, its handler
// finishes, and its completion must be refused. It fails if the effect is missing, doubled or written
// by A's attempt, if B started the job before A's lease ran out, if A counts the job as succeeded, or
// if A does not count one lost lease.
func TestZombieWorkerCannotCommit(t *testing.T) {
	t.Parallel()
	s := newStack(t, 1, 1)
	env := map[string]string{"PUBQ_LEASE": "2s"}
	a := s.runWorker(t, "worker-a", env)
	s.enqueue(t, "zombie", 1, demo.Payload{SleepMS: 8000})
	s.waitFor(t, time.Minute, "A to run the job", func() bool {
		return s.count(t, `SELECT count(*) FROM pubq.jobs WHERE key = 'zombie-0' AND state = 'running'`) == 1
	})
	a.signal(t, syscall.SIGSTOP)
	frozen := time.Now()
	var ownerA string
	var leaseA time.Time // A's lease as last renewed (a renewal still in flight can only push it later)
	if err := s.st.Pool().QueryRow(context.Background(), `SELECT lease_owner, lease_until FROM pubq.jobs WHERE key = 'zombie-0'`).Scan(&ownerA, &leaseA); err != nil {
		t.Fatal(err)
	}

	b := s.runWorker(t, "worker-b", s.takeoverQueues(env))
	s.waitFor(t, 90*time.Second, "B to take the job over and finish it", func() bool {
		return s.count(t, `SELECT count(*) FROM pubq.jobs WHERE key = 'zombie-0' AND state = 'succeeded'`) == 1
	})
	t.Logf("B finished the job %s after A was frozen", time.Since(frozen).Round(100*time.Millisecond))
	a.signal(t, syscall.SIGCONT)
	// A's handler resumes: its sleep is long over, so it either reaches its commit (refused by the
	// fence, rolled back) or is cancelled by its lease keeper first. Either way the delivery ends.
	s.waitFor(t, time.Minute, "A's attempt to end after SIGCONT", func() bool {
		n, ok := a.metricFound(t, "pubq_jobs_in_flight")
		return ok && n == 0
	})

	type effect struct{ attempt int }
	var effects []effect
	rows, err := s.st.Pool().Query(context.Background(), `SELECT attempt FROM demo_effects WHERE job_key = 'zombie-0'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var e effect
		_ = rows.Scan(&e.attempt)
		effects = append(effects, e)
	}
	rows.Close()
	var state string
	var attempt int
	var fence int64
	var claimedB time.Time
	if err := s.st.Pool().QueryRow(context.Background(), `SELECT state, attempt, fence, started_at FROM pubq.jobs WHERE key = 'zombie-0'`).Scan(&state, &attempt, &fence, &claimedB); err != nil {
		t.Fatal(err)
	}
	// Both times are the database's clock.
	if !claimedB.After(leaseA) {
		t.Fatalf("B started the job at %s, while A's lease ran until %s", claimedB, leaseA)
	}
	startedA, succeededA := a.metric(t, "pubq_jobs_started_total"), a.metric(t, "pubq_jobs_succeeded_total")
	startedB, succeededB := b.metric(t, "pubq_jobs_started_total"), b.metric(t, "pubq_jobs_succeeded_total")
	t.Logf("zombie: A's lease (owner %s) ran until %s, B claimed at %s (%s later)", ownerA, leaseA.Format(time.RFC3339Nano), claimedB.Format(time.RFC3339Nano), claimedB.Sub(leaseA).Round(time.Millisecond))
	t.Logf("zombie: A (lease owner %s) started %.0f succeeded %.0f; B started %.0f succeeded %.0f; job %s attempt %d fence %d; effects %v; A logged %v",
		ownerA, startedA, succeededA, startedB, succeededB, state, attempt, fence, effects, a.logLines("job attempt finished"))
	if len(effects) != 1 || effects[0].attempt != 2 {
		t.Fatalf("effects %v: want exactly one, from attempt 2 (B)", effects)
	}
	if state != "succeeded" || attempt != 2 || fence < 2 {
		t.Fatalf("job %s attempt %d fence %d; want succeeded, attempt 2, fence ≥ 2", state, attempt, fence)
	}
	if startedA != 1 || succeededA != 0 {
		t.Fatalf("A started %.0f and succeeded %.0f jobs; want 1 and 0 (its completion refused)", startedA, succeededA)
	}
	if startedB != 1 || succeededB != 1 {
		t.Fatalf("B started %.0f and succeeded %.0f jobs; want 1 and 1", startedB, succeededB)
	}
	// A found out once, by its renewal or by its fenced commit, whichever came first after SIGCONT.
	if lostA, lostB := a.metric(t, "pubq_leases_lost_total"), b.metric(t, "pubq_leases_lost_total"); lostA != 1 || lostB != 0 {
		t.Fatalf("leases lost: A %.0f, B %.0f; want 1 and 0", lostA, lostB)
	}
	for _, p := range []*proc{a, b} {
		p.signal(t, syscall.SIGTERM)
		if code := p.wait(t, time.Minute); code != 0 {
			t.Errorf("%s exited %d on SIGTERM", p.name, code)
		}
	}
}

// observe subscribes an observer to the queue's topic (before anything is published) and returns a
// function that reads n messages from it and maps their message ids to job keys. Message ids are the
// same on every subscription of a topic, so this names the messages in a worker's traces.
func (s *stack) observe(t *testing.T) func(n int) map[string]string {
	t.Helper()
	ctx := context.Background()
	client, err := pubsub.NewClient(ctx, s.project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:  "projects/" + s.project + "/subscriptions/pubq-default-observe",
		Topic: "projects/" + s.project + "/topics/pubq-default", AckDeadlineSeconds: 60,
	}); err != nil {
		t.Fatal(err)
	}
	return func(n int) map[string]string {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		var mu sync.Mutex
		keys := map[string]string{}
		seen := map[string]bool{}
		err := client.Subscriber("pubq-default-observe").Receive(rctx, func(_ context.Context, m *pubsub.Message) {
			m.Ack()
			mu.Lock()
			defer mu.Unlock()
			keys[m.ID] = m.Attributes[job.AttrKey]
			seen[m.Attributes[job.AttrKey]] = true
			if len(seen) == n {
				cancel()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) < n {
			t.Fatalf("the observer saw %d of %d jobs", len(seen), n)
		}
		return keys
	}
}

// consoleTraces is the environment that makes the worker print its spans (the Pub/Sub client's
// included) as JSON lines on stderr.
var consoleTraces = map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}

// acksAndNacks reads the worker's Pub/Sub "process" spans: the message ids on which the worker called
// Ack and those on which it called Nack.
func (p *proc) acksAndNacks(t *testing.T) (acked, nacked map[string]bool) {
	t.Helper()
	acked, nacked = map[string]bool{}, map[string]bool{}
	type attr struct {
		Key   string
		Value struct{ Value any }
	}
	for _, line := range strings.Split(p.output(), "\n") {
		var span struct {
			Name       string
			Attributes []attr
			Events     []struct{ Name string }
		}
		if json.Unmarshal([]byte(line), &span) != nil || !strings.HasSuffix(span.Name, " process") {
			continue
		}
		id := ""
		for _, a := range span.Attributes {
			if a.Key == "messaging.message.id" {
				id, _ = a.Value.Value.(string)
			}
		}
		for _, e := range span.Events {
			switch e.Name {
			case "ack called":
				acked[id] = true
			case "nack called":
				nacked[id] = true
			}
		}
	}
	return acked, nacked
}

// keysOf maps message ids to job keys.
func keysOf(ids map[string]bool, keyOf map[string]string) map[string]bool {
	out := map[string]bool{}
	for id := range ids {
		out[keyOf[id]] = true
	}
	return out
}

func (s *stack) keys(t *testing.T, sql string, args ...any) map[string]bool {
	t.Helper()
	rows, err := s.st.Pool().Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		out[k] = true
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// SIGTERM with a generous shutdown timeout: the jobs in flight finish, commit and are acked, the process
// exits 0, and jobs that had not started are neither started nor acked. Worker 2 then finishes them,
// each exactly once. It fails if an in-flight job is cut short, a job that did not start is started,
// acked (on Pub/Sub it would be gone) or marked anything but pending, or a job runs twice.
//
// "Not acked" is read from worker 1's own traces (the Pub/Sub client records each Ack and Nack call on
// its process span), with an observer subscription naming the messages. Worker 2 finishes the rest
// through the second subscription (see takeoverQueues): on the emulator, messages worker 1 held or
// nacked as it stopped come back on its subscription only after a minute, or several (observed: none
// of 12 within 2 minutes).
func TestSIGTERMFinishesInFlightJobs(t *testing.T) {
	t.Parallel()
	const n, concurrency = 16, 4
	s := newStack(t, concurrency, 1)
	observed := s.observe(t)
	s.enqueue(t, "term", n, demo.Payload{SleepMS: 1500})
	w1 := s.runWorker(t, "worker-1", mergeEnv(consoleTraces, map[string]string{"PUBQ_SHUTDOWN_TIMEOUT": "60s"}))
	s.waitFor(t, time.Minute, "jobs in flight", func() bool {
		return s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'running'`) >= 2
	})
	inFlight := s.keys(t, `SELECT key FROM pubq.jobs WHERE state = 'running'`)
	w1.signal(t, syscall.SIGTERM)
	if code := w1.wait(t, 90*time.Second); code != 0 {
		t.Fatalf("worker 1 exited %d on SIGTERM, want 0", code)
	}
	s.waitConnsGone(t, "worker-1")
	succeeded := s.keys(t, `SELECT key FROM pubq.jobs WHERE state = 'succeeded'`)
	untouched := s.keys(t, `SELECT key FROM pubq.jobs WHERE state = 'pending' AND attempt = 0`)
	t.Logf("SIGTERM with %d jobs in flight: %d succeeded, %d untouched (pending, attempt 0), of %d", len(inFlight), len(succeeded), len(untouched), n)
	for k := range inFlight {
		if !succeeded[k] {
			t.Errorf("job %s was in flight at SIGTERM and did not succeed", k)
		}
	}
	if got := s.count(t, `SELECT count(*) FROM demo_effects WHERE job_key = ANY($1)`, sortedKeys(inFlight)); got != len(inFlight) {
		t.Fatalf("of %d jobs in flight at SIGTERM, %d effects", len(inFlight), got)
	}
	if len(succeeded)+len(untouched) != n {
		t.Fatalf("%d succeeded + %d untouched != %d: the shutdown left some job running, released or failed", len(succeeded), len(untouched), n)
	}
	if len(untouched) == 0 {
		t.Fatal("every job ran before the shutdown: the test proves nothing about jobs that had not started")
	}
	if e := s.count(t, `SELECT count(*) FROM demo_effects`); e != len(succeeded) {
		t.Fatalf("%d effects for %d succeeded jobs", e, len(succeeded))
	}
	keyOf := observed(n)
	acked, nacked := w1.acksAndNacks(t)
	ackedKeys := keysOf(acked, keyOf)
	t.Logf("worker 1 acked %v; nacked %d messages", sortedKeys(ackedKeys), len(nacked))
	if fmt.Sprint(sortedKeys(ackedKeys)) != fmt.Sprint(sortedKeys(succeeded)) {
		t.Fatalf("worker 1 acked %v; want exactly the jobs it finished, %v", sortedKeys(ackedKeys), sortedKeys(succeeded))
	}

	w2 := s.runWorker(t, "worker-2", s.takeoverQueues(nil))
	s.waitFor(t, 2*time.Minute, "worker 2 to finish the rest", func() bool {
		return s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'succeeded'`) == n
	})
	rowsN, distinct := s.count(t, `SELECT count(*) FROM demo_effects`), s.count(t, `SELECT count(DISTINCT job_key) FROM demo_effects`)
	started2 := w2.metric(t, "pubq_jobs_started_total")
	t.Logf("worker 2: started %.0f; effects %d rows, %d keys", started2, rowsN, distinct)
	if rowsN != n || distinct != n {
		t.Fatalf("effects %d rows, %d keys; want %d", rowsN, distinct, n)
	}
	if int(started2) != len(untouched) {
		t.Fatalf("worker 2 started %.0f jobs, want the %d worker 1 had not started", started2, len(untouched))
	}
	if firstAttempt := s.count(t, `SELECT count(*) FROM demo_effects WHERE attempt = 1`); firstAttempt != n {
		t.Fatalf("%d of %d effects from attempt 1: the shutdown used up an attempt of a job it did not run", firstAttempt, n)
	}
	w2.signal(t, syscall.SIGTERM)
	if code := w2.wait(t, time.Minute); code != 0 {
		t.Fatalf("worker 2 exited %d", code)
	}
}

// SIGTERM with a 1s shutdown timeout while 10s jobs run: the process gives up on them within its bound,
// they have no effect, are released (pending, attempt given back) and their messages are nacked, never
// acked; worker 2 (second subscription, as above) then runs each exactly once. It fails if the worker
// waits the jobs out, commits any of them, acks one (on Pub/Sub it would be gone), or leaves one
// running under a dead lease.
func TestSIGTERMTimeoutReleasesJobs(t *testing.T) {
	t.Parallel()
	const n = 3
	s := newStack(t, 4, 1)
	observed := s.observe(t)
	s.enqueue(t, "slow", n, demo.Payload{SleepMS: 10000})
	w1 := s.runWorker(t, "worker-1", mergeEnv(consoleTraces, map[string]string{"PUBQ_SHUTDOWN_TIMEOUT": "1s"}))
	s.waitFor(t, time.Minute, "all jobs running", func() bool {
		return s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'running'`) == n
	})
	sent := time.Now()
	w1.signal(t, syscall.SIGTERM)
	// Bound: shutdown timeout + the client's 5s grace + teardown, generous for a loaded machine. The
	// proof that it did not wait the jobs out is below: no effects.
	code := w1.wait(t, 30*time.Second)
	exited := time.Since(sent)
	if code != 0 {
		t.Fatalf("worker 1 exited %d, want 0", code)
	}
	s.waitConnsGone(t, "worker-1")
	t.Logf("worker 1 exited %s after SIGTERM with %d 10s jobs running", exited.Round(10*time.Millisecond), n)
	if e := s.count(t, `SELECT count(*) FROM demo_effects`); e != 0 {
		t.Fatalf("%d effects: jobs cut short by the shutdown timeout committed", e)
	}
	if got := s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'pending' AND attempt = 0 AND lease_owner IS NULL`); got != n {
		t.Fatalf("%d of %d jobs released (pending, attempt 0, no lease)", got, n)
	}
	keyOf := observed(n)
	acked, nacked := w1.acksAndNacks(t)
	if len(acked) != 0 || len(keysOf(nacked, keyOf)) != n {
		t.Fatalf("worker 1 acked %v and nacked %v; want no ack and a nack for each of the %d jobs", sortedKeys(keysOf(acked, keyOf)), sortedKeys(keysOf(nacked, keyOf)), n)
	}

	w2 := s.runWorker(t, "worker-2", s.takeoverQueues(nil))
	s.waitFor(t, 2*time.Minute, "worker 2 to run the released jobs", func() bool {
		return s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'succeeded'`) == n
	})
	rowsN, distinct := s.count(t, `SELECT count(*) FROM demo_effects`), s.count(t, `SELECT count(DISTINCT job_key) FROM demo_effects`)
	firstAttempt := s.count(t, `SELECT count(*) FROM demo_effects WHERE attempt = 1`)
	if rowsN != n || distinct != n || firstAttempt != n {
		t.Fatalf("effects %d rows, %d keys, %d on attempt 1; want %d each (a released job keeps its attempt)", rowsN, distinct, firstAttempt, n)
	}
	w2.signal(t, syscall.SIGTERM)
	if code := w2.wait(t, time.Minute); code != 0 {
		t.Fatalf("worker 2 exited %d", code)
	}
}

func mergeEnv(envs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, e := range envs {
		for k, v := range e {
			out[k] = v
		}
	}
	return out
}

// Jobs that finish during a graceful shutdown are acked for real, not only in the worker's books. With
// fewer jobs than the concurrency, the client's receive sits in the stream when SIGTERM comes; a timed
// client shutdown then cancels the stream first, which stops the client's sender, and every ack
// after that was silently dropped: the jobs came back as duplicates after their ack deadline. A
// subscriber on the worker's subscription after it exited must get nothing. It fails if any of the
// jobs' messages is redelivered within 30 s (a lost ack comes back about 10 s after the last
// extension), or if the jobs did not finish.
func TestSIGTERMAcksJobsFinishedDuringShutdown(t *testing.T) {
	t.Parallel()
	const n = 3
	s := newStack(t, 8, 1)
	s.enqueue(t, "drain", n, demo.Payload{SleepMS: 1500})
	w1 := s.runWorker(t, "worker-1", map[string]string{"PUBQ_SHUTDOWN_TIMEOUT": "60s"})
	s.waitFor(t, time.Minute, "all jobs running", func() bool {
		return s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'running'`) == n
	})
	w1.signal(t, syscall.SIGTERM)
	if code := w1.wait(t, 90*time.Second); code != 0 {
		t.Fatalf("worker 1 exited %d on SIGTERM, want 0", code)
	}
	if got := s.count(t, `SELECT count(*) FROM pubq.jobs WHERE state = 'succeeded'`); got != n {
		t.Fatalf("%d of %d jobs in flight at SIGTERM succeeded", got, n)
	}
	ctx := context.Background()
	client, err := pubsub.NewClient(ctx, s.project)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var back []string
	if err := client.Subscriber("pubq-default-worker").Receive(rctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		mu.Lock()
		back = append(back, m.Attributes[job.AttrKey])
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if len(back) != 0 {
		t.Fatalf("jobs finished and acked during the shutdown came back: %v (their acks never reached Pub/Sub)", back)
	}
}
