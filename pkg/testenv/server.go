package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// server is a child process run for the whole test binary.
type server struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	stopSig syscall.Signal
	// stopWait is how long stop waits after stopSig before SIGKILL.
	stopWait time.Duration
	done     chan struct{} // closed once the process has exited
	err      error         // Wait's result, valid once done is closed
}

// startServer runs argv with env, its output appended to logPath.
func startServer(name, logPath string, stopSig syscall.Signal, env []string, argv ...string) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("testenv: starting %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	s := &server{name: name, cmd: cmd, logPath: logPath, stopSig: stopSig, stopWait: 15 * time.Second, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that forked the child
		// exits, not the process. Keep this goroutine on its own thread for the
		// child's lifetime so no other goroutine can end that thread early;
		// returning while locked then retires the thread, which is harmless.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.err = cmd.Wait()
		close(s.done)
	}()
	err = <-started
	// The child holds its own copy of the descriptor.
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("testenv: starting %s: %w", name, err)
	}
	return s, nil
}

// errRetry tells waitReady's caller to try again (another port).
var errRetry = errors.New("testenv: retry")

// waitReady polls check until it reports ready, fails, the process exits,
// or timeout passes. On failure the server is killed.
func (s *server) waitReady(timeout time.Duration, check func(log []byte) (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		log, _ := os.ReadFile(s.logPath)
		ready, err := check(log)
		if ready {
			return nil
		}
		if err != nil {
			s.kill()
			return err
		}
		select {
		case <-s.done:
			return fmt.Errorf("testenv: %s exited before it was ready (%v)%s", s.name, s.err, s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("testenv: %s was not ready after %s (set PUBQ_START_TIMEOUT to wait longer)%s", s.name, timeout, s.logTail())
		}
	}
}

// logTail returns the end of the server's log, indented, for error messages.
func (s *server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "; its log is empty"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return "; last lines of " + s.logPath + ":\n\t" + strings.Join(lines, "\n\t")
}

func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// stop sends the server its shutdown signal, then SIGKILL if it lingers.
func (s *server) stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(s.stopSig)
	select {
	case <-s.done:
		return nil
	case <-time.After(s.stopWait):
	}
	s.kill()
	return fmt.Errorf("testenv: %s (pid %d) ignored %v for %s and was killed", s.name, s.cmd.Process.Pid, s.stopSig, s.stopWait)
}
