package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/telemetry/otlptest"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// apiToken is the producer's bearer token in these tests (long enough not to be warned about).
const apiToken = "e2e-token-0123456789abcdef"

// Service names the processes export under, distinct from the binaries' defaults so the assertions
// prove the OTEL_* environment reached them.
const (
	producerService = "e2e-producer"
	workerService   = "e2e-worker"
)

// startTimeout bounds a process start: -race builds start slowly on a busy shared machine.
const startTimeout = 2 * time.Minute

// stack is one test's Pub/Sub project (bootstrapped by `worker bootstrap` from the repository's
// queues.yaml) and database (migrated by `worker migrate`), with the binaries built for it.
type stack struct {
	project  string
	dsn      string
	queues   string // path of queues.yaml
	worker   string // binary
	producer string // binary
}

func newStack(t *testing.T) *stack {
	t.Helper()
	testenv.Emulator(t)
	s := &stack{
		project:  testenv.ProjectID(t),
		dsn:      testenv.Postgres(t),
		queues:   filepath.Join(testenv.RepoRoot(t), "queues.yaml"),
		worker:   testenv.BuildBinary(t, "services/worker"),
		producer: testenv.BuildBinary(t, "services/producer"),
	}
	for _, cmd := range []string{"bootstrap", "migrate"} {
		p := s.start(t, "worker-"+cmd, s.worker, []string{cmd}, nil)
		if code := p.wait(t, startTimeout); code != 0 {
			t.Fatalf("worker %s exited %d:\n%s", cmd, code, p.output())
		}
	}
	return s
}

// baseEnv is what both binaries need, and nothing inherited but PATH and HOME.
func (s *stack) baseEnv() map[string]string {
	return map[string]string{
		"PATH":                 os.Getenv("PATH"),
		"HOME":                 os.Getenv("HOME"),
		"PUBSUB_EMULATOR_HOST": os.Getenv("PUBSUB_EMULATOR_HOST"),
		"PUBQ_PROJECT":         s.project,
		"PUBQ_QUEUES":          s.queues,
		"PUBQ_DATABASE_URL":    s.dsn,
	}
}

// otelEnv points a process at rcv (OTLP/gRPC), under service name, sampling everything.
func otelEnv(rcv *otlptest.Receiver, service string) map[string]string {
	env := map[string]string{
		"OTEL_SERVICE_NAME":   service,
		"OTEL_TRACES_SAMPLER": "always_on",
	}
	for _, kv := range rcv.Env("grpc") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// proc is a running binary whose stdout and stderr go to a file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	port    int // its HTTP port (API for the producer, metrics for the worker), if any
	done    chan struct{}
	err     error // Wait's result, once done is closed
}

// start runs bin with args and exactly s.baseEnv() plus extra; the process is stopped at cleanup
// (SIGTERM, so it flushes its spans, then SIGKILL after 20 s).
func (s *stack) start(t *testing.T, name, bin string, args []string, extra map[string]string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{}), logPath: filepath.Join(t.TempDir(), name+".log")}
	env := s.baseEnv()
	for k, v := range extra {
		env[k] = v
	}
	p.cmd = exec.Command(bin, args...)
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
		p.stop()
		if t.Failed() {
			t.Logf("%s output (last lines):\n%s", p.name, tail(p.output(), 60))
		}
	})
	return p
}

// stop ends the process gracefully if it still runs.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// startWorker runs `worker run` on the default queue (the demo kinds' queue) and waits until it receives.
func (s *stack) startWorker(t *testing.T, extra map[string]string) *proc {
	t.Helper()
	port := testenv.FreePort(t)
	env := map[string]string{"PORT": strconv.Itoa(port), "PUBQ_WORKER_QUEUES": "default"}
	for k, v := range extra {
		env[k] = v
	}
	p := s.start(t, "worker", s.worker, []string{"run"}, env)
	p.port = port
	p.waitLog(t, `"worker started"`)
	return p
}

