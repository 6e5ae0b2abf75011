package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
)

// failedAttempts counts key's attempts that failed with an error containing text.
func (b *bundle) failedAttempts(t *testing.T, key, text string) int {
	t.Helper()
	return b.count(t, `SELECT count(*) FROM pubq.attempts WHERE job_key = $1 AND outcome = 'retry' AND strpos(error, $2) > 0`, key, text)
}

// mustNotFinish fails the test at once if key finished while it should still be failing.
func (b *bundle) mustNotFinish(t *testing.T, key string) {
	t.Helper()
	if s, _, _ := b.state(t, key); s == "succeeded" || s == "dead" {
		t.Fatalf("job %s is %s while its fault holds", key, s)
	}
}

// A merge whose last statement fails (a trigger raises when the duplicate is marked merged, after
// every row was moved and folded) leaves the database as it was, and is retried until it passes.
func TestFailedMergeLeavesTheDatabaseUnchangedAndRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testQueues, jobs.Config{})
	res := b.seed(t, 300, 0.2)
	p := res.Duplicates[0]
	b.exec(t, `CREATE TABLE merge_fault (fail boolean NOT NULL); INSERT INTO merge_fault VALUES (true)`)
	b.exec(t, `CREATE FUNCTION merge_fault() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT fail FROM merge_fault) THEN RAISE EXCEPTION 'injected merge fault'; END IF;
			RETURN NEW;
		END $$`)
	b.exec(t, `CREATE TRIGGER merge_fault BEFORE UPDATE OF merged_into ON students FOR EACH ROW EXECUTE FUNCTION merge_fault()`)
	before := b.fingerprint(t)
	b.run(t)

	key := jobs.MergeKey(p.SurvivorID, p.DuplicateID)
	b.enqueue(t, jobs.KindMerge, key, merge.MergeRequest{SurvivorID: p.SurvivorID, DuplicateID: p.DuplicateID})
	waitFor(t, settle, "two failed attempts", func() bool {
		b.mustNotFinish(t, key)
		return b.failedAttempts(t, key, "injected merge fault") >= 2
	})
	if d := diffFingerprints(before, b.fingerprint(t)); d != "" && d != "merge_fault" {
		t.Fatalf("failed attempts changed %s", d)
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit`); n != 0 {
		t.Fatalf("failed attempts left %d audit rows", n)
	}
	b.mustNotFinish(t, key)

	b.exec(t, `UPDATE merge_fault SET fail = false`)
	waitFor(t, settle, "the merge to succeed", func() bool { s, _, _ := b.state(t, key); return s == "succeeded" })
	if err := merge.Verify(ctx, b.pool, p.SurvivorID, p.DuplicateID, nil); err != nil {
		t.Fatal(err)
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit WHERE NOT dry_run`); n != 1 {
		t.Fatalf("%d merges audited, want 1", n)
	}
}

