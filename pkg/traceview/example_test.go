package traceview_test

import (
	"context"
	"fmt"
	"os"

	"github.com/pubq/pubq/pkg/traceview"
)

// On-call looks up every attempt of one job in a local Jaeger and prints them as waterfalls.
func Example() {
	ctx := context.Background()
	src := traceview.NewJaeger("http://127.0.0.1:16686", nil)
	traces, err := traceview.FetchJob(ctx, src, traceview.JobQuery{Key: "order-42", Service: "pubq-worker"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // wraps traceview.ErrNotFound when nothing matched
		return
	}
	_ = traceview.Render(os.Stdout, traces, traceview.RenderOptions{})
}

// A response saved with curl renders the same way.
func ExampleDecodeJaeger() {
	f, err := os.Open("testdata/job_retry.json")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	traces, err := traceview.DecodeJaeger(f)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(traces), "traces;", traces[0].TraceID, traces[0].Services())
	// Output: 3 traces; 0af7651916cd43dd8448eb211c80319c [pubq-worker]
}
