package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// proc is a running producer binary.
type proc struct {
	cmd  *exec.Cmd
	out  *pubqtest.SyncBuffer
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// startProducer runs the binary with exactly env (nothing inherited but PATH and HOME).
func startProducer(t *testing.T, env map[string]string, args ...string) *proc {
	t.Helper()
	bin := testenv.BuildBinary(t, "services/producer")
	p := &proc{cmd: exec.Command(bin, args...), out: &pubqtest.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Dir = t.TempDir() // no queues.yaml in the working directory unless PUBQ_QUEUES names one
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("producer output:\n%s", p.out)
		}
	})
	return p
}

// wait returns the exit code, failing the test if the process runs past timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("the producer still runs after %v", timeout)
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

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second) // a -race build starts slowly on a busy machine
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("the producer exited before it was ready: %v", p.err)
		default:
		}
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the producer never became ready")
}

// pubsubSetup creates every queue's topic in a fresh project and a subscription on the critical queue.
func pubsubSetup(t *testing.T, qs *queue.Config) (project string, sub *pubsub.Subscriber, client *pubsub.Client) {
	t.Helper()
	testenv.Emulator(t)
	project = testenv.ProjectID(t)
	ctx := context.Background()
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	for _, q := range qs.Queues {
		if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/" + project + "/topics/" + q.Topic}); err != nil {
			t.Fatalf("creating topic %s: %v", q.Topic, err)
		}
	}
	crit, _ := qs.Queue("critical")
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:               "projects/" + project + "/subscriptions/test-critical",
		Topic:              "projects/" + project + "/topics/" + crit.Topic,
		AckDeadlineSeconds: 10,
	}); err != nil {
		t.Fatal(err)
	}
	return project, client.Subscriber("test-critical"), client
}

func TestProducerPublishesJob(t *testing.T) {
	qpath := filepath.Join(testenv.RepoRoot(t), "queues.yaml")
	qs, err := queue.Load(qpath)
	if err != nil {
		t.Fatal(err)
	}
	project, sub, _ := pubsubSetup(t, qs)
	dsn := testenv.Postgres(t)
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startProducer(t, map[string]string{
		"PUBQ_PROJECT":         project,
		"PUBQ_QUEUES":          qpath,
		"PUBQ_DATABASE_URL":    dsn,
		"PUBQ_API_TOKENS":      "dev-token," + goodToken, // a short one is accepted with a warning
		"PUBQ_MIGRATE":         "true",
		"PUBQ_SCHEDULES":       "false",
		"PUBSUB_EMULATOR_HOST": os.Getenv("PUBSUB_EMULATOR_HOST"),
		"OTEL_TRACES_EXPORTER": "console", // spans on stderr, and googclient_traceparent on the message
	}, "--addr", fmt.Sprintf("127.0.0.1:%d", port))
	p.waitReady(t, base)

	post := func(auth string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/jobs", strings.NewReader(`{"kind":"payment.capture","payload":{"order": 7, "card": "sentinel-card-4f2a"}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "order-7/capture")
		req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	if resp, body := post(""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: %d %s", resp.StatusCode, body)
	}
	resp, body := post("Bearer " + goodToken)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("enqueue: %d %s", resp.StatusCode, body)
	}
	var res publish.Result
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var got *pubsub.Message
	err = sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		if got == nil {
			got = m
		}
		cancel()
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got == nil {
		t.Fatal("no message was published to the critical topic")
	}
	if string(got.Data) != `{"order":7,"card":"sentinel-card-4f2a"}` {
		t.Errorf("data = %s", got.Data)
	}
	a := got.Attributes
	if a[job.AttrKind] != "payment.capture" || a[job.AttrKey] != "order-7/capture" || a[job.AttrVersion] != "1" || a[job.AttrID] != res.ID || res.ID == "" {
		t.Errorf("attributes = %v, want the job's envelope (id %s)", a, res.ID)
	}
	if at, err := time.Parse(time.RFC3339Nano, a[job.AttrEnqueuedAt]); err != nil || time.Since(at) > time.Minute {
		t.Errorf("%s = %q", job.AttrEnqueuedAt, a[job.AttrEnqueuedAt])
	}
	if tp := a[job.AttrPubSubTraceParent]; !strings.Contains(tp, "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Errorf("%s = %q: the message is not in the caller's trace", job.AttrPubSubTraceParent, tp)
	}
	if _, err := job.Decode(got.Data, a, got.PublishTime); err != nil {
		t.Errorf("the worker could not decode the message: %v", err)
	}

	mresp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metrics), "pubq_jobs_enqueued_total{") || !strings.Contains(string(metrics), `"critical"`) {
		t.Errorf("/metrics has no enqueue count for the critical queue:\n%.2000s", metrics)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	out := p.out.String()
	for _, want := range []string{"producer listening", "shutting down", "producer stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	if !strings.Contains(out, "token 1 of 2 is shorter than 16 bytes") {
		t.Error("no warning about the short token")
	}
	// A text sentinel: digits such as the old "1999" turn up in log timestamps by chance.
	if strings.Contains(out, goodToken) || strings.Contains(out, "dev-token") || strings.Contains(out, "sentinel-card-4f2a") {
		t.Errorf("a token or the payload reached the log:\n%s", out)
	}
}