// A merge that verification rejects (here: the duplicate's enrollment in a course that does not
// exist, which only a load with triggers off can leave, and which the merge moves to the survivor)
// fails its attempt and is rolled back; once the data is repaired the retry merges. An orphan the
// merge does not touch is not its doing and does not hold it up: only merge.VerifyDatabase sees it.
func TestFailedVerificationFailsTheMerge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testQueues, jobs.Config{})
	res := b.seed(t, 300, 0.2)
	p := res.Duplicates[0]
	insertOrphan(t, b, `INSERT INTO enrollments (student_id, course_id) VALUES ($1, 987654)`, p.DuplicateID)
	insertOrphan(t, b, `INSERT INTO library_loans (student_id, title) VALUES (999999999, 'orphan')`)
	before := b.fingerprint(t)
	b.run(t)

	key := jobs.MergeKey(p.SurvivorID, p.DuplicateID)
	b.enqueue(t, jobs.KindMerge, key, merge.MergeRequest{SurvivorID: p.SurvivorID, DuplicateID: p.DuplicateID})
	waitFor(t, settle, "two failed verifications", func() bool {
		b.mustNotFinish(t, key)
		return b.failedAttempts(t, key, "enrollments: 1 orphan rows") >= 2
	})
	if d := diffFingerprints(before, b.fingerprint(t)); d != "" {
		t.Fatalf("attempts that failed verification changed %s", d)
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit`); n != 0 {
		t.Fatalf("%d audit rows after failed verifications", n)
	}

	b.exec(t, `DELETE FROM enrollments WHERE course_id = 987654`)
	waitFor(t, settle, "the merge to succeed", func() bool { s, _, _ := b.state(t, key); return s == "succeeded" })
	if err := merge.Verify(ctx, b.pool, p.SurvivorID, p.DuplicateID, nil); err != nil {
		t.Fatal(err)
	}
	err := merge.VerifyDatabase(ctx, b.pool, p.SurvivorID, p.DuplicateID, nil)
	if !errors.Is(err, merge.ErrVerify) || !strings.Contains(err.Error(), "library_loans: 1 orphan rows") {
		t.Fatalf("VerifyDatabase = %v, want the library loan orphan", err)
	}
	// MergePair with VerifyDatabase refuses the next merge because of it.
	q := res.Duplicates[1]
	_, err = mergePair(t, b, q.SurvivorID, q.DuplicateID, jobs.MergeOptions{Verify: true, VerifyDatabase: true})
	if !errors.Is(err, merge.ErrVerify) || !strings.Contains(err.Error(), "library_loans: 1 orphan rows") {
		t.Fatalf("MergePair with VerifyDatabase = %v, want the library loan orphan", err)
	}
}

// insertOrphan runs sql bypassing the FKs, as a bulk load with triggers disabled would.
func insertOrphan(t *testing.T, b *bundle, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, sql, args...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Requests retrying cannot fix are dead-lettered on their first attempt.
func TestHopelessJobsAreDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, testQueues, jobs.Config{})
	res := b.seed(t, 200, 0.2)
	p := res.Duplicates[0]
	b.run(t)

	cases := []struct {
		kind, key string
		payload   any
		want      string
	}{
		{jobs.KindMerge, "same", merge.MergeRequest{SurvivorID: p.SurvivorID, DuplicateID: p.SurvivorID}, "same student"},
		{jobs.KindMerge, "missing", merge.MergeRequest{SurvivorID: p.SurvivorID, DuplicateID: 999999999}, "not found"},
		{jobs.KindMerge, "zero", map[string]any{"survivor_id": 0, "duplicate_id": p.DuplicateID}, "must be positive"},
		{jobs.KindMerge, "garbled", map[string]any{"survivor_id": "seven"}, "decoding account.merge payload"},
		{jobs.KindScan, "no-ranges", scan.ScanRequest{Ranges: 0, Mode: scan.ModeAuto}, "must be positive"},
		{jobs.KindScan, "too-many", scan.ScanRequest{Ranges: jobs.MaxRanges + 1}, "at most"},
		{jobs.KindScan, "bad-mode", scan.ScanRequest{Ranges: 4, Mode: "merge_everything"}, "unknown mode"},
		{jobs.KindScanRange, "backwards", scan.RangeRequest{Range: scan.Range{First: 10, Last: 1}, Mode: scan.ModeAuto}, "invalid range"},
		{jobs.KindScanRange, "range-mode", scan.RangeRequest{Range: scan.Range{First: 1, Last: 10}, Mode: "yes"}, "unknown mode"},
	}
	for _, c := range cases {
		b.enqueue(t, c.kind, c.key, c.payload)
	}
	b.waitSettled(t, settle)
	for _, c := range cases {
		state, attempt, reason := b.state(t, c.key)
		var lastErr string
		if err := b.pool.QueryRow(context.Background(), `SELECT coalesce(last_error, '') FROM pubq.jobs WHERE key = $1`, c.key).Scan(&lastErr); err != nil {
			t.Fatal(err)
		}
		if state != "dead" || attempt != 1 || reason != job.ReasonPermanent || !strings.Contains(lastErr, c.want) {
			t.Errorf("%s %s: %s after %d attempts (%s: %q); want dead after 1 (permanent: …%s…)", c.kind, c.key, state, attempt, reason, lastErr, c.want)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit`); n != 0 {
		t.Errorf("%d audit rows", n)
	}
}

