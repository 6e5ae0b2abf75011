package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"go.opentelemetry.io/otel/codes"

	"github.com/pubq/pubq/pkg/telemetry/otlptest"
	"github.com/pubq/pubq/pkg/testenv"
)

// TestInteropTraces publishes jobs from outside pubq, the way other services do, and checks that the
// worker's handler span joins the publisher's trace.
func TestInteropTraces(t *testing.T) {
	rcv := otlptest.Start(t)
	s := newStack(t)
	s.startWorker(t, otelEnv(rcv, workerService))

	t.Run("NodeClientWithTracing", func(t *testing.T) {
		dir := nodeModules(t)
		key := "e2e-node-" + randomHex(t, 4)
		cmd := exec.Command("node", filepath.Join(dir, "publish.js"))
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
			"PUBSUB_EMULATOR_HOST=" + os.Getenv("PUBSUB_EMULATOR_HOST"),
			"PUBQ_PROJECT=" + s.project, "PUBQ_TOPIC=pubq-default",
			"PUBQ_KIND=demo.record", "PUBQ_KEY=" + key, "PUBQ_PAYLOAD={\"note\":\"from node\"}",
			"OTLP_ENDPOINT=" + rcv.HTTPEndpoint(),
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := runWithTimeout(cmd, 3*time.Minute); err != nil {
			t.Fatalf("node publish.js: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
		var out struct {
			TraceID   string `json:"trace_id"`
			SpanID    string `json:"span_id"`
			MessageID string `json:"message_id"`
		}
		if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &out); err != nil || len(out.TraceID) != 32 {
			t.Fatalf("publish.js printed %q (%v); stderr:\n%s", stdout.String(), err, stderr.String())
		}
		spans := rcv.WaitFor(t, spanWait, func(spans []otlptest.Span) bool {
			return received("demo.record", key, 1, 4)(spans)
		})
		h := handlerSpans(spans, "demo.record", key)[0]
		if h.TraceID != out.TraceID {
			t.Fatalf("handler span in trace %s, want the Node publisher's trace %s\n%s", h.TraceID, out.TraceID, otlptest.Summary(otlptest.InTrace(spans, h.TraceID)))
		}
		// handler ← process ← subscribe (Go client, worker) ← create (Node client) ← the Node span.
		top := assertAncestry(t, byID(spans), h,
			step{"pubq job demo.record", workerService},
			step{processSpan, workerService},
			step{subscribeSpan, workerService},
			step{createSpan, "node-publisher"},
			step{"node enqueue", "node-publisher"},
		)
		if top.SpanID != out.SpanID || top.ParentSpanID != "" {
			t.Errorf("the Node span is %s (parent %q), publish.js reported %s as a root", top.SpanID, top.ParentSpanID, out.SpanID)
		}
		if h.Attributes["messaging.message.id"] != out.MessageID || h.Status.Code == codes.Error {
			t.Errorf("handler span: message id %q status %+v, want %s and no error", h.Attributes["messaging.message.id"], h.Status, out.MessageID)
		}
	})

	t.Run("PlainTraceparentWithoutClientTracing", func(t *testing.T) {
		ctx := ctxT(t)
		client, err := pubsub.NewClient(ctx, s.project) // no EnableOpenTelemetryTracing: no googclient_traceparent
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		traceID, parent := randomHex(t, 16), randomHex(t, 8)
		key := "e2e-plain-" + randomHex(t, 4)
		pub := client.Publisher("pubq-default")
		defer pub.Stop()
		id, err := pub.Publish(ctx, &pubsub.Message{Data: []byte(`{"note":"plain"}`), Attributes: map[string]string{
			"pubq_kind": "demo.record", "pubq_key": key,
			"traceparent": "00-" + traceID + "-" + parent + "-01", "tracestate": "vendor=e2e",
		}}).Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		spans := rcv.WaitFor(t, spanWait, func(spans []otlptest.Span) bool {
			return len(handlerSpans(spans, "demo.record", key)) == 1 && len(processSpansOf(spans, id)) == 1
		})
		h := handlerSpans(spans, "demo.record", key)[0]
		if h.TraceID != traceID || h.ParentSpanID != parent {
			t.Fatalf("handler span %s/%s parent %s, want a child of the traceparent attribute's %s/%s", h.TraceID, h.SpanID, h.ParentSpanID, traceID, parent)
		}
		// The client's own receive spans are in a trace of their own; the handler links to its process span.
		proc := processSpansOf(spans, id)[0]
		if proc.TraceID == traceID {
			t.Errorf("the process span is in the publisher's trace; the message had no googclient_traceparent")
		}
		if !linksTo(h, proc, "") {
			t.Errorf("handler span links %+v, want a link to the process span %s/%s", h.Links, proc.TraceID, proc.SpanID)
		}
		if len(children(spans, h.SpanID)) == 0 {
			t.Errorf("no SQL spans under the handler span")
		}
	})
}

// processSpansOf returns the worker's process spans for the message with this id.
func processSpansOf(spans []otlptest.Span, messageID string) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range otlptest.Named(spans, processSpan) {
		if s.Attributes["messaging.message.id"] == messageID {
			out = append(out, s)
		}
	}
	return out
}

// nodeModules installs tests/e2e/testdata/node's locked dependencies with `npm ci` into
// <repo>/.tools/node/e2e-<lockfile hash>/ (git-ignored), once per lock file: later runs reuse it. It
// returns that directory, which also holds a copy of the scripts. npm failing fails the test with npm's
// output: CI has npm and the registry, so a skip would hide a broken interop test.
func nodeModules(t *testing.T) string {
	t.Helper()
	src := filepath.Join(testenv.RepoRoot(t), "tests", "e2e", "testdata", "node")
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	dir := filepath.Join(testenv.RepoRoot(t), ".tools", "node", "e2e-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Test binaries of other runs may install at the same time: one at a time per directory.
	lk, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close() // closing releases the lock
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	done := filepath.Join(dir, ".installed")
	if _, err := os.Stat(done); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@google-cloud", "pubsub")); err == nil {
			return dir
		}
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatalf("npm is needed for the Node.js interop test: %v", err)
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := runWithTimeout(cmd, 8*time.Minute); err != nil {
		t.Fatalf("npm ci in %s failed: %v\n%s", dir, err, out.String())
	}
	if err := os.WriteFile(done, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("installed the Node.js publisher's dependencies into %s:\n%s", dir, strings.TrimSpace(out.String()))
	return dir
}

// runWithTimeout runs cmd, killing it after d.
func runWithTimeout(cmd *exec.Cmd, d time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		return context.DeadlineExceeded
	}
}
