package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv("TESTENV_HELPER"); mode != "" {
		orphanHelper(mode)
		return
	}
	Main(m)
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	for _, f := range []string{"go.work", "infra/emulator.sh", "infra/postgres.sh", "pkg/testenv/doc.go"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("RepoRoot() = %s, which has no %s: %v", root, f, err)
		}
	}
	if _, err := findUp(t.TempDir(), "no-such-file.pubq"); err == nil || !strings.Contains(err.Error(), "testenv: no no-such-file.pubq in") {
		t.Errorf("findUp for a missing file: err = %v, want a testenv error naming the file", err)
	}
}

func TestFreePort(t *testing.T) {
	port := FreePort(t)
	if port <= 0 || port > 65535 {
		t.Fatalf("FreePort() = %d", port)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("FreePort() = %d, but it cannot be bound: %v", port, err)
	}
	l.Close()
}

// namedTB stands in for a test whose name is chosen by the test.
type namedTB struct {
	testing.TB
	name string
}

func (n namedTB) Name() string { return n.name }
func (n namedTB) Helper()      {}

func TestProjectID(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	names := []string{
		"TestX",
		"TestOrders/UPPER case#01",
		"TestAVeryLongTestNameThatGoesOnAndOn/with_a_subtest_that_is_long_too",
		"Test--__--",
		"",
		"#/ /#",
		"Test123456789012345-",
	}
	seen := map[string]bool{}
	for _, name := range names {
		for range 200 {
			id := ProjectID(namedTB{TB: t, name: name})
			if !valid.MatchString(id) {
				t.Fatalf("ProjectID(%q) = %q: not a valid GCP project id", name, id)
			}
			if seen[id] {
				t.Fatalf("ProjectID(%q) returned %q twice", name, id)
			}
			seen[id] = true
		}
	}
	if id := ProjectID(namedTB{TB: t, name: "TestOrders/Retry"}); !strings.HasPrefix(id, "t-testorders-retry-") {
		t.Errorf("ProjectID = %q, want it to carry the test name", id)
	}
}

func TestProjectIDConcurrent(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				id := ProjectID(t)
				mu.Lock()
				if seen[id] {
					t.Errorf("duplicate project id %q", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// fatalTB records Fatal instead of failing the real test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// callFatal runs fn with a fatalTB on its own goroutine (Fatal ends it) and
// returns what was passed to Fatal, or "" if fn returned normally.
func callFatal(t *testing.T, fn func(tb testing.TB)) string {
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func TestLazyReportsFailureToEveryCaller(t *testing.T) {
	t.Parallel()
	var l lazy[string]
	calls := 0
	start := func() (string, error) {
		calls++
		return "", fmt.Errorf("testenv: the Pub/Sub emulator is not installed")
	}
	for i := range 3 {
		msg := callFatal(t, func(tb testing.TB) { l.get(tb, start) })
		if msg != "testenv: the Pub/Sub emulator is not installed" {
			t.Errorf("call %d: Fatal(%q), want the start error", i, msg)
		}
	}
	if calls != 1 {
		t.Errorf("start ran %d times, want once", calls)
	}
}

func TestServerStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := startServer("sleeper", filepath.Join(dir, "log"), syscall.SIGTERM, os.Environ(), "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.stop(); err != nil {
		t.Errorf("stop() = %v, want nil for a process that exits on SIGTERM", err)
	}
	if !processGone(s.cmd.Process.Pid) {
		t.Errorf("pid %d still runs after stop", s.cmd.Process.Pid)
	}
	if err := s.stop(); err != nil {
		t.Errorf("second stop() = %v, want nil", err)
	}
}

func TestServerStopKillsStubbornProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := startServer("stubborn", filepath.Join(dir, "log"), syscall.SIGTERM, os.Environ(),
		"bash", "-c", `trap "" TERM; echo trapped; while :; do sleep 0.1; done`)
	if err != nil {
		t.Fatal(err)
	}
	s.stopWait = 300 * time.Millisecond
	// The trap must be in place before the signal is sent.
	if err := s.waitReady(10*time.Second, func(log []byte) (bool, error) { return strings.Contains(string(log), "trapped"), nil }); err != nil {
		t.Fatal(err)
	}
	err = s.stop()
	if err == nil || !strings.Contains(err.Error(), "stubborn") || !strings.Contains(err.Error(), "was killed") {
		t.Errorf("stop() = %v, want an error saying it was killed", err)
	}
	if !processGone(s.cmd.Process.Pid) {
		t.Errorf("pid %d still runs after stop", s.cmd.Process.Pid)
	}
}

func TestServerWaitReadyFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := startServer("crasher", filepath.Join(dir, "crash.log"), syscall.SIGTERM, os.Environ(),
		"bash", "-c", "echo 'fatal: no config'; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	err = s.waitReady(10*time.Second, func([]byte) (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "crasher exited before it was ready (exit status 3)") ||
		!strings.Contains(err.Error(), "fatal: no config") {
		t.Errorf("waitReady on a crashing server = %v, want the exit status and the log tail", err)
	}

	s, err = startServer("sleeper", filepath.Join(dir, "sleep.log"), syscall.SIGTERM, os.Environ(), "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	err = s.waitReady(200*time.Millisecond, func([]byte) (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "sleeper was not ready after 200ms") || !strings.Contains(err.Error(), "its log is empty") {
		t.Errorf("waitReady on a server that never gets ready = %v, want a timeout error", err)
	}
	if !processGone(s.cmd.Process.Pid) {
		t.Errorf("pid %d still runs after a failed start", s.cmd.Process.Pid)
	}

	if _, err := startServer("ghost", filepath.Join(dir, "ghost.log"), syscall.SIGTERM, os.Environ(), "/nonexistent/ghost"); err == nil ||
		!strings.Contains(err.Error(), "testenv: starting ghost") {
		t.Errorf("startServer of a missing binary = %v, want a testenv error", err)
	}
}

// orphanHelper runs in a child test process: it starts a server, prints its
// pid and temp dir, and exits without stopping it, as a test binary killed by
// a timeout would.
func orphanHelper(mode string) {
	var s *server
	var err error
	switch mode {
	case "sleep":
		var dir string
		if dir, err = tempDir(); err == nil {
			s, err = startServer("orphan", filepath.Join(dir, "log"), syscall.SIGTERM, os.Environ(), "sleep", "300")
		}
	case "postgres":
		// As root this goes through setpriv, which must keep the signal.
		s, _, err = startPostgres()
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(s.cmd.Process.Pid, state.dir)
	os.Exit(0)
}

func TestServerDiesWithTestProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux-only")
	}
	for _, mode := range []string{"sleep", "postgres"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "TESTENV_HELPER="+mode)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			var pid int
			var dir string
			if _, err := fmt.Sscan(string(out), &pid, &dir); err != nil {
				t.Fatalf("helper printed %q, want a pid and a dir", out)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !processGone(pid) {
				if time.Now().After(deadline) {
					syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("server pid %d outlived the test process that started it", pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The dead binary's temp dir (a whole cluster for postgres) is
			// swept by the next binary that needs one.
			if _, err := os.Stat(dir); err != nil {
				t.Fatalf("the helper's temp dir: %v", err)
			}
			removeStaleTempDirs()
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				os.RemoveAll(dir)
				t.Errorf("the temp dir %s of a dead test binary was not swept (%v)", dir, err)
			}
		})
	}
}

// processGone reports whether pid no longer runs (absent or a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) != nil
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}
