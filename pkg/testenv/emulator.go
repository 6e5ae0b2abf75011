package testenv

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var emulator lazy[string]

// Emulator returns the host:port of a Pub/Sub emulator: $PUBSUB_EMULATOR_HOST
// if set, else one started for this test binary (once). It sets
// PUBSUB_EMULATOR_HOST process-wide, so pubsub.NewClient and child processes
// use the emulator. The test fails if no emulator can be started.
func Emulator(tb testing.TB) string {
	tb.Helper()
	return emulator.get(tb, func() (string, error) {
		if host := os.Getenv("PUBSUB_EMULATOR_HOST"); host != "" {
			return host, checkEmulatorHost(host)
		}
		s, port, err := startEmulator()
		if err != nil {
			return "", err
		}
		register(s)
		host := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		state.mu.Lock()
		defer state.mu.Unlock()
		if err := os.Setenv("PUBSUB_EMULATOR_HOST", host); err != nil {
			return "", fmt.Errorf("testenv: %w", err)
		}
		state.setEmulatorHost = true
		return host, nil
	})
}

// startEmulator runs infra/emulator.sh in the foreground on a free port,
// retrying with another port if one was taken before the emulator bound it.
// extraEnv is appended to the environment (tests use it to break things).
func startEmulator(extraEnv ...string) (*server, int, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, 0, err
	}
	dir, err := tempDir()
	if err != nil {
		return nil, 0, err
	}
	script := filepath.Join(root, "infra", "emulator.sh")
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, 0, err
		}
		env := append(os.Environ(), "PUBSUB_PORT="+strconv.Itoa(port))
		env = append(env, extraEnv...)
		logPath := filepath.Join(dir, fmt.Sprintf("emulator-%d.log", attempt))
		s, err := startServer("the Pub/Sub emulator", logPath, syscall.SIGTERM, env, "bash", script, "run")
		if err != nil {
			return nil, 0, err
		}
		ready := []byte(fmt.Sprintf("Server started, listening on %d", port))
		err = s.waitReady(startTimeout(), func(log []byte) (bool, error) {
			// The emulator hangs instead of exiting when it cannot bind.
			if bytes.Contains(log, []byte("BindException")) {
				return false, errRetry
			}
			return bytes.Contains(log, ready) && dialable(port), nil
		})
		if err == nil {
			return s, port, nil
		}
		if err != errRetry {
			return nil, 0, err
		}
		lastErr = fmt.Errorf("testenv: the Pub/Sub emulator could not bind port %d%s", port, s.logTail())
	}
	return nil, 0, lastErr
}

// checkEmulatorHost fails fast, with the cause, when the emulator the
// environment names is not there, instead of each test timing out in RPCs.
func checkEmulatorHost(host string) error {
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		return fmt.Errorf("testenv: PUBSUB_EMULATOR_HOST=%s does not accept connections (unset it to start an emulator per test binary): %w", host, err)
	}
	c.Close()
	return nil
}

func dialable(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

var projectIDs struct {
	mu   sync.Mutex
	seen map[string]bool
}

// ProjectID returns a Pub/Sub project id unique to this call, so tests that
// share an emulator never see each other's topics and subscriptions. It is a
// valid GCP project id (6–30 characters: lowercase letters, digits and
// hyphens, starting with a letter) that includes part of the test's name.
func ProjectID(tb testing.TB) string {
	tb.Helper()
	projectIDs.mu.Lock()
	defer projectIDs.mu.Unlock()
	if projectIDs.seen == nil {
		projectIDs.seen = make(map[string]bool)
	}
	for {
		// Random, not a counter: test binaries of other packages may share
		// the same emulator through PUBSUB_EMULATOR_HOST.
		id := "t-" + slug(tb.Name(), '-', 17) + randomSuffix(10)
		if !projectIDs.seen[id] {
			projectIDs.seen[id] = true
			return id
		}
	}
}

// slug lowercases name, keeps [a-z0-9], turns every other run into sep,
// cuts it to at most max characters and ends it with sep (empty if nothing
// is left).
func slug(name string, sep byte, max int) string {
	var b strings.Builder
	pendingSep := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if pendingSep && b.Len() > 0 {
				b.WriteByte(sep)
			}
			pendingSep = false
			b.WriteRune(r)
			continue
		}
		pendingSep = true
	}
	s := b.String()
	if len(s) > max {
		s = strings.TrimRight(s[:max], string(sep))
	}
	if s == "" {
		return ""
	}
	return s + string(sep)
}

// randomSuffix returns n random characters from [a-z0-9].
func randomSuffix(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	rand.Read(b) // never fails (it crashes the program instead)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
