package e2e

import (
	"strings"
	"testing"

	"github.com/pubq/pubq/pkg/telemetry/otlptest"
)

// TestTraceWithoutReceiveTracing runs the worker with PUBQ_PUBSUB_RECEIVE_TRACING=false: its client
// records no subscribe/process/ack/modack spans, and pubq's handler span continues the publisher's
// create span itself, so a job (retries included) is still one trace.
func TestTraceWithoutReceiveTracing(t *testing.T) {
	rcv := otlptest.Start(t)
	s := newStack(t)
	env := otelEnv(rcv, workerService)
	env["PUBQ_PUBSUB_RECEIVE_TRACING"] = "false"
	s.startWorker(t, env)
	p := s.startProducer(t, otelEnv(rcv, producerService))

	traceID := randomHex(t, 16)
	job := p.enqueue(t, "demo.flaky", "e2e-lite", `{"fail_times":1}`, "00-"+traceID+"-"+randomHex(t, 8)+"-01")
	spans := rcv.WaitFor(t, spanWait, all(received("demo.flaky", job.Key, 1, 3), received("demo.flaky", job.Key, 2, 2),
		func(spans []otlptest.Span) bool {
			h := handlerSpans(spans, "demo.flaky", job.Key)
			return hasSQL(children(spans, h[1].SpanID))
		}))
	idx := byID(spans)
	hs := handlerSpans(spans, "demo.flaky", job.Key)
	if len(hs) != 2 || hs[0].Attributes["pubq.job.attempt"] != "1" || hs[1].Attributes["pubq.job.attempt"] != "2" {
		t.Fatalf("handler spans:\n%s", otlptest.Summary(hs))
	}
	for _, h := range hs {
		if h.TraceID != traceID {
			t.Errorf("attempt %s in trace %s, want the request's %s", h.Attributes["pubq.job.attempt"], h.TraceID, traceID)
		}
	}
	assertAncestry(t, idx, hs[0],
		step{"pubq job demo.flaky", workerService},
		step{createSpan, relays},
		step{"pubq enqueue", producerService},
		step{"POST /v1/jobs", producerService},
	)
	top := assertAncestry(t, idx, hs[1],
		step{"pubq job demo.flaky", workerService},
		step{createSpan, relays},
	)
	if top.ParentSpanID != hs[0].SpanID || !linksTo(hs[1], hs[0], "previous_attempt") {
		t.Errorf("attempt 2: create span's parent %s, links %+v; want attempt 1's span %s as both", top.ParentSpanID, hs[1].Links, hs[0].SpanID)
	}
	for _, sp := range spans {
		if sp.Service == workerService && strings.HasPrefix(sp.Name, "pubq-default-worker ") {
			t.Errorf("the worker recorded the client's receive span %q", sp.Name)
		}
	}
}
