// Package otlptest runs an in-process OTLP trace receiver for tests, over gRPC and HTTP, and flattens
// what it receives into Span values that are easy to assert on.
//
// In one process, point telemetry.Setup (or any OTLP exporter) at it; across processes, append
// Receiver.Env to the child's environment:
//
//	rcv := otlptest.Start(t)
//	cmd := exec.Command(workerBin)
//	cmd.Env = append(os.Environ(), rcv.Env("grpc")...)
//	...
//	spans := rcv.WaitFor(t, 10*time.Second, func(s []otlptest.Span) bool {
//		return len(otlptest.Named(s, "pubq-critical-worker process")) > 0
//	})
//
// Endpoint is the gRPC host:port, HTTPEndpoint the HTTP base URL; OTEL_EXPORTER_OTLP_ENDPOINT needs a
// URL, so for gRPC use "http://"+Endpoint() (Env does this).
package otlptest