func TestProducerInsecureMode(t *testing.T) {
	testenv.Emulator(t)
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startProducer(t, map[string]string{
		"PUBQ_PROJECT":          testenv.ProjectID(t),
		"PUBQ_QUEUES":           filepath.Join(testenv.RepoRoot(t), "queues.yaml"),
		"PUBQ_DATABASE_URL":     testenv.Postgres(t),
		"PUBQ_INSECURE_NO_AUTH": "true",
		"PUBQ_MIGRATE":          "true",
		"PUBQ_SCHEDULES":        "false",
		"PUBSUB_EMULATOR_HOST":  os.Getenv("PUBSUB_EMULATOR_HOST"),
		"PORT":                  fmt.Sprint(port),
	})
	p.waitReady(t, base)
	if !strings.Contains(p.out.String(), "AUTHENTICATION IS OFF") {
		t.Errorf("no warning that authentication is off")
	}
	resp, err := http.Post(base+"/v1/jobs", "application/json", strings.NewReader(`{"kind":"email.send","key":"dev-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("enqueue without a token in insecure mode: %d", resp.StatusCode)
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT", code)
	}
}

func TestProducerRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"no project", map[string]string{"PUBQ_DATABASE_URL": "postgres://127.0.0.1/x", "PUBQ_API_TOKENS": goodToken},
			[]string{"PUBQ_PROJECT is required"}},
		{"nothing", nil, []string{"PUBQ_PROJECT is required", "PUBQ_DATABASE_URL is required", "PUBQ_API_TOKENS is required", "PUBQ_QUEUES"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"PUBQ_QUEUES": filepath.Join(testenv.RepoRoot(t), "queues.yaml")}
			if tc.env == nil {
				env = map[string]string{}
			}
			for k, v := range tc.env {
				env[k] = v
			}
			p := startProducer(t, env)
			if code := p.wait(t, 30*time.Second); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
			out := p.out.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "producer listening") {
				t.Error("it started anyway")
			}
		})
	}
}

func TestProducerDrainsOnSIGTERM(t *testing.T) {
	qpath := filepath.Join(testenv.RepoRoot(t), "queues.yaml")
	qs, err := queue.Load(qpath)
	if err != nil {
		t.Fatal(err)
	}
	project, sub, _ := pubsubSetup(t, qs)
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startProducer(t, map[string]string{
		"PUBQ_PROJECT":          project,
		"PUBQ_QUEUES":           qpath,
		"PUBQ_DATABASE_URL":     testenv.Postgres(t),
		"PUBQ_API_TOKENS":       goodToken,
		"PUBQ_MIGRATE":          "true",
		"PUBQ_SCHEDULES":        "false",
		"PUBQ_SHUTDOWN_TIMEOUT": "20s",
		"PUBSUB_EMULATOR_HOST":  os.Getenv("PUBSUB_EMULATOR_HOST"),
	}, "--addr", fmt.Sprintf("127.0.0.1:%d", port))
	p.waitReady(t, base)

	// A request whose body is still on its way when SIGTERM arrives must be answered, and its job
	// published before the process exits.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/jobs", pr)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+goodToken)
	type result struct {
		status int
		body   string
		err    error
	}
	answered := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- result{status: resp.StatusCode, body: string(b)}
	}()
	time.Sleep(500 * time.Millisecond) // the headers go out; the handler waits for the body
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.out.String(), "shutting down"); {
		if time.Now().After(deadline) {
			t.Fatal("the producer did not start shutting down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("a new connection was accepted while draining")
	}
	if _, err := io.WriteString(pw, `{"kind":"payment.capture","key":"late-1","payload":{"n":1}}`); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-answered
	if r.err != nil || r.status != http.StatusAccepted {
		t.Fatalf("the request in flight got %d %q (%v), want 202", r.status, r.body, r.err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var key string
	_ = sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		key = m.Attributes[job.AttrKey]
		cancel()
	})
	if key != "late-1" {
		t.Fatalf("the job enqueued while draining was not published before exit (got key %q)", key)
	}
}
