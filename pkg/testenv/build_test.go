package testenv

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestBuildBinary(t *testing.T) {
	t.Parallel()
	bin := BuildBinary(t, "pkg/testenv/testdata/racecheck")
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("running %s: %v", bin, err)
	}
	if want := "race=" + strconv.FormatBool(raceEnabled); strings.TrimSpace(string(out)) != want {
		t.Errorf("the built binary printed %q, want %q (same -race as the test binary)", out, want)
	}
	if again := BuildBinary(t, "pkg/testenv/testdata/racecheck/"); again != bin {
		t.Errorf("second BuildBinary = %s, want the cached %s", again, bin)
	}
}

func TestBuildBinaryFailure(t *testing.T) {
	t.Parallel()
	_, err := buildBinary("pkg/testenv/testdata/broken", 1000)
	if err == nil || !strings.Contains(err.Error(), "testenv: go [build") || !strings.Contains(err.Error(), "undefined: notDefined") {
		t.Errorf("building a package that does not compile = %v, want the compiler's error", err)
	}
	msg := callFatal(t, func(tb testing.TB) { BuildBinary(tb, "pkg/testenv/testdata/no-such-command") })
	if !strings.Contains(msg, "testenv: go [build") || !strings.Contains(msg, "no-such-command") {
		t.Errorf("BuildBinary of a missing package called Fatal(%q), want the go build error", msg)
	}
}
