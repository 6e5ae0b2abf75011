// Package cloudtracetest serves a Cloud Trace v1 API for tests: a fake's TraceService on a local port,
// without TLS or authentication.
package cloudtracetest

import (
	"net"
	"testing"

	"cloud.google.com/go/trace/apiv1/tracepb"
	"google.golang.org/grpc"
)

// Serve serves srv on 127.0.0.1 until t ends and returns its address, for option.WithEndpoint (with
// insecure credentials) or pubqctl's PUBQ_CLOUD_TRACE_ENDPOINT.
func Serve(t testing.TB, srv tracepb.TraceServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	tracepb.RegisterTraceServiceServer(g, srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return lis.Addr().String()
}
