// Package gctune sets the Go garbage collector for a pubq binary.
//
// A worker allocates a few kilobytes per job (the Pub/Sub client's message, contexts, the claim's
// arguments) and keeps little alive: at Go's default GOGC=100 the collector ran often enough to cost
// the worker about a quarter of its CPU on the end-to-end benchmark (docs/benchmarks.md). pubq's
// binaries therefore run at GOGC=400 unless GOGC is set, and bound the heap by a soft memory limit
// (GOMEMLIMIT) of 90 % of the container's cgroup limit, or of the machine's memory without one, so the
// collector works harder only when memory actually runs short.
package gctune

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// DefaultPercent is the GOGC a binary runs at when the environment does not set one.
const DefaultPercent = 400

// Settings is what Apply left in force.
type Settings struct {
	Percent      int    // GOGC; negative: the collector is off
	PercentFrom  string // "default" or "GOGC"
	MemoryLimit  int64  // bytes; math.MaxInt64: none
	LimitFrom    string // "GOMEMLIMIT", "cgroup or system memory", "AUTOMEMLIMIT=off" or "none"
	LimitProblem error  // why no limit could be derived, if one could not
}

// LogValue logs the settings as a group.
func (s Settings) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Int("gogc", s.Percent), slog.String("gogc_from", s.PercentFrom), slog.String("memory_limit_from", s.LimitFrom)}
	if s.MemoryLimit != math.MaxInt64 {
		attrs = append(attrs, slog.Int64("memory_limit_bytes", s.MemoryLimit))
	}
	if s.LimitProblem != nil {
		attrs = append(attrs, slog.String("memory_limit_problem", s.LimitProblem.Error()))
	}
	return slog.GroupValue(attrs...)
}

// Apply sets GOGC to DefaultPercent unless the GOGC environment variable is set (the runtime has then
// applied it already), and a soft memory limit unless GOMEMLIMIT is set or AUTOMEMLIMIT=off. It never
// fails the binary: a limit that cannot be derived is reported in the result and left unset.
func Apply() Settings {
	var s Settings
	if v := os.Getenv("GOGC"); v != "" {
		s.PercentFrom = "GOGC"
		s.Percent = debug.SetGCPercent(-1) // read the runtime's value back...
		debug.SetGCPercent(s.Percent)      // ...and restore it
	} else {
		s.PercentFrom = "default"
		s.Percent = DefaultPercent
		debug.SetGCPercent(DefaultPercent)
	}
	switch {
	case hasEnv("GOMEMLIMIT"): // set, even empty: memlimit leaves it alone too
		s.LimitFrom = "GOMEMLIMIT"
		s.MemoryLimit = debug.SetMemoryLimit(-1)
	case os.Getenv("AUTOMEMLIMIT") == "off":
		s.LimitFrom = "AUTOMEMLIMIT=off"
		s.MemoryLimit = debug.SetMemoryLimit(-1)
	default:
		s.LimitFrom = "cgroup or system memory"
		limit, err := memlimit.Set(
			memlimit.WithRatio(ratio()),
			memlimit.WithProvider(memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem)),
			memlimit.WithLogger(slog.New(slog.DiscardHandler)),
		)
		s.MemoryLimit = limit
		if err != nil {
			s.LimitFrom, s.LimitProblem = "none", err
		}
	}
	return s
}

// ratio is AUTOMEMLIMIT's ratio when it is a valid one, else 0.9; memlimit reads the variable itself
// too, and reports an invalid one as an error.
func ratio() float64 {
	if r, err := strconv.ParseFloat(os.Getenv("AUTOMEMLIMIT"), 64); err == nil && r > 0 && r <= 1 {
		return r
	}
	return 0.9
}

// String is the settings on one line, for a benchmark's report.
func (s Settings) String() string {
	limit := "none"
	if s.MemoryLimit != math.MaxInt64 {
		limit = fmt.Sprintf("%d MiB", s.MemoryLimit>>20)
	}
	return fmt.Sprintf("GOGC=%d (%s), memory limit %s (%s)", s.Percent, s.PercentFrom, limit, s.LimitFrom)
}

func hasEnv(name string) bool {
	_, ok := os.LookupEnv(name)
	return ok
}
