package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The infra scripts are tested as a developer runs them: as processes, with
// their state in a temp PUBQ_RUN_DIR. Not parallel: each starts real servers.

type scriptResult struct {
	stdout, stderr string
	code           int
}

func runScript(t *testing.T, runDir string, env []string, script string, args ...string) scriptResult {
	t.Helper()
	cmd := exec.Command(filepath.Join(RepoRoot(t), "infra", script), args...)
	cmd.Env = append(os.Environ(), "PUBQ_RUN_DIR="+runDir)
	// The scripts must not pick up a stack the developer runs.
	cmd.Env = append(cmd.Env, "PUBSUB_PORT=", "PG_PORT=")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %s %v: %v", script, args, err)
	}
	r := scriptResult{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
	t.Logf("%s %s: exit %d\n%s", script, strings.Join(args, " "), r.code, r.stderr)
	return r
}

// stopOnCleanup stops what the test's scripts started even if it fails midway.
func stopOnCleanup(t *testing.T, runDir string) {
	t.Cleanup(func() { runScript(t, runDir, nil, "stack.sh", "down") })
}

var (
	emulatorLine = regexp.MustCompile(`^export PUBSUB_EMULATOR_HOST=127\.0\.0\.1:(\d+)$`)
	postgresLine = regexp.MustCompile(`^export PUBQ_DATABASE_URL=(postgres://postgres@127\.0\.0\.1:(\d+)/postgres\?sslmode=disable)$`)
)

// match checks that out is exactly one line matching re and returns its groups.
func match(t *testing.T, re *regexp.Regexp, out string) []string {
	t.Helper()
	m := re.FindStringSubmatch(strings.TrimSuffix(out, "\n"))
	if m == nil || !strings.HasSuffix(out, "\n") {
		t.Fatalf("stdout = %q, want one line matching %s", out, re)
	}
	return m
}

func portOpen(port string) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func TestEmulatorScript(t *testing.T) {
	runDir := t.TempDir()
	stopOnCleanup(t, runDir)
	want := strconv.Itoa(FreePort(t))

	r := runScript(t, runDir, []string{"PUBSUB_PORT=" + want}, "emulator.sh", "start")
	if r.code != 0 {
		t.Fatalf("start: exit %d", r.code)
	}
	if port := match(t, emulatorLine, r.stdout)[1]; port != want {
		t.Fatalf("started on port %s, want PUBSUB_PORT=%s", port, want)
	}
	resp, err := http.Get("http://127.0.0.1:" + want + "/")
	if err != nil {
		t.Fatalf("the emulator does not answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != "Ok" {
		t.Errorf("GET / = %q, want the emulator's Ok", body)
	}
	pid, err := os.ReadFile(filepath.Join(runDir, "emulator.pid"))
	if err != nil {
		t.Fatal(err)
	}

	// start again: the same emulator, not a second one.
	r = runScript(t, runDir, nil, "emulator.sh", "start")
	if r.code != 0 || match(t, emulatorLine, r.stdout)[1] != want || !strings.Contains(r.stderr, "already running") {
		t.Errorf("second start: exit %d, stdout %q, want the running emulator", r.code, r.stdout)
	}
	r = runScript(t, runDir, nil, "emulator.sh", "status")
	if r.code != 0 || match(t, emulatorLine, r.stdout)[1] != want {
		t.Errorf("status: exit %d, stdout %q", r.code, r.stdout)
	}

	r = runScript(t, runDir, nil, "emulator.sh", "stop")
	if r.code != 0 || r.stdout != "" {
		t.Errorf("stop: exit %d, stdout %q", r.code, r.stdout)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(pid))); !processGone(n) {
		t.Errorf("emulator pid %d still runs after stop", n)
	}
	if portOpen(want) {
		t.Errorf("port %s still open after stop", want)
	}
	if r := runScript(t, runDir, nil, "emulator.sh", "stop"); r.code != 0 {
		t.Errorf("stop when stopped: exit %d, want 0", r.code)
	}
	if r := runScript(t, runDir, nil, "emulator.sh", "status"); r.code != 3 || r.stdout != "" {
		t.Errorf("status when stopped: exit %d, stdout %q, want 3 and nothing", r.code, r.stdout)
	}
}

func TestEmulatorScriptFailures(t *testing.T) {
	runDir := t.TempDir()
	stopOnCleanup(t, runDir)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	fake := fakeEmulator(t, `echo "still warming up"; exec sleep 300`)

	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		code   int
		stderr string
	}{
		{"not installed", []string{"PUBSUB_EMULATOR_BIN=/nonexistent/emu"}, []string{"start"}, 1, "Pub/Sub emulator not found at /nonexistent/emu"},
		{"no java", []string{"JAVA_HOME=/nonexistent/jdk"}, []string{"start"}, 1, "JAVA_HOME=/nonexistent/jdk has no bin/java"},
		{"port in use", []string{"PUBSUB_PORT=" + busyPort}, []string{"start"}, 1, "something already listens on 127.0.0.1:" + busyPort},
		{"bad port", []string{"PUBSUB_PORT=http"}, []string{"start"}, 1, "PUBSUB_PORT=http is not a TCP port number"},
		{"timeout", []string{"PUBSUB_EMULATOR_BIN=" + fake, "PUBQ_START_TIMEOUT=2"}, []string{"start"}, 1, "not ready after 2s"},
		{"usage", nil, []string{"restart"}, 2, "usage:"},
		{"no command", nil, nil, 2, "usage:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runScript(t, runDir, tc.env, "emulator.sh", tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) || r.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, no stdout, stderr containing %q", r.code, r.stdout, r.stderr, tc.code, tc.stderr)
			}
		})
	}
	// The timed-out fake must have been killed, and its log shown.
	r := runScript(t, runDir, []string{"PUBSUB_EMULATOR_BIN=" + fake, "PUBQ_START_TIMEOUT=1"}, "emulator.sh", "start")
	if !strings.Contains(r.stderr, "still warming up") {
		t.Errorf("the timeout error does not show the log tail: %q", r.stderr)
	}
	if pid, err := os.ReadFile(filepath.Join(runDir, "emulator.pid")); err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(pid))); n > 0 && !processGone(n) {
			t.Errorf("the emulator that timed out (pid %d) still runs", n)
		}
	}
	if r := runScript(t, runDir, nil, "emulator.sh", "status"); r.code != 3 {
		t.Errorf("status after failed starts: exit %d, want 3", r.code)
	}
}

