package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/testenv"
)

// chromium finds a Chromium or Chrome binary: $PUBQ_CHROMIUM, else the usual names on PATH.
func chromium() string {
	if p := os.Getenv("PUBQ_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// artifactsDir is where screenshots go: $PUBQ_ARTIFACTS, else a fresh temp dir that outlives the test.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PUBQ_ARTIFACTS")
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "pubq-dashboard-artifacts-")
	} else {
		dir = filepath.Join(dir, "dashboard")
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// TestDashboardReplayInBrowser drives the real dashboard (served by `pubqctl dashboard`) in headless
// Chromium: log in, open the dead-letter view, replay a dead job through the confirmation page, and
// watch the job page until a real worker has run it to success.
func TestDashboardReplayInBrowser(t *testing.T) {
	bin := chromium()
	if bin == "" {
		t.Skip("no Chromium binary found (install the Debian package chromium, or set PUBQ_CHROMIUM to a Chrome/Chromium binary)")
	}
	t.Parallel()
	e := setupE2E(t)
	e.start(t, 5*time.Second)
	e.enqueue(t, "order-ui-1")
	e.enqueue(t, "order-ui-2")
	waitFor(t, 30*time.Second, "both jobs to be dead-lettered", func() bool {
		return e.state(t, "order-ui-1") == "dead" && e.state(t, "order-ui-2") == "dead"
	})

	// The dashboard, as an operator would start it.
	const token = "0123456789abcdef-browser-test"
	e.vars["PUBQ_DASHBOARD_TOKENS"] = "oncall:" + token
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	base := "http://" + addr
	dctx, stopDashboard := context.WithCancel(context.Background())
	vars := e.vars
	c := &cli{ctx: dctx, getenv: func(k string) string { return vars[k] }, stdout: &bytes.Buffer{}, stderr: &pubqtest.SyncBuffer{}}
	served := make(chan int, 1)
	go func() { served <- c.run([]string{"dashboard", "--addr", addr, "--jaeger", "http://127.0.0.1:16686"}) }()
	t.Cleanup(func() {
		stopDashboard()
		if code := <-served; code != 0 {
			t.Errorf("pubqctl dashboard exited %d", code)
		}
	})
	waitFor(t, 10*time.Second, "the dashboard to listen", func() bool {
		resp, err := http.Get(base + "/login")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})

	opts := append([]chromedp.ExecAllocatorOption{}, chromedp.DefaultExecAllocatorOptions[:]...)
	opts = append(opts, chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 90*time.Second)
	defer cancelTimeout()

	dir := artifactsDir(t)
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	location := func() string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Unauthenticated: the dead-letter view sends us to the login form; a wrong token is refused.
	do(chromedp.Navigate(base+"/dead"), chromedp.WaitVisible(chromedp.ID("token")))
	if loc := location(); !strings.Contains(loc, "/login?next=%2Fdead") {
		t.Fatalf("unauthenticated /dead went to %q, want the login form", loc)
	}
	do(chromedp.SendKeys(chromedp.ID("token"), "not-the-token"), chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.CSS("p.err")))
	shot("01-login-refused.png")
	if s := text("p.err"); !strings.Contains(s, "not valid") {
		t.Fatalf("refusal %q", s)
	}

	// Log in: back to the dead-letter view, which lists both jobs.
	do(chromedp.SetValue(chromedp.ID("token"), token), chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-key="order-ui-1"]`)))
	shot("02-dead-letters.png")
	if loc, s := location(), text("#jobs"); !strings.HasSuffix(loc, "/dead") || !strings.Contains(s, "order-ui-2") || !strings.Contains(s, "permanent") {
		t.Fatalf("dead-letter view at %q:\n%s", loc, s)
	}

	// Replay one job: the button leads to a confirmation (a dry run); nothing happens before confirming.
	e.handler.ok.Store(true)
	do(chromedp.Click(chromedp.CSS(`tr[data-key="order-ui-1"] button.replay`)), chromedp.WaitVisible(chromedp.ID("confirm")))
	shot("03-confirm.png")
	if s := text("#summary"); !strings.Contains(s, "would have replayed 1 of 1") {
		t.Fatalf("confirmation summary %q", s)
	}
	if e.state(t, "order-ui-1") != "dead" {
		t.Fatal("the job was replayed before the confirmation")
	}
	do(chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("flash")))
	shot("04-replayed.png")
	if s := text("#flash"); !strings.Contains(s, "Replayed 1 of 1") {
		t.Fatalf("flash after replay %q", s)
	}

	// The worker runs it; reloading the job page shows it succeeded, with both attempts and the audit.
	deadline := time.Now().Add(30 * time.Second)
	for {
		do(chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("state")))
		s := text("#state")
		if s == "succeeded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job page still says %q", s)
		}
		time.Sleep(300 * time.Millisecond)
	}
	shot("05-succeeded.png")
	if attempts, history := text("#attempts"), text("#history"); !strings.Contains(attempts, "downstream rejected") ||
		!strings.Contains(attempts, "succeeded") || !strings.Contains(history, "dashboard:oncall") {
		t.Errorf("job page attempts:\n%s\nhistory:\n%s", attempts, history)
	}
	if n := len(e.handler.executions("order-ui-1")); n != 2 {
		t.Errorf("%d executions of the replayed job, want 2", n)
	}
	if e.state(t, "order-ui-2") != "dead" {
		t.Error("the other dead job was replayed too")
	}

	// Bulk: tick the remaining job, replay the selection, confirm.
	do(chromedp.Navigate(base+"/dead"), chromedp.WaitVisible(chromedp.CSS(`tr[data-key="order-ui-2"]`)),
		chromedp.Click(chromedp.CSS(`tr[data-key="order-ui-2"] input[type=checkbox]`)),
		chromedp.Click(chromedp.ID("replay-selected")), chromedp.WaitVisible(chromedp.ID("confirm")))
	if s := text("#summary"); !strings.Contains(s, "would have replayed 1 of 1") {
		t.Fatalf("bulk confirmation summary %q", s)
	}
	do(chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("flash")))
	shot("06-bulk-replayed.png")
	waitFor(t, 30*time.Second, "the bulk-replayed job to succeed", func() bool { return e.state(t, "order-ui-2") == "succeeded" })

	// The queue overview counts what happened: two successes, two failed attempts and two deaths in the
	// window (both replayed since), none dead now.
	do(chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-queue="default"]`)))
	shot("07-overview.png")
	if s := text(`tr[data-queue="default"]`); strings.Join(strings.Fields(s), " ") != "default 0 0 0 0 0 — 2 0.03 2 2 0" {
		t.Errorf("overview row: %q", s)
	}
}
