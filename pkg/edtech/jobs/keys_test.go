package jobs_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/job"
)

func TestKeys(t *testing.T) {
	if got := jobs.MergeKey(17, 42); got != "merge:17:42" {
		t.Errorf("MergeKey: %q", got)
	}
	scanKey := "schedule:nightly-duplicate-scan:2026-11-25T02:00:00Z"
	rk := jobs.RangeKey(scanKey, scan.Range{First: 1, Last: 3125})
	if rk != scanKey+"/range:1-3125" {
		t.Errorf("RangeKey: %q", rk)
	}
	if got := jobs.PlanKey(rk, 17, 42); got != rk+"/merge:17:42:dry_run" {
		t.Errorf("PlanKey: %q", got)
	}
	if got := jobs.PlanKey("", 17, 42); got != "merge:17:42:dry_run" {
		t.Errorf("PlanKey without a scope: %q", got)
	}
	// A scope too long to extend is hashed: still valid, still deterministic, still distinct.
	long := strings.Repeat("k", job.MaxKeyBytes)
	a, b := jobs.RangeKey(long, scan.Range{First: 1, Last: 2}), jobs.RangeKey(long+"x", scan.Range{First: 1, Last: 2})
	for _, k := range []string{a, b, jobs.PlanKey(a, 1<<62, 1<<62-1)} {
		if err := job.ValidateKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	if a == b || a != jobs.RangeKey(long, scan.Range{First: 1, Last: 2}) || !strings.HasSuffix(a, "/range:1-2") {
		t.Errorf("hashed keys: %q, %q", a, b)
	}
}

func TestMergeJob(t *testing.T) {
	r, err := jobs.MergeJob(merge.MergeRequest{SurvivorID: 1, DuplicateID: 2}, "scope")
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != jobs.KindMerge || r.Key != "merge:1:2" || string(r.Payload) != `{"survivor_id":1,"duplicate_id":2,"dry_run":false}` {
		t.Errorf("real merge job: %+v %s", r, r.Payload)
	}
	// The same pair built elsewhere is the same job: a duplicate, never a key conflict.
	r2, _ := jobs.MergeJob(merge.MergeRequest{SurvivorID: 1, DuplicateID: 2}, "other scope")
	if r2.Key != r.Key || string(r2.Payload) != string(r.Payload) {
		t.Errorf("same pair, other scope: %+v", r2)
	}
	d, err := jobs.MergeJob(merge.MergeRequest{SurvivorID: 1, DuplicateID: 2, DryRun: true}, "scope")
	if err != nil {
		t.Fatal(err)
	}
	var back merge.MergeRequest
	if err := json.Unmarshal(d.Payload, &back); err != nil || !back.DryRun || d.Key != "scope/merge:1:2:dry_run" {
		t.Errorf("dry-run merge job: %+v %s", d, d.Payload)
	}
	if _, err := jobs.MergeJob(merge.MergeRequest{SurvivorID: 3, DuplicateID: 3}, ""); !merge.IsPermanent(err) {
		t.Errorf("same ids: %v", err)
	}
}
