package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/merge"
)

// edtechQueues routes account.merge, for merge --enqueue.
const edtechQueues = `
version: 1
queues:
  default:
    topic: t-default
    subscription: t-default-worker
    dead_letter_topic: t-default-dead
    dead_letter_subscription: t-default-dead-inspect
    kinds: [account.merge, students.scan]
`

// seeded is an env with a seeded edtech database; pairs holds the planted pairs as seed wrote them.
func seeded(t *testing.T, students int, rate string) (*env, [][2]int64, string) {
	t.Helper()
	e := setup(t)
	path := filepath.Join(t.TempDir(), "pairs.csv")
	code, stdout, stderr := e.run(t, "seed", "--students", fmt.Sprint(students), "--duplicate-rate", rate, "--pairs", path, "--seed", "5")
	if code != 0 || !strings.Contains(stdout, "planted duplicates") || !strings.Contains(stdout, "planted pairs written to") {
		t.Fatalf("seed: %d %q %q", code, stdout, stderr)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pairs [][2]int64
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n")[1:] {
		var p [2]int64
		if _, err := fmt.Sscanf(line, "%d,%d", &p[0], &p[1]); err != nil {
			t.Fatalf("pairs file line %q: %v", line, err)
		}
		pairs = append(pairs, p)
	}
	if len(pairs) < 5 {
		t.Fatalf("seed planted only %d pairs", len(pairs))
	}
	return e, pairs, path
}

func (e *env) count(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.csv")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSeedRefusesWithoutActorAndOnExistingStudents(t *testing.T) {
	t.Parallel()
	e, _, _ := seeded(t, 200, "0.1")
	n := e.count(t, `SELECT count(*) FROM students`)
	if code, _, stderr := e.run(t, "seed", "--students", "10"); code != 2 || !strings.Contains(stderr, "--append") {
		t.Fatalf("seed over existing students: %d %q", code, stderr)
	}
	delete(e.vars, "PUBQ_ACTOR")
	if code, _, stderr := e.run(t, "seed", "--students", "10", "--append"); code != 2 || !strings.Contains(stderr, "PUBQ_ACTOR") {
		t.Fatalf("seed without actor: %d %q", code, stderr)
	}
	e.vars["PUBQ_ACTOR"] = "alice@example.com"
	if got := e.count(t, `SELECT count(*) FROM students`); got != n {
		t.Fatalf("a refused seed wrote students: %d -> %d", n, got)
	}
	// --append adds after the existing ids; --json says what was written.
	code, stdout, stderr := e.runTTY(t, true, "seed", "--students", "20", "--append", "--json", "--related", "0")
	var out seedOutput
	if err := json.Unmarshal([]byte(stdout), &out); code != 0 || err != nil || out.FirstStudentID != n+1 || out.LastStudentID != n+20 {
		t.Fatalf("seed --append --json: %d %v %+v %q", code, err, out, stderr)
	}
	if stderr != "" {
		t.Errorf("--json drew a progress bar: %q", stderr)
	}
	// On a terminal, a progress bar.
	if code, _, stderr := e.runTTY(t, true, "seed", "--students", "21", "--append", "--related", "0"); code != 0 || !strings.Contains(stderr, "seed") {
		t.Fatalf("seed on a terminal: %d %q", code, stderr)
	}
	if got := e.count(t, `SELECT count(*) FROM pubq.audit WHERE actor = 'alice@example.com' AND action = 'seed'`); got != 3 {
		t.Errorf("%d seed audit rows, want 3", got)
	}
}

