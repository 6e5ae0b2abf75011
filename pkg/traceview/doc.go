// Package traceview is on-call's terminal view of pubq traces: it fetches a job's traces from Jaeger's
// query API or from Google Cloud Trace into one model and prints them as indented waterfalls.
//
// Sources:
//
//   - Jaeger (NewJaeger): GET {base}/api/traces/{id} and the search
//     GET {base}/api/traces?service=S&tags={"pubq.job.key":"K"}&start=…&end=…&limit=N, the JSON API of
//     Jaeger v1 query and v2 (port 16686; infra/jaeger.sh runs one locally). DecodeJaeger reads the
//     same JSON from a file saved with curl.
//   - Cloud Trace (NewCloudTrace): API v1 GetTrace and ListTraces with the label filter
//     +pubq.job.key:"K". That API carries no span links; attempts are found by their label.
//
// A job pubq retries stays in one trace: each retry is published as a child of the failed attempt's
// span, and its handler span links to that attempt too. Other traces a job touches are linked: the
// worker's batched claim and completion round trips (each a trace of its own, serving many jobs), and
// attempts recorded by an older worker that started a trace per retry. FetchJob searches by job key and
// then follows links to traces the search missed, except a round trip's links to the other jobs it
// carried, which Render counts rather than lists. Render prints each trace in start order: a
// header, then one line per span — the tree by parent (children in start order), service, duration,
// a bar on the trace's timeline, ERROR with the status message, and the job key, kind, attempt, queue,
// message id and a one-line, cut db statement — then the links between traces.
//
//	trace 2/3  a3c1e5f7092b4d6e8f1a2b3c4d5e6f70  2026-11-18 11:06:41.250 UTC  61.0ms  3 spans  2 errors  (+1.25s after trace 1)
//	  pubq-critical-worker process  pubq-worker  61.0ms  |████████████████|  ERROR "handler: context deadline exceeded"  key=order-42 attempt=2
//	  └─ email.send                 pubq-worker  55.0ms  |██████████████  |  ERROR "context deadline exceeded"
//	  link: "pubq-critical-worker process" b200000000000001 -> trace 1/3 span a100000000000004 "pubq-critical-worker process"
//
// testdata/job_retry.golden is the full rendering of testdata/job_retry.json.
package traceview
