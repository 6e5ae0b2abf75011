package jobs_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/telemetry"
)

// Each handler's line names its job once: job_key (with the kind and attempt) comes from the worker's
// context, not from the handler, so a JSON line never carries two job_key members.
func TestHandlerLogLinesNameTheJobOnce(t *testing.T) {
	t.Parallel()
	var logs pubqtest.SyncBuffer
	b := setup(t, testQueues, jobs.Config{Logger: telemetry.NewLogger(&logs, telemetry.LoggerOptions{})})
	b.seed(t, 200, 0.05)
	b.run(t)
	b.enqueue(t, jobs.KindScan, "log-scan", scan.ScanRequest{Ranges: 2, Mode: scan.ModeDryRun})
	b.waitSettled(t, settle, "log-scan")

	kinds := map[string]string{"students scan split": jobs.KindScan, "students scan range": jobs.KindScanRange,
		"account merge": jobs.KindMerge}
	seen := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		msg, _ := m["msg"].(string)
		kind, ok := kinds[msg]
		if !ok {
			continue
		}
		seen[msg]++
		if n := strings.Count(l, `"job_key":`); n != 1 {
			t.Errorf("job_key appears %d times in %s", n, l)
		}
		if key, _ := m["job_key"].(string); key == "" || m["job_kind"] != kind || m["job_attempt"] != 1.0 {
			t.Errorf("line does not name its %s job: %s", kind, l)
		}
		if msg == "students scan split" && m["job_key"] != "log-scan" {
			t.Errorf("scan line names %v, want log-scan", m["job_key"])
		}
	}
	for msg := range kinds {
		if seen[msg] == 0 {
			t.Errorf("no %q line in:\n%s", msg, logs.String())
		}
	}
}