// A pair merged before succeeds as a no-op, whoever enqueued it again under whatever key.
func TestMergingAMergedPairAgainIsANoOp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testQueues, jobs.Config{})
	res := b.seed(t, 200, 0.2)
	p := res.Duplicates[0]
	req := merge.MergeRequest{SurvivorID: p.SurvivorID, DuplicateID: p.DuplicateID}
	b.run(t)
	b.enqueue(t, jobs.KindMerge, jobs.MergeKey(p.SurvivorID, p.DuplicateID), req)
	b.waitSettled(t, settle, jobs.MergeKey(p.SurvivorID, p.DuplicateID))
	after := b.fingerprint(t)
	b.enqueue(t, jobs.KindMerge, "by-hand", req)
	req.DryRun = true
	b.enqueue(t, jobs.KindMerge, "by-hand-dry", req)
	b.waitSettled(t, settle, "by-hand", "by-hand-dry")
	for _, k := range []string{jobs.MergeKey(p.SurvivorID, p.DuplicateID), "by-hand", "by-hand-dry"} {
		if s, _, _ := b.state(t, k); s != "succeeded" {
			t.Errorf("%s: %s", k, s)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM merge_audit`); n != 1 {
		t.Errorf("%d audit rows, want the first merge's only", n)
	}
	if d := diffFingerprints(after, b.fingerprint(t)); d != "" {
		t.Errorf("merging again changed %s", d)
	}
	if err := merge.Verify(ctx, b.pool, p.SurvivorID, p.DuplicateID, nil); err != nil {
		t.Fatal(err)
	}
}

// student inserts a student with a profile, an enrollment and a message, enough for a merge to move.
func student(t *testing.T, b *bundle, name string) int64 {
	t.Helper()
	var id int64
	err := b.pool.QueryRow(context.Background(), `WITH s AS (INSERT INTO students (email, first_name, last_name) VALUES ($1, $2, 'X') RETURNING id),
		c AS (INSERT INTO courses (code, title) VALUES ($2, 'c') RETURNING id),
		e AS (INSERT INTO enrollments (student_id, course_id) SELECT s.id, c.id FROM s, c),
		m AS (INSERT INTO messages (sender_id, body) SELECT id, 'hi' FROM s)
		SELECT id FROM s`, name+"@example.com", name).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mergePair(t *testing.T, b *bundle, s, d int64, opts jobs.MergeOptions) (*jobs.MergeResult, error) {
	t.Helper()
	var res *jobs.MergeResult
	err := pgx.BeginFunc(context.Background(), b.pool, func(tx pgx.Tx) error {
		var err error
		res, err = jobs.MergePair(context.Background(), tx, merge.MergeRequest{SurvivorID: s, DuplicateID: d}, opts)
		return err
	})
	return res, err
}

// A chain A <- B, B <- C ends with everything in A whichever merge runs first.
func TestMergeFollowsAMergedAwaySurvivor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testQueues, jobs.Config{})
	a, bb, c := student(t, b, "a"), student(t, b, "b"), student(t, b, "c")
	if _, err := mergePair(t, b, a, bb, jobs.MergeOptions{Verify: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := mergePair(t, b, bb, c, jobs.MergeOptions{Verify: true}); !errors.Is(err, merge.ErrSurvivorMerged) {
		t.Fatalf("without FollowSurvivor: %v, want ErrSurvivorMerged", err)
	}
	res, err := mergePair(t, b, bb, c, jobs.MergeOptions{Verify: true, FollowSurvivor: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Report.SurvivorID != a || res.RequestedSurvivorID != bb || !res.Verified {
		t.Fatalf("result %+v (report %+v); want merged into %d, requested %d, verified", res, res.Report, a, bb)
	}
	if err := merge.Verify(ctx, b.pool, a, c, nil); err != nil {
		t.Fatal(err)
	}
	if n := b.count(t, `SELECT count(*) FROM enrollments WHERE student_id = $1`, a); n != 3 {
		t.Fatalf("survivor has %d enrollments, want 3", n)
	}

	// The other way round: x was merged into y, then someone asks to merge y into x.
	x, y := student(t, b, "x"), student(t, b, "y")
	if _, err := mergePair(t, b, y, x, jobs.MergeOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = mergePair(t, b, x, y, jobs.MergeOptions{FollowSurvivor: true})
	if !errors.Is(err, merge.ErrSameStudent) || !merge.IsPermanent(err) || !strings.Contains(err.Error(), "one account already") {
		t.Fatalf("merging back: %v, want a permanent ErrSameStudent", err)
	}
}

// MergePair's verification and its failures leave the transaction usable and unchanged.
func TestMergePairVerifyAndFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testQueues, jobs.Config{})
	s, d := student(t, b, "s"), student(t, b, "d")
	insertOrphan(t, b, `INSERT INTO library_loans (student_id, title) VALUES (999999999, 'orphan')`)
	before := b.fingerprint(t)
	if _, err := mergePair(t, b, s, d, jobs.MergeOptions{Verify: true, VerifyDatabase: true}); !errors.Is(err, merge.ErrVerify) || merge.IsPermanent(err) {
		t.Fatalf("with an orphan: %v, want a retryable ErrVerify", err)
	}
	if d := diffFingerprints(before, b.fingerprint(t)); d != "" {
		t.Fatalf("a failed verification changed %s", d)
	}
	// Verified for the pair the same merge goes through (the orphan is not this merge's doing).
	res, err := mergePair(t, b, s, d, jobs.MergeOptions{Verify: true})
	if err != nil || !res.Verified || res.Report.Totals().Moved == 0 {
		t.Fatalf("pair-verified merge: %+v, %v", res, err)
	}

	// A failed attempt inside a caller's transaction leaves it usable, its earlier work kept.
	err = pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO badges (name) VALUES ('kept')`); err != nil {
			return err
		}
		if _, err := jobs.MergePair(ctx, tx, merge.MergeRequest{SurvivorID: s, DuplicateID: 999999999}, jobs.MergeOptions{FollowSurvivor: true}); !errors.Is(err, merge.ErrNotFound) {
			return fmt.Errorf("missing duplicate: %v", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO badges (name) VALUES ('after')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := b.count(t, `SELECT count(*) FROM badges WHERE name IN ('kept', 'after')`); n != 2 {
		t.Fatalf("%d of the transaction's own rows committed, want 2", n)
	}
}

// failingEnqueuer fails every enqueue with err.
type failingEnqueuer struct{ err error }

func (f failingEnqueuer) EnqueueTx(context.Context, pgx.Tx, ...publish.Request) ([]publish.Result, error) {
	return nil, f.err
}

// An enqueue that fails fails the fan-out job: retried when it may pass next time, dead-lettered
// when the same request can never be accepted.
func TestFanOutEnqueueFailures(t *testing.T) {
	t.Parallel()
	b := setup(t, testQueues, jobs.Config{})
	b.seed(t, 200, 0.2)
	transient := errors.New("connection reset")
	for _, c := range []struct {
		err  error
		want job.Outcome
	}{
		{transient, job.OutcomeRetry},
		{fmt.Errorf("wrapped: %w", publish.ErrKeyConflict), job.OutcomePermanent},
		{publish.ErrUnknownKind, job.OutcomePermanent},
	} {
		h, err := jobs.New(jobs.Config{Publisher: failingEnqueuer{c.err}})
		if err != nil {
			t.Fatal(err)
		}
		err = runHandler(t, b.pool, h.Scan, jobs.KindScan, "s", scan.ScanRequest{Ranges: 2, Mode: scan.ModeAuto})
		if got, _ := job.Classify(err); got != c.want || !errors.Is(err, c.err) {
			t.Errorf("scan, enqueue failing with %v: %v (%s), want %s", c.err, err, got, c.want)
		}
		err = runHandler(t, b.pool, h.ScanRange, jobs.KindScanRange, "r", scan.RangeRequest{Range: scan.Range{First: 0, Last: 1 << 40}, Mode: scan.ModeAuto})
		if got, _ := job.Classify(err); got != c.want || !errors.Is(err, c.err) {
			t.Errorf("scan range, enqueue failing with %v: %v (%s), want %s", c.err, err, got, c.want)
		}
	}
	if _, err := jobs.New(jobs.Config{}); err == nil {
		t.Error("New without a publisher: no error")
	}
}
