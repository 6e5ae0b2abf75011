package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/edtech/seed"
)

const settle = 3 * time.Minute

// allPairs runs the scan's candidate query over every id: what would still be merged.
func allPairs(t *testing.T, b *bundle) []scan.Pair {
	t.Helper()
	ps, err := scan.FindCandidates(context.Background(), b.pool, scan.Range{First: 0, Last: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func rangeKeys(t *testing.T, b *bundle, scanKey string, n int) map[string]bool {
	t.Helper()
	rs, err := scan.Ranges(context.Background(), b.pool, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != n {
		t.Fatalf("%d ranges, want %d", len(rs), n)
	}
	out := map[string]bool{}
	for _, r := range rs {
		out[jobs.RangeKey(scanKey, r)] = true
	}
	return out
}

func sameKeys(t *testing.T, what string, got map[string]string, want map[string]bool, state string) {
	t.Helper()
	for k := range want {
		if s, ok := got[k]; !ok {
			t.Errorf("%s: no job %q", what, k)
		} else if s != state {
			t.Errorf("%s: job %q is %s, want %s", what, k, s, state)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("%s: unexpected job %q", what, k)
		}
	}
}

func mergeKeys(pairs []seed.Pair) map[string]bool {
	out := map[string]bool{}
	for _, p := range pairs {
		out[jobs.MergeKey(p.SurvivorID, p.DuplicateID)] = true
	}
	return out
}

// The nightly fan-out in auto mode, end to end: every planted pair is enqueued once under its pair
// key, merged once and verifiably; a second scan finds nothing left and merges nothing again.
func TestAutoScanMergesEveryPlantedPairOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testQueues, jobs.Config{})
	res := b.seed(t, 2000, 0.05)
	wantRanges := rangeKeys(t, b, "scan-1", 8)
	b.run(t)

	b.enqueue(t, jobs.KindScan, "scan-1", scan.ScanRequest{Ranges: 8, Mode: scan.ModeAuto})
	b.waitSettled(t, settle, "scan-1")

	if s, _, _ := b.state(t, "scan-1"); s != "succeeded" {
		t.Fatalf("scan job: %s", s)
	}
	sameKeys(t, "range jobs", b.keys(t, jobs.KindScanRange), wantRanges, "succeeded")
	sameKeys(t, "merge jobs", b.keys(t, jobs.KindMerge), mergeKeys(res.Duplicates), "succeeded")
	for _, p := range res.Duplicates {
		if err := merge.Verify(ctx, b.pool, p.SurvivorID, p.DuplicateID, nil); err != nil {
			t.Errorf("pair %d <- %d: %v", p.SurvivorID, p.DuplicateID, err)
		}
		if n := b.count(t, `SELECT count(*) FROM merge_audit WHERE survivor_id = $1 AND duplicate_id = $2 AND NOT dry_run`,
			p.SurvivorID, p.DuplicateID); n != 1 {
			t.Errorf("pair %d <- %d: %d real merges in merge_audit, want 1", p.SurvivorID, p.DuplicateID, n)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit`); n != len(res.Duplicates) {
		t.Errorf("merge_audit has %d rows, want %d (one per planted pair)", n, len(res.Duplicates))
	}
	if n := b.count(t, `SELECT count(*) FROM students WHERE merged_into IS NOT NULL`); n != len(res.Duplicates) {
		t.Errorf("%d merged students, want %d", n, len(res.Duplicates))
	}
	if left := allPairs(t, b); len(left) != 0 {
		t.Errorf("%d duplicates left unmerged, e.g. %+v", len(left), left[0])
	}

	// The next night: a new key, the same rule. Every range runs; there is nothing left to merge.
	before := b.fingerprint(t)
	b.enqueue(t, jobs.KindScan, "scan-2", scan.ScanRequest{Ranges: 8, Mode: scan.ModeAuto})
	b.waitSettled(t, settle, "scan-2")
	if n := b.count(t, `SELECT count(*) FROM pubq.jobs WHERE kind = $1 AND key LIKE 'scan-2/%' AND state = 'succeeded'`, jobs.KindScanRange); n != 8 {
		t.Errorf("second scan: %d range jobs succeeded, want 8", n)
	}
	if n := len(b.keys(t, jobs.KindMerge)); n != len(res.Duplicates) {
		t.Errorf("second scan: %d merge jobs, want still %d", n, len(res.Duplicates))
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit`); n != len(res.Duplicates) {
		t.Errorf("second scan: merge_audit has %d rows, want still %d", n, len(res.Duplicates))
	}
	if d := diffFingerprints(before, b.fingerprint(t)); d != "" {
		t.Errorf("second scan changed %s", d)
	}
}

// Two scans that both find every pair before any merge ran (the handlers are driven by hand, so the
// interleaving is fixed): the second one's merge jobs are duplicates of the first one's keys, and
// the worker then merges each pair once.
func TestRescanBeforeTheMergesRanEnqueuesNothingTwice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testQueues, jobs.Config{})
	res := b.seed(t, 600, 0.1)

	scanOnce := func(scanKey string) {
		t.Helper()
		if err := runHandler(t, b.pool, b.h.Scan, jobs.KindScan, scanKey, scan.ScanRequest{Ranges: 4, Mode: scan.ModeAuto}); err != nil {
			t.Fatalf("%s: %v", scanKey, err)
		}
		ranges, err := scan.Ranges(ctx, b.pool, 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ranges {
			key := jobs.RangeKey(scanKey, r)
			if s, _, _ := b.state(t, key); s != "pending" {
				t.Fatalf("range job %q: %q, want pending", key, s)
			}
			if err := runHandler(t, b.pool, b.h.ScanRange, jobs.KindScanRange, key, scan.RangeRequest{Range: r, Mode: scan.ModeAuto}); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
		}
	}
	scanOnce("night-1")
	merges := b.keys(t, jobs.KindMerge)
	sameKeys(t, "after the first scan", merges, mergeKeys(res.Duplicates), "pending")
	scanOnce("night-2")
	sameKeys(t, "after the second scan", b.keys(t, jobs.KindMerge), mergeKeys(res.Duplicates), "pending")
	// A retried scan (the same key) enqueues no second set of ranges either.
	if err := runHandler(t, b.pool, b.h.Scan, jobs.KindScan, "night-1", scan.ScanRequest{Ranges: 4, Mode: scan.ModeAuto}); err != nil {
		t.Fatal(err)
	}
	if n := len(b.keys(t, jobs.KindScanRange)); n != 8 {
		t.Fatalf("%d range jobs after two scans and a retried one, want 8", n)
	}

	b.run(t)
	b.waitSettled(t, settle)
	sameKeys(t, "after the worker ran", b.keys(t, jobs.KindMerge), mergeKeys(res.Duplicates), "succeeded")
	for _, p := range res.Duplicates {
		if n := b.count(t, `SELECT count(*) FROM merge_audit WHERE survivor_id = $1 AND duplicate_id = $2`, p.SurvivorID, p.DuplicateID); n != 1 {
			t.Errorf("pair %d <- %d: %d merge_audit rows, want 1", p.SurvivorID, p.DuplicateID, n)
		}
		if err := merge.Verify(ctx, b.pool, p.SurvivorID, p.DuplicateID, nil); err != nil {
			t.Error(err)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit`); n != len(res.Duplicates) {
		t.Errorf("merge_audit has %d rows, want %d", n, len(res.Duplicates))
	}
}

// dry_run (and a payload without a mode) plans every pair and audits the plan; no data changes and
// no real merge key is taken.
func TestDryRunScanWritesNoMerge(t *testing.T) {
	t.Parallel()
	b := setup(t, testQueues, jobs.Config{})
	res := b.seed(t, 1500, 0.05)
	before := b.fingerprint(t)
	b.run(t)

	b.enqueue(t, jobs.KindScan, "dry-1", scan.ScanRequest{Ranges: 8, Mode: scan.ModeDryRun})
	b.waitSettled(t, settle, "dry-1")
	b.enqueue(t, jobs.KindScan, "dry-2", map[string]any{"ranges": 3}) // no mode: dry run
	b.waitSettled(t, settle, "dry-2")

	for _, key := range []string{"dry-1", "dry-2"} {
		if s, _, _ := b.state(t, key); s != "succeeded" {
			t.Fatalf("%s: %s", key, s)
		}
	}
	planted := len(res.Duplicates)
	if n := b.count(t, `SELECT count(*) FROM pubq.jobs WHERE kind = $1 AND state = 'succeeded'`, jobs.KindMerge); n != 2*planted {
		t.Errorf("%d merge jobs succeeded, want %d (each scan plans each of %d pairs)", n, 2*planted, planted)
	}
	if n := b.count(t, `SELECT count(*) FROM pubq.jobs WHERE key LIKE 'merge:%'`); n != 0 {
		t.Errorf("%d jobs hold a real merge key", n)
	}
	if n := b.count(t, `SELECT count(*) FROM pubq.jobs WHERE kind = $1 AND convert_from(payload, 'UTF8')::jsonb ->> 'mode' <> 'dry_run'`,
		jobs.KindScanRange); n != 0 {
		t.Errorf("%d range jobs do not say mode dry_run", n)
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit WHERE dry_run`); n != 2*planted {
		t.Errorf("%d dry-run audit rows, want %d", n, 2*planted)
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit WHERE NOT dry_run`); n != 0 {
		t.Errorf("%d real merges audited", n)
	}
	if d := diffFingerprints(before, b.fingerprint(t)); d != "" {
		t.Errorf("a dry run changed %s", d)
	}
	if left := allPairs(t, b); len(left) != planted {
		t.Errorf("%d candidate pairs after dry runs, want all %d", len(left), planted)
	}
}

// A scan of an empty table succeeds and enqueues nothing.
func TestScanOfNoStudentsEnqueuesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, testQueues, jobs.Config{})
	if err := runHandler(t, b.pool, b.h.Scan, jobs.KindScan, "empty", scan.ScanRequest{Ranges: 64, Mode: scan.ModeAuto}); err != nil {
		t.Fatal(err)
	}
	if n := b.count(t, `SELECT count(*) FROM pubq.jobs`); n != 0 {
		t.Fatalf("%d jobs enqueued for no students", n)
	}
}
