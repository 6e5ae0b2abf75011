package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestEmulatorAnswers(t *testing.T) {
	t.Parallel()
	host := Emulator(t)
	if got := os.Getenv("PUBSUB_EMULATOR_HOST"); got != host {
		t.Fatalf("PUBSUB_EMULATOR_HOST = %q, want %q", got, host)
	}
	if again := Emulator(t); again != host {
		t.Errorf("second Emulator() = %q, want the same emulator %q", again, host)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	createTopic := func(project, topic string) error {
		// No endpoint option: the client must find the emulator by itself.
		client, err := pubsub.NewClient(ctx, project)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		_, err = client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/" + project + "/topics/" + topic})
		return err
	}
	p1, p2 := ProjectID(t), ProjectID(t)
	if err := createTopic(p1, "orders"); err != nil {
		t.Fatalf("CreateTopic on the emulator: %v", err)
	}
	if err := createTopic(p1, "orders"); status.Code(err) != codes.AlreadyExists {
		t.Errorf("CreateTopic of an existing topic: %v, want AlreadyExists (is this a real emulator?)", err)
	}
	// Tests sharing the emulator use their own projects and must not collide.
	if err := createTopic(p2, "orders"); err != nil {
		t.Errorf("CreateTopic of the same topic id in another project: %v", err)
	}
}

func TestCheckEmulatorHost(t *testing.T) {
	t.Parallel()
	host := "127.0.0.1:" + strconv.Itoa(FreePort(t))
	err := checkEmulatorHost(host)
	if err == nil || !strings.Contains(err.Error(), "PUBSUB_EMULATOR_HOST="+host+" does not accept connections") {
		t.Errorf("checkEmulatorHost(%s) = %v, want a clear error", host, err)
	}
	if err := checkEmulatorHost(Emulator(t)); err != nil {
		t.Errorf("checkEmulatorHost of the running emulator: %v", err)
	}
}

// fakeEmulator writes an executable that stands in for cloud-pubsub-emulator.
func fakeEmulator(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cloud-pubsub-emulator")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// Not parallel: it shortens PUBQ_START_TIMEOUT for the whole process.
func TestStartEmulatorFailures(t *testing.T) {
	t.Run("not installed", func(t *testing.T) {
		_, _, err := startEmulator("PUBSUB_EMULATOR_BIN=/nonexistent/cloud-pubsub-emulator")
		if err == nil || !strings.Contains(err.Error(), "Pub/Sub emulator not found at /nonexistent/cloud-pubsub-emulator") {
			t.Errorf("err = %v, want it to say the emulator is not installed", err)
		}
	})
	t.Run("no java", func(t *testing.T) {
		_, _, err := startEmulator("JAVA_HOME=/nonexistent/jdk")
		if err == nil || !strings.Contains(err.Error(), "JAVA_HOME=/nonexistent/jdk has no bin/java") {
			t.Errorf("err = %v, want it to name the missing java", err)
		}
	})
	t.Run("crashes", func(t *testing.T) {
		bin := fakeEmulator(t, `echo "Exception in thread main: bad flag $1"; exit 1`)
		_, _, err := startEmulator("PUBSUB_EMULATOR_BIN=" + bin)
		if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "bad flag --host=127.0.0.1") {
			t.Errorf("err = %v, want the exit and the log tail", err)
		}
	})
	t.Run("never ready", func(t *testing.T) {
		t.Setenv("PUBQ_START_TIMEOUT", "2")
		pidFile := filepath.Join(t.TempDir(), "pid")
		bin := fakeEmulator(t, `echo $$ > `+pidFile+`; echo "starting slowly"; exec sleep 300`)
		_, _, err := startEmulator("PUBSUB_EMULATOR_BIN=" + bin)
		if err == nil || !strings.Contains(err.Error(), "was not ready after 2s") || !strings.Contains(err.Error(), "starting slowly") {
			t.Errorf("err = %v, want a timeout with the log tail", err)
		}
		assertPidFileGone(t, pidFile)
	})
	t.Run("port always taken", func(t *testing.T) {
		// The real emulator hangs after a BindException instead of exiting.
		pidFile := filepath.Join(t.TempDir(), "pid")
		bin := fakeEmulator(t, `echo $$ >> `+pidFile+`; echo "java.net.BindException: Address already in use"; exec sleep 300`)
		_, _, err := startEmulator("PUBSUB_EMULATOR_BIN=" + bin)
		if err == nil || !strings.Contains(err.Error(), "could not bind port") {
			t.Errorf("err = %v, want a bind failure", err)
		}
		b, _ := os.ReadFile(pidFile)
		if n := len(strings.Fields(string(b))); n != 3 {
			t.Errorf("%d attempts, want 3 (one per fresh port)", n)
		}
		assertPidFileGone(t, pidFile)
	})
}

// assertPidFileGone checks that every process listed in pidFile has ended.
func assertPidFileGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the fake emulator never ran: %v", err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		if !processGone(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("pid %d of a failed start still runs", pid)
		}
	}
}
