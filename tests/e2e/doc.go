// Package e2e holds pubq's end-to-end tests: the producer and worker binaries run as real processes
// against the Pub/Sub emulator and PostgreSQL, exporting their spans to an in-process OTLP receiver
// (pkg/telemetry/otlptest), and the tests assert what an operator relies on across process and
// client-library boundaries: one trace per job from the HTTP request to the handler's SQL, retries
// linked in order, dead letters that say why, interop with the Node.js client and plain W3C
// traceparent publishers, exact job metrics, and log lines that point at their spans.
//
// Run them with the rest of the workspace (make test), or alone:
//
//	infra/with-stack.sh go test -race -count=1 ./tests/e2e/
//
// The Node.js interop test installs tests/e2e/testdata/node's locked dependencies with npm into
// .tools/node/ (git-ignored, reused while package-lock.json is unchanged); it needs node and npm and
// fails, with npm's output, when they cannot install.
package e2e