func TestMergeOnePairFromTheCommandLine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e, pairs, _ := seeded(t, 300, "0.1")
	s, d := pairs[0][0], pairs[0][1]
	ss, ds := fmt.Sprint(s), fmt.Sprint(d)

	delete(e.vars, "PUBQ_ACTOR")
	if code, _, stderr := e.run(t, "merge", "--survivor", ss, "--duplicate", ds); code != 2 || !strings.Contains(stderr, "PUBQ_ACTOR") {
		t.Fatalf("merge without actor: %d %q", code, stderr)
	}
	e.vars["PUBQ_ACTOR"] = "alice@example.com"

	code, stdout, stderr := e.run(t, "merge", "--survivor", ss, "--duplicate", ds, "--dry-run")
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("dry run: duplicate %d into survivor %d", d, s)) ||
		!strings.Contains(stdout, "enrollments") || !strings.Contains(stdout, "merge_audit id") {
		t.Fatalf("dry run: %d %q %q", code, stdout, stderr)
	}
	if n := e.count(t, `SELECT count(*) FROM students WHERE merged_into IS NOT NULL`); n != 0 {
		t.Fatalf("a dry run merged %d students", n)
	}

	code, stdout, stderr = e.run(t, "merge", "--survivor", ss, "--duplicate", ds, "--verify=full")
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("merge: duplicate %d into survivor %d", d, s)) || !strings.Contains(stdout, "verified") {
		t.Fatalf("merge: %d %q %q", code, stdout, stderr)
	}
	if err := merge.Verify(ctx, e.pool, s, d, nil); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = e.run(t, "merge", "--survivor", ss, "--duplicate", ds)
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("nothing to do: %d was already merged into %d", d, s)) {
		t.Fatalf("merging again: %d %q", code, stdout)
	}
	// A missing student: the pair fails, exit 1, nothing written.
	code, _, stderr = e.run(t, "merge", "--survivor", ss, "--duplicate", "999999999")
	if code != 1 || !strings.Contains(stderr, "1 of 1 pairs failed") {
		t.Fatalf("missing duplicate: %d %q", code, stderr)
	}

	// The operator's audit names the actor and points at the merge's own audit row.
	rows, err := e.pool.Query(ctx, `SELECT a.action, a.detail->>'result', coalesce(m.dry_run::text, '-')
		FROM pubq.audit a LEFT JOIN merge_audit m ON m.id = (a.detail->>'merge_audit_id')::bigint
		WHERE a.actor = 'alice@example.com' AND a.action LIKE 'merge%' ORDER BY a.id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var a, r, dry string
		if err := rows.Scan(&a, &r, &dry); err != nil {
			t.Fatal(err)
		}
		got = append(got, a+" "+r+" "+dry)
	}
	want := "merge.dry_run planned true | merge merged false | merge already_merged -"
	if strings.Join(got, " | ") != want {
		t.Fatalf("audit: %q, want %q", strings.Join(got, " | "), want)
	}
}

func TestMergeAFileOfPairs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e, pairs, path := seeded(t, 400, "0.1")
	// One pair first, so the file has one that is already done.
	if code, _, stderr := e.run(t, "merge", "--survivor", fmt.Sprint(pairs[0][0]), "--duplicate", fmt.Sprint(pairs[0][1])); code != 0 {
		t.Fatalf("first pair: %d %q", code, stderr)
	}
	code, stdout, stderr := e.runTTY(t, true, "merge", "--file", path)
	if code != 0 || !strings.Contains(stdout, "per table, all pairs:") || !strings.Contains(stdout, fmt.Sprintf("%d pairs: %d merged, 1 already merged", len(pairs), len(pairs)-1)) {
		t.Fatalf("merge --file: %d %q %q", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "merge") {
		t.Errorf("no progress bar on a terminal: %q", stderr)
	}
	for _, p := range pairs {
		if err := merge.Verify(ctx, e.pool, p[0], p[1], nil); err != nil {
			t.Error(err)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM merge_audit WHERE NOT dry_run`); n != int64(len(pairs)) {
		t.Errorf("%d merges audited, want %d", n, len(pairs))
	}

	// --json, with a pair that fails among good ones: the others are merged, the exit code says 1.
	e2, pairs2, _ := seeded(t, 300, "0.1")
	body := fmt.Sprintf("# pairs\n%d,%d\n%d, 999999999\n%d,%d\n", pairs2[0][0], pairs2[0][1], pairs2[1][0], pairs2[2][0], pairs2[2][1])
	code, stdout, stderr = e2.run(t, "merge", "--file", writeFile(t, body), "--json")
	var out mergeOutput
	if err := json.Unmarshal([]byte(stdout), &out); err != nil || code != 1 || len(out.Pairs) != 3 {
		t.Fatalf("merge --file --json with a failure: %d %v %q %q", code, err, stdout, stderr)
	}
	if out.Counts[pairMerged] != 2 || out.Counts[pairFailed] != 1 || out.Pairs[1].Status != pairFailed ||
		!strings.Contains(out.Pairs[1].Error, "not found") || out.Pairs[0].Report == nil || !out.Pairs[0].Verified {
		t.Fatalf("results: %+v", out)
	}
	if !strings.Contains(stderr, "1 of 3 pairs failed") {
		t.Errorf("stderr %q", stderr)
	}
	if err := merge.Verify(ctx, e2.pool, pairs2[2][0], pairs2[2][1], nil); err != nil {
		t.Error(err)
	}
}

func TestMergeUsageErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"merge"}, "needs --survivor and --duplicate, or --file"},
		{[]string{"merge", "--survivor", "1"}, "needs --survivor and --duplicate"},
		{[]string{"merge", "--survivor", "1", "--duplicate", "1"}, "same student"},
		{[]string{"merge", "--survivor", "-1", "--duplicate", "2"}, "must be positive"},
		{[]string{"merge", "--survivor", "1", "--duplicate", "2", "--file", "x.csv"}, "not both"},
		{[]string{"merge", "7"}, "takes no arguments"},
		{[]string{"merge", "--survivor", "1", "--duplicate", "2", "--verify", "sometimes"}, "want pair, full or off"},
		{[]string{"merge", "--file", "/nonexistent/pairs.csv"}, "no such file"},
		{[]string{"merge", "--file", writeFile(t, "1,2\n3,x\n")}, ":2: \"3,x\" is not two student ids"},
		{[]string{"merge", "--file", writeFile(t, "1,2\n3,4,5\n")}, "wrong number of fields"},
		{[]string{"merge", "--file", writeFile(t, "5,5\n")}, ":1: merge: survivor and duplicate are the same"},
		{[]string{"merge", "--file", writeFile(t, "survivor,duplicate\n")}, "no pairs"},
		{[]string{"seed"}, "--students N"},
		{[]string{"seed", "--students", "10", "extra"}, "takes no arguments"},
	} {
		code, _, stderr := e.run(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("pubqctl %q: exit %d, stderr %q; want 2 containing %q", tc.args, code, stderr, tc.want)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM pubq.audit`); n != 0 {
		t.Errorf("usage errors wrote %d audit rows", n)
	}
}

func TestMergeEnqueue(t *testing.T) {
	t.Parallel()
	e, pairs, path := seeded(t, 300, "0.1")
	// Without a route for account.merge: a configuration error, nothing enqueued.
	if code, _, stderr := e.run(t, "merge", "--file", path, "--enqueue"); code != 2 || !strings.Contains(stderr, "account.merge") {
		t.Fatalf("enqueue without a route: %d %q", code, stderr)
	}
	e.vars["PUBQ_QUEUES"] = writeFile(t, edtechQueues)
	code, stdout, stderr := e.run(t, "merge", "--file", path, "--enqueue")
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("%d pairs: %d enqueued", len(pairs), len(pairs))) {
		t.Fatalf("enqueue: %d %q %q", code, stdout, stderr)
	}
	for _, p := range pairs {
		if s := e.state(t, jobs.MergeKey(p[0], p[1])); s != "pending" {
			t.Errorf("job %s: %s", jobs.MergeKey(p[0], p[1]), s)
		}
	}
	// The same pairs again (as a scan would find them): the jobs exist, nothing new.
	code, stdout, _ = e.run(t, "merge", "--file", path, "--enqueue", "--json")
	var out mergeOutput
	if err := json.Unmarshal([]byte(stdout), &out); code != 0 || err != nil || out.Counts[pairDuplicate] != len(pairs) {
		t.Fatalf("enqueue again: %d %v %+v", code, err, out.Counts)
	}
	// A dry run is planned under its own key, never the pair's.
	code, stdout, _ = e.run(t, "merge", "--survivor", fmt.Sprint(pairs[0][0]), "--duplicate", fmt.Sprint(pairs[0][1]), "--enqueue", "--dry-run", "--json")
	if err := json.Unmarshal([]byte(stdout), &out); code != 0 || err != nil || out.Counts[pairEnqueued] != 1 ||
		!strings.HasSuffix(out.Pairs[0].JobKey, fmt.Sprintf("/merge:%d:%d:dry_run", pairs[0][0], pairs[0][1])) {
		t.Fatalf("enqueue --dry-run: %d %v %+v", code, err, out)
	}
	if n := e.count(t, `SELECT count(*) FROM pubq.jobs WHERE kind = 'account.merge'`); n != int64(len(pairs))+1 {
		t.Errorf("%d merge jobs, want %d", n, len(pairs)+1)
	}
	if n := e.count(t, `SELECT count(*) FROM pubq.audit WHERE actor = 'alice@example.com' AND action LIKE 'merge.enqueue%'`); n != int64(2*len(pairs)+1) {
		t.Errorf("%d enqueue audit rows, want %d", n, 2*len(pairs)+1)
	}
	if n := e.count(t, `SELECT count(*) FROM merge_audit`); n != 0 {
		t.Errorf("--enqueue merged here: %d merge_audit rows", n)
	}
}
