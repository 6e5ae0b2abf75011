package gctune

import (
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

// restore puts the runtime's GC settings back after a test changed them.
func restore(t *testing.T) {
	pct := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(pct)
		debug.SetMemoryLimit(limit)
	})
}

func TestApplyDefaults(t *testing.T) {
	restore(t)
	t.Setenv("GOGC", "")
	unsetenv(t, "GOMEMLIMIT")
	unsetenv(t, "AUTOMEMLIMIT")
	s := Apply()
	if got := debug.SetGCPercent(100); got != DefaultPercent || s.Percent != DefaultPercent || s.PercentFrom != "default" {
		t.Fatalf("GOGC: runtime %d, settings %+v; want %d from the default", got, s, DefaultPercent)
	}
	// Every machine has memory, so FromSystem at least gives a limit, 90 % of it.
	if s.LimitProblem != nil || s.MemoryLimit <= 0 || s.MemoryLimit == math.MaxInt64 {
		t.Fatalf("memory limit: %+v (%v); want one derived from the cgroup or the machine", s, s.LimitProblem)
	}
	if got := debug.SetMemoryLimit(-1); got != s.MemoryLimit {
		t.Fatalf("runtime memory limit %d, settings say %d", got, s.MemoryLimit)
	}
	if !strings.Contains(s.String(), "GOGC=400 (default)") {
		t.Fatalf("String() = %q", s.String())
	}
}

func TestApplyKeepsEnvironment(t *testing.T) {
	restore(t)
	// The runtime applies GOGC and GOMEMLIMIT at start; Apply must leave what is in force alone.
	debug.SetGCPercent(150)
	debug.SetMemoryLimit(1 << 30)
	t.Setenv("GOGC", "150")
	t.Setenv("GOMEMLIMIT", "1GiB")
	s := Apply()
	if s.Percent != 150 || s.PercentFrom != "GOGC" || debug.SetGCPercent(150) != 150 {
		t.Fatalf("GOGC from the environment was not kept: %+v", s)
	}
	if s.MemoryLimit != 1<<30 || s.LimitFrom != "GOMEMLIMIT" || debug.SetMemoryLimit(-1) != 1<<30 {
		t.Fatalf("GOMEMLIMIT from the environment was not kept: %+v", s)
	}
}

func TestApplyRatioAndOff(t *testing.T) {
	restore(t)
	t.Setenv("GOGC", "")
	unsetenv(t, "GOMEMLIMIT")
	t.Setenv("AUTOMEMLIMIT", "0.5")
	half := Apply()
	t.Setenv("AUTOMEMLIMIT", "0.9")
	most := Apply()
	if half.LimitProblem != nil || most.LimitProblem != nil {
		t.Fatalf("limits: %+v / %+v", half, most)
	}
	// 0.5 and 0.9 of the same memory: the ratio is honoured.
	if r := float64(half.MemoryLimit) / float64(most.MemoryLimit); r < 0.54 || r > 0.57 {
		t.Fatalf("AUTOMEMLIMIT=0.5 gave %d, 0.9 gave %d (ratio %.3f, want 5/9)", half.MemoryLimit, most.MemoryLimit, r)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("AUTOMEMLIMIT", "off")
	if s := Apply(); s.LimitFrom != "AUTOMEMLIMIT=off" || s.MemoryLimit != math.MaxInt64 {
		t.Fatalf("AUTOMEMLIMIT=off set a limit: %+v", s)
	}
	t.Setenv("AUTOMEMLIMIT", "lots")
	if s := Apply(); s.LimitProblem == nil || s.LimitFrom != "none" {
		t.Fatalf("an invalid AUTOMEMLIMIT was not reported: %+v", s)
	}
}

// unsetenv removes name for the test; t.Setenv restores it afterwards.
func unsetenv(t *testing.T, name string) {
	t.Setenv(name, "")
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}