// startProducer runs the producer (no cron schedules) and waits until /readyz answers 200.
func (s *stack) startProducer(t *testing.T, extra map[string]string) *proc {
	t.Helper()
	port := testenv.FreePort(t)
	env := map[string]string{"PUBQ_API_TOKENS": apiToken, "PUBQ_SCHEDULES": "false"}
	for k, v := range extra {
		env[k] = v
	}
	p := s.start(t, "producer", s.producer, []string{"--addr", fmt.Sprintf("127.0.0.1:%d", port)}, env)
	p.port = port
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := http.Get(p.url("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("producer exited before it was ready (%v):\n%s", p.err, tail(p.output(), 40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("producer not ready within %v:\n%s", startTimeout, tail(p.output(), 40))
		}
	}
}

func (p *proc) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", p.port, path) }

func (p *proc) output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// waitLog waits until the output contains s, failing if the process exits first.
func (p *proc) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for !strings.Contains(p.output(), s) {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before logging %s:\n%s", p.name, p.err, s, tail(p.output(), 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %s within %v:\n%s", p.name, s, startTimeout, tail(p.output(), 40))
		}
	}
}

// wait returns the exit code, failing the test if the process runs past timeout.
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

// logLines returns the process's JSON log lines (other lines are skipped).
func (p *proc) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.output()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// enqueueResult is the API's answer to one job.
type enqueueResult struct {
	ID        string `json:"id"`
	Key       string `json:"key"`
	Kind      string `json:"kind"`
	Queue     string `json:"queue"`
	State     string `json:"state"`
	Duplicate bool   `json:"duplicate"`
}

// enqueue POSTs one job to the producer; traceparent, if not empty, is sent as the W3C header.
func (p *proc) enqueue(t *testing.T, kind, key, payload, traceparent string) enqueueResult {
	t.Helper()
	body := fmt.Sprintf(`{"kind":%q,"payload":%s}`, kind, payload)
	req, err := http.NewRequest(http.MethodPost, p.url("/v1/jobs"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Idempotency-Key", key)
	if traceparent != "" {
		req.Header.Set("Traceparent", traceparent)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/jobs %s: %d %s", key, resp.StatusCode, data)
	}
	var r enqueueResult
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("POST /v1/jobs %s: decoding %s: %v", key, data, err)
	}
	return r
}

// randomHex returns n random bytes in lower-case hex (trace ids: 16, span ids: 8).
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// metrics scrapes a Prometheus text endpoint into series → value, the series written
// name{label="value",…} with labels sorted by name.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %d %s", url, resp.StatusCode, body)
	}
	m, err := parseMetrics(body)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	return m
}

// parseMetrics reads the Prometheus text format (comments skipped, no timestamps expected).
func parseMetrics(body []byte) (map[string]float64, error) {
	out := map[string]float64{}
	for _, line := range bytes.Split(body, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		var name, labels, rest string
		if i := strings.IndexByte(s, '{'); i >= 0 {
			j := strings.LastIndexByte(s, '}')
			if j < i {
				return nil, fmt.Errorf("malformed line %q", s)
			}
			name, labels, rest = s[:i], s[i+1:j], strings.TrimSpace(s[j+1:])
		} else {
			var ok bool
			name, rest, ok = strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("malformed line %q", s)
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("no value in %q", s)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("value in %q: %w", s, err)
		}
		ls, err := parseLabels(labels)
		if err != nil {
			return nil, fmt.Errorf("labels in %q: %w", s, err)
		}
		out[series(name, ls)] = v
	}
	return out, nil
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; {
		k, after, ok := strings.Cut(s, "=")
		if !ok || len(after) == 0 || after[0] != '"' {
			return nil, fmt.Errorf("bad label at %q", s)
		}
		var val strings.Builder
		i := 1
		for ; i < len(after) && after[i] != '"'; i++ {
			if after[i] == '\\' && i+1 < len(after) {
				i++
				switch after[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(after[i])
				}
				continue
			}
			val.WriteByte(after[i])
		}
		if i >= len(after) {
			return nil, fmt.Errorf("unterminated value at %q", s)
		}
		out[strings.TrimSpace(k)] = val.String()
		s = strings.TrimLeft(after[i+1:], ", ")
	}
	return out, nil
}

// series is the canonical name of a series: name{a="x",b="y"} with labels sorted.
func series(name string, labels map[string]string) string {
	if len(labels) == 0 {
		return name
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, labels[k])
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// ctxT is a context cancelled when the test ends.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}