func TestPostgresScript(t *testing.T) {
	// t.TempDir is 0700 and root-owned when tests run as root: the script must
	// notice that the postgres user cannot reach it and put the cluster elsewhere.
	runDir := t.TempDir()
	stopOnCleanup(t, runDir)

	r := runScript(t, runDir, nil, "postgres.sh", "start")
	if r.code != 0 {
		t.Fatalf("start: exit %d", r.code)
	}
	m := match(t, postgresLine, r.stdout)
	dsn, port := m[1], m[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting to the started cluster: %v", err)
	}
	var version, fsync string
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num'), current_setting('fsync')").Scan(&version, &fsync); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if !strings.HasPrefix(version, "15") || fsync != "off" {
		t.Errorf("server_version_num %s, fsync %s; want 15xxxx and off", version, fsync)
	}
	clusterDir, err := os.ReadFile(filepath.Join(runDir, "pg.dir"))
	if err != nil {
		t.Fatal(err)
	}
	dir := strings.TrimSpace(string(clusterDir))
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Errorf("pg.dir names %s, which holds no cluster: %v", dir, err)
	}

	r = runScript(t, runDir, nil, "postgres.sh", "start")
	if r.code != 0 || match(t, postgresLine, r.stdout)[2] != port {
		t.Errorf("second start: exit %d, stdout %q, want the running cluster", r.code, r.stdout)
	}
	if r := runScript(t, runDir, nil, "postgres.sh", "status"); r.code != 0 || match(t, postgresLine, r.stdout)[1] != dsn {
		t.Errorf("status: exit %d, stdout %q", r.code, r.stdout)
	}

	if r := runScript(t, runDir, nil, "postgres.sh", "stop"); r.code != 0 || r.stdout != "" {
		t.Errorf("stop: exit %d, stdout %q", r.code, r.stdout)
	}
	if portOpen(port) {
		t.Errorf("port %s still open after stop", port)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the throwaway cluster %s survived stop (%v)", dir, err)
	}
	if r := runScript(t, runDir, nil, "postgres.sh", "stop"); r.code != 0 {
		t.Errorf("stop when stopped: exit %d, want 0", r.code)
	}
	if r := runScript(t, runDir, nil, "postgres.sh", "status"); r.code != 3 || r.stdout != "" {
		t.Errorf("status when stopped: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := runScript(t, runDir, []string{"PG_BIN=/nonexistent/bin"}, "postgres.sh", "start"); r.code != 1 ||
		!strings.Contains(r.stderr, "/nonexistent/bin/initdb not found") {
		t.Errorf("start without PostgreSQL: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestStackScript(t *testing.T) {
	runDir := t.TempDir()
	stopOnCleanup(t, runDir)

	r := runScript(t, runDir, nil, "stack.sh", "up")
	if r.code != 0 {
		t.Fatalf("up: exit %d", r.code)
	}
	// What `eval "$(infra/stack.sh up)"` sees: both exports, nothing else.
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("up printed %q, want two export lines", r.stdout)
	}
	emu := match(t, emulatorLine, lines[0]+"\n")[1]
	pg := match(t, postgresLine, lines[1]+"\n")[2]
	if !portOpen(emu) || !portOpen(pg) {
		t.Errorf("after up: emulator port %s open %v, postgres port %s open %v", emu, portOpen(emu), pg, portOpen(pg))
	}

	// The output really evaluates in a shell.
	out, err := exec.Command("bash", "-c", r.stdout+`printf '%s %s' "$PUBSUB_EMULATOR_HOST" "$PUBQ_DATABASE_URL"`).Output()
	if want := fmt.Sprintf("127.0.0.1:%s postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", emu, pg); err != nil || string(out) != want {
		t.Errorf("eval of up's output gives %q (%v), want %q", out, err, want)
	}

	if r := runScript(t, runDir, nil, "stack.sh", "env"); r.code != 0 || r.stdout != strings.Join(lines, "\n")+"\n" {
		t.Errorf("env: exit %d, stdout %q, want up's lines", r.code, r.stdout)
	}
	if r := runScript(t, runDir, nil, "stack.sh", "down"); r.code != 0 {
		t.Errorf("down: exit %d", r.code)
	}
	if portOpen(emu) || portOpen(pg) {
		t.Errorf("after down: emulator port open %v, postgres port open %v", portOpen(emu), portOpen(pg))
	}
	if r := runScript(t, runDir, nil, "stack.sh", "env"); r.code != 3 || r.stdout != "" {
		t.Errorf("env when down: exit %d, stdout %q, want 3 and nothing", r.code, r.stdout)
	}
	if r := runScript(t, runDir, nil, "stack.sh", "down"); r.code != 0 {
		t.Errorf("down when down: exit %d, want 0", r.code)
	}
	if r := runScript(t, runDir, nil, "stack.sh", "start"); r.code != 2 || !strings.Contains(r.stderr, "usage:") {
		t.Errorf("unknown command: exit %d, stderr %q", r.code, r.stderr)
	}
}
