package main

import (
	"context"
	"runtime"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func setGlobalTracing(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
}

// cpuTime is this process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// settle starts a measurement from the same state in every mode. The bench publishes the backlog
// in-process, which a worker does not: its spans (traced modes) are exported and its garbage is
// collected here, not during the drain it would otherwise be charged to.
func settle(ctx context.Context) {
	if f, ok := otel.GetTracerProvider().(interface{ ForceFlush(context.Context) error }); ok {
		_ = f.ForceFlush(ctx)
	}
	runtime.GC()
}
