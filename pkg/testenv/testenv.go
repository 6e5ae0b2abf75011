package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tempPrefix names this package's directories under os.TempDir, so stale ones
// left by killed test binaries can be found and removed.
const tempPrefix = "pubq-testenv-"

// state is what this test binary started; Main tears it down.
var state struct {
	mu      sync.Mutex
	dir     string   // per-binary temp dir: logs, clusters, built binaries
	lock    *os.File // flock on dir/owner.lock while this process lives
	servers []*server
	// setEmulatorHost is true when Emulator set PUBSUB_EMULATOR_HOST itself.
	setEmulatorHost bool
}

// Main runs the tests, stops the servers this test binary started, and exits
// with the tests' code. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// shutdown stops every server started so far and removes the temp dir.
func shutdown() error {
	state.mu.Lock()
	defer state.mu.Unlock()
	var errs []error
	// Reverse order: what started last may depend on what started first.
	for i := len(state.servers) - 1; i >= 0; i-- {
		if err := state.servers[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	state.servers = nil
	if state.setEmulatorHost {
		os.Unsetenv("PUBSUB_EMULATOR_HOST")
		state.setEmulatorHost = false
	}
	if state.dir != "" {
		removeClusterDir(filepath.Join(state.dir, "pg-run"))
		if err := os.RemoveAll(state.dir); err != nil {
			errs = append(errs, fmt.Errorf("testenv: removing %s: %w", state.dir, err))
		}
		state.dir = ""
		state.lock.Close()
		state.lock = nil
	}
	return errors.Join(errs...)
}

func register(s *server) {
	state.mu.Lock()
	defer state.mu.Unlock()
	state.servers = append(state.servers, s)
}

// tempDir returns this test binary's temp dir, creating it on first use.
func tempDir() (string, error) {
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.dir != "" {
		return state.dir, nil
	}
	removeStaleTempDirs()
	dir, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		return "", fmt.Errorf("testenv: creating temp dir: %w", err)
	}
	// A root test process runs PostgreSQL as the postgres user, which must
	// be able to traverse this directory to reach its cluster.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	// Held until this process ends, however it ends: a sweeper that can take
	// the lock knows the owner is gone.
	lock, err := os.Create(filepath.Join(dir, "owner.lock"))
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return "", fmt.Errorf("testenv: locking %s: %w", lock.Name(), err)
	}
	state.lock = lock
	state.dir = dir
	return dir, nil
}

// removeStaleTempDirs deletes the temp dirs of test binaries that died
// without running Main's teardown (timeouts, Ctrl-C): a throwaway cluster
// is tens of megabytes. Their servers died with them (parent-death signal).
func removeStaleTempDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range matches {
		lock, err := os.Open(filepath.Join(dir, "owner.lock"))
		if err != nil {
			// Being created by another binary right now, or not ours.
			if fi, serr := os.Stat(dir); serr == nil && time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(dir)
			}
			continue
		}
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			removeClusterDir(filepath.Join(dir, "pg-run"))
			os.RemoveAll(dir)
		}
		lock.Close()
	}
}

// RepoRoot returns the repository root: the nearest directory at or above the
// working directory that holds go.work.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	root, err := repoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	return findUp(wd, "go.work")
}

// findUp returns the first directory from dir upwards that contains name.
func findUp(dir, name string) (string, error) {
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("testenv: no %s in %s or any parent directory", name, dir)
		}
		d = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on. Another
// process may still take it before the caller binds it.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testenv: finding a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("testenv: finding a free port: %w", err)
	}
	return port, nil
}

// startTimeout bounds each server start: $PUBQ_START_TIMEOUT seconds, as for
// the infra scripts, default 60 (the machines are shared and often busy).
func startTimeout() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("PUBQ_START_TIMEOUT")); err == nil && v > 0 {
		return time.Duration(v) * time.Second
	}
	return 60 * time.Second
}

// lazy is a value computed once per test binary; a failure is kept and
// reported to every caller.
type lazy[T any] struct {
	once sync.Once
	val  T
	err  error
}

func (l *lazy[T]) get(tb testing.TB, f func() (T, error)) T {
	tb.Helper()
	l.once.Do(func() { l.val, l.err = f() })
	if l.err != nil {
		tb.Fatal(l.err)
	}
	return l.val
}
