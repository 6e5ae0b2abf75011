package merge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/internal/pgtest"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/testenv"
)

func mergeOK(t *testing.T, w *world) *merge.Report {
	t.Helper()
	rep, err := pgtest.MergeCommit(t, w.pool, w.S, w.D, merge.Options{})
	if err != nil {
		t.Fatalf("Merge: %v", err)
	}
	if err := merge.Verify(context.Background(), w.pool, w.S, w.D, rep); err != nil {
		t.Fatalf("Verify after merge: %v", err)
	}
	return rep
}

func tableReport(t *testing.T, rep *merge.Report, name string) merge.TableReport {
	t.Helper()
	tr, ok := rep.Table(name)
	if !ok {
		t.Fatalf("report has no %s: %+v", name, rep.Tables)
	}
	return tr
}

func wantCounts(t *testing.T, rep *merge.Report, name string, moved, folded, deleted, filled int64) {
	t.Helper()
	tr := tableReport(t, rep, name)
	if tr.Moved != moved || tr.Folded != folded || tr.Deleted != deleted || tr.Filled != filled {
		t.Errorf("%s: moved/folded/deleted/filled = %d/%d/%d/%d, want %d/%d/%d/%d",
			name, tr.Moved, tr.Folded, tr.Deleted, tr.Filled, moved, folded, deleted, filled)
	}
}

func TestMergeMarksDuplicateAndKeepsIt(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	if got := one(t, w.pool, `SELECT merged_into FROM students WHERE id = $1`, w.D); got != w.S {
		t.Fatalf("duplicate merged_into = %d, want %d", got, w.S)
	}
	if n := one(t, w.pool, `SELECT count(*) FROM students WHERE id = $1 AND merged_into IS NULL`, w.S); n != 1 {
		t.Fatal("survivor changed")
	}
	// The account merged into D earlier now points at S: no chain through a merged account.
	if got := one(t, w.pool, `SELECT merged_into FROM students WHERE id = $1`, w.ids["old"]); got != w.S {
		t.Fatalf("earlier merge now points at %d, want %d", got, w.S)
	}
	wantCounts(t, rep, "students", 1, 0, 0, 0)
	if n := one(t, w.pool, `SELECT count(*) FROM merge_audit WHERE survivor_id = $1 AND duplicate_id = $2 AND NOT dry_run
		AND (report->>'survivor_id')::bigint = $1`, w.S, w.D); n != 1 {
		t.Fatalf("%d audit rows, want 1", n)
	}
}

func TestMergeSameCourseInBothAccounts(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	// The survivor's MATCH1 enrollment is kept as it was; D's is gone; D's BIO1 moved.
	if st := one(t, w.pool, `SELECT count(*) FROM enrollments WHERE id = $1 AND student_id = $2 AND status = 'active'`, w.ids["enrS1"], w.S); st != 1 {
		t.Fatal("survivor's enrollment in the shared course was not kept unchanged")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM enrollments WHERE id = $1`, w.ids["enrD1"]); n != 0 {
		t.Fatal("duplicate's enrollment in the shared course still exists")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM enrollments WHERE id = $1 AND student_id = $2`, w.ids["enrD2"], w.S); n != 1 {
		t.Fatal("duplicate's other enrollment did not move")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM enrollments WHERE student_id = $1`, w.X); n != 1 {
		t.Fatal("bystander's enrollment touched")
	}
	wantCounts(t, rep, "enrollments", 1, 0, 1, 0)
}

func TestMergeMessagesBetweenTheTwoAccounts(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	check := func(name string, sender int64, recipient *int64) {
		t.Helper()
		var s int64
		var r *int64
		if err := w.pool.QueryRow(context.Background(), `SELECT sender_id, recipient_id FROM messages WHERE id = $1`, w.ids[name]).Scan(&s, &r); err != nil {
			t.Fatal(err)
		}
		if s != sender || (r == nil) != (recipient == nil) || (r != nil && *r != *recipient) {
			t.Errorf("%s: sender %d recipient %v, want %d %v", name, s, r, sender, recipient)
		}
	}
	check("msgDS", w.S, &w.S) // sender=dup, recipient=survivor: both columns end on S
	check("msgSD", w.S, &w.S)
	check("msgDnull", w.S, nil) // the NULL recipient stays NULL
	check("msgXD", w.X, &w.S)
	wantCounts(t, rep, "messages", 4, 0, 0, 0)
	tr := tableReport(t, rep, "messages")
	if tr.SurvivorRowsBefore != 2 || tr.DuplicateRowsBefore != 4 || tr.SurvivorRows != 4 {
		t.Errorf("messages census %+v", tr)
	}
}

func TestMergeCascadeChildrenSurvive(t *testing.T) {
	w := newWorld(t)
	before := one(t, w.pool, `SELECT count(*) FROM grade_comments`)
	payments := one(t, w.pool, `SELECT count(*) FROM payments`)
	mergeOK(t, w)
	// Nothing below an ON DELETE CASCADE FK was lost: every comment is still there, re-pointed.
	if after := one(t, w.pool, `SELECT count(*) FROM grade_comments`); after != before {
		t.Fatalf("grade_comments %d -> %d", before, after)
	}
	if after := one(t, w.pool, `SELECT count(*) FROM payments`); after != payments {
		t.Fatalf("payments %d -> %d", payments, after)
	}
	// D's forum post and the replies below it survive with their thread intact.
	if n := one(t, w.pool, `SELECT count(*) FROM forum_posts WHERE id = $1 AND author_id = $2`, w.ids["postD"], w.S); n != 1 {
		t.Fatal("duplicate's forum post lost or not moved")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM forum_posts WHERE id = $1 AND parent_post_id = $2`, w.ids["postS"], w.ids["postD"]); n != 1 {
		t.Fatal("reply lost its parent")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM invoices i JOIN payments p ON p.invoice_id = i.id WHERE i.student_id = $1`, w.S); n != 1 {
		t.Fatal("invoice and payment did not follow the student")
	}
}

func TestMergeNullableForeignKeys(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	if n := one(t, w.pool, `SELECT count(*) FROM library_loans WHERE id = $1 AND student_id IS NULL`, w.ids["loanNull"]); n != 1 {
		t.Fatal("loan without a student was touched")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM library_loans WHERE id = $1 AND student_id = $2`, w.ids["loanD"], w.S); n != 1 {
		t.Fatal("duplicate's loan did not move")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM grade_comments WHERE id = $1 AND author_student_id = $2`, w.ids["cXbyD"], w.S); n != 1 {
		t.Fatal("peer comment authored by the duplicate did not move")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM grade_comments WHERE id = $1 AND author_student_id IS NULL`, w.ids["cXstaff"]); n != 1 {
		t.Fatal("staff comment (NULL author) was touched")
	}
	wantCounts(t, rep, "library_loans", 1, 0, 0, 0)
}

func TestMergeCompositeKeys(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	// guardians_students (guardian_id, student_id): g1 was linked to both, g2 to D only.
	if n := one(t, w.pool, `SELECT count(*) FROM guardians_students WHERE student_id = $1`, w.S); n != 2 {
		t.Fatalf("survivor has %d guardian links, want 2", n)
	}
	wantCounts(t, rep, "guardians_students", 1, 0, 1, 0)
	// attendance (student_id, session_id): both attended sess1, the survivor's row ('present') wins.
	if n := one(t, w.pool, `SELECT count(*) FROM attendance WHERE student_id = $1 AND session_id = $2 AND status = 'present'`, w.S, w.ids["sess1"]); n != 1 {
		t.Fatal("survivor's attendance of the shared session not kept")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM attendance WHERE student_id = $1 AND session_id = $2`, w.S, w.ids["sess2"]); n != 1 {
		t.Fatal("duplicate's attendance of sess2 did not move")
	}
	// attendance_notes references the composite key: the note on the folded row is re-pointed at
	// the survivor's row, the note on the moved row moves with it; none is lost.
	for _, note := range []string{"noteD1", "noteD2"} {
		if n := one(t, w.pool, `SELECT count(*) FROM attendance_notes WHERE id = $1 AND student_id = $2`, w.ids[note], w.S); n != 1 {
			t.Errorf("%s not on the survivor", note)
		}
	}
	wantCounts(t, rep, "attendance", 1, 0, 1, 0)
	wantCounts(t, rep, "attendance_notes", 1, 1, 0, 0)
	wantCounts(t, rep, "student_badges", 1, 0, 1, 0)
}

func TestMergeThreeDeepChain(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	// a1: both submitted and were graded. S's submission and grade win; D's grade comments are
	// re-pointed to S's grade; D's submission and grade are deleted.
	if n := one(t, w.pool, `SELECT count(*) FROM submissions WHERE id IN ($1, $2)`, w.ids["subD1"], w.ids["subD3"]); n != 0 {
		t.Fatal("duplicate's colliding submissions still exist")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM grades WHERE id = $1`, w.ids["gD1"]); n != 0 {
		t.Fatal("duplicate's colliding grade still exists")
	}
	// ... but nothing it held is lost: the report (which goes to merge_audit) keeps the deleted rows whole.
	var gradeRow map[string]any
	for _, f := range rep.Folds {
		if f.Table == "public.grades" || f.Table == "grades" {
			if err := json.Unmarshal(f.Row, &gradeRow); err != nil {
				t.Fatalf("fold of %s %s: row %s: %v", f.Table, f.Deleted, f.Row, err)
			}
		}
	}
	if gradeRow == nil || gradeRow["score"] != float64(70) || gradeRow["id"] != float64(w.ids["gD1"]) {
		t.Errorf("the deleted grade in the report: %v (folds %+v)", gradeRow, rep.Folds)
	}
	if n := one(t, w.pool, `SELECT count(*) FROM grade_comments WHERE grade_id = $1`, w.ids["gS1"]); n != 3 {
		t.Fatalf("survivor's grade has %d comments, want its own plus the duplicate's two", n)
	}
	// a2: only D submitted: submission, grade and comment move whole.
	if n := one(t, w.pool, `SELECT count(*) FROM submissions s JOIN grades g ON g.submission_id = s.id
		JOIN grade_comments c ON c.grade_id = g.id WHERE s.id = $1 AND s.student_id = $2 AND c.id = $3`,
		w.ids["subD2"], w.S, w.ids["cD2"]); n != 1 {
		t.Fatal("duplicate's own submission chain did not move intact")
	}
	// a3: both submitted, only D's was graded: the grade is re-pointed to S's submission.
	if n := one(t, w.pool, `SELECT count(*) FROM grades WHERE id = $1 AND submission_id = $2`, w.ids["gD3"], w.ids["subS3"]); n != 1 {
		t.Fatal("duplicate's grade did not move to the survivor's submission")
	}
	wantCounts(t, rep, "submissions", 1, 0, 2, 0)
	wantCounts(t, rep, "grades", 0, 1, 1, 0)
	wantCounts(t, rep, "grade_comments", 1, 2, 0, 0)
}

func TestMergeUniqueProfileRow(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	var id int64
	var name, bio, avatar, tz *string
	if err := w.pool.QueryRow(context.Background(), `SELECT id, display_name, bio, avatar_url, timezone FROM student_profiles WHERE student_id = $1`, w.S).
		Scan(&id, &name, &bio, &avatar, &tz); err != nil {
		t.Fatal(err)
	}
	// The survivor's row is kept; what it knew wins; what it lacked comes from the duplicate's.
	if id != w.ids["profS"] || *name != "Ana D" || *tz != "UTC" || bio == nil || *bio != "likes math" || avatar == nil || *avatar != "https://a/1.png" {
		t.Fatalf("profile = %d %v %v %v %v", id, *name, bio, avatar, *tz)
	}
	wantCounts(t, rep, "student_profiles", 0, 0, 1, 1)
}

func TestMergeProfileOnlyOnDuplicateMoves(t *testing.T) {
	w := newWorld(t)
	mustExec(t, w.pool, `DELETE FROM student_profiles WHERE student_id = $1`, w.S)
	rep := mergeOK(t, w)
	if n := one(t, w.pool, `SELECT count(*) FROM student_profiles WHERE id = $1 AND student_id = $2`, w.ids["profD"], w.S); n != 1 {
		t.Fatal("duplicate's profile did not move")
	}
	wantCounts(t, rep, "student_profiles", 1, 0, 0, 0)
}

func TestDryRunWritesNothingAndEqualsRealRun(t *testing.T) {
	w := newWorld(t)
	before := snapshot(t, w.pool)
	plan, err := pgtest.MergeCommit(t, w.pool, w.S, w.D, merge.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.DryRun {
		t.Fatal("dry run report not marked")
	}
	if after := snapshot(t, w.pool); after != before {
		t.Fatalf("dry run changed data:\nbefore\n%s\nafter\n%s", before, after)
	}
	if n := one(t, w.pool, `SELECT count(*) FROM merge_audit WHERE dry_run`); n != 1 {
		t.Fatalf("%d dry-run audit rows, want 1", n)
	}
	if err := merge.Verify(context.Background(), w.pool, w.S, w.D, plan); err == nil {
		t.Fatal("Verify accepted a dry run's report on unmerged data")
	}

	// Plan, the same thing by name, inside a transaction that goes on afterwards.
	tx, err := w.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	plan2, err := merge.Plan(context.Background(), tx, w.S, w.D)
	if err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(context.Background())

	real := mergeOK(t, w)
	for _, p := range []*merge.Report{plan, plan2} {
		p.DryRun = false
		pj, _ := json.Marshal(p)
		rj, _ := json.Marshal(real)
		if !bytes.Equal(pj, rj) {
			t.Fatalf("dry run report differs from the real run's:\n%s\n%s", pj, rj)
		}
	}
}

func TestFailureHalfwayLeavesDatabaseUnchanged(t *testing.T) {
	w := newWorld(t)
	// grade_comments are re-pointed in the middle of the fold phase, after enrollments, attendance
	// and submissions were already folded in the same savepoint.
	mustExec(t, w.pool, `CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$`)
	mustExec(t, w.pool, `CREATE TRIGGER boom BEFORE UPDATE ON grade_comments FOR EACH ROW EXECUTE FUNCTION boom()`)
	failingMerge(t, w, merge.Options{}, "injected failure")
	failingMerge(t, w, merge.Options{DryRun: true}, "injected failure")
	// With the fault gone the same merge goes through.
	mustExec(t, w.pool, `DROP TRIGGER boom ON grade_comments`)
	mergeOK(t, w)
}

func TestFailureInMovePhaseLeavesDatabaseUnchanged(t *testing.T) {
	w := newWorld(t)
	// library_loans is only touched by the final move statement, after every fold.
	mustExec(t, w.pool, `CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$`)
	mustExec(t, w.pool, `CREATE TRIGGER boom BEFORE UPDATE ON library_loans FOR EACH ROW EXECUTE FUNCTION boom()`)
	failingMerge(t, w, merge.Options{}, "merge: moving references")
}

func TestRerunIsNoOp(t *testing.T) {
	w := newWorld(t)
	first := mergeOK(t, w)
	before := snapshot(t, w.pool)
	again, err := pgtest.MergeCommit(t, w.pool, w.S, w.D, merge.Options{})
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	if again.AlreadyMergedInto != w.S || len(again.Tables) != 0 {
		t.Fatalf("re-run report = %+v, want a no-op already merged into %d", again, w.S)
	}
	var buf bytes.Buffer
	if err := again.Format(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "already merged into") {
		t.Fatalf("no-op report reads %q", buf.String())
	}
	if after := snapshot(t, w.pool); after != before {
		t.Fatal("re-run changed data")
	}
	if err := merge.Verify(context.Background(), w.pool, w.S, w.D, first); err != nil {
		t.Fatalf("Verify after the re-run: %v", err)
	}
}

func TestMergeValidation(t *testing.T) {
	w := newWorld(t)
	run := func(s, d int64) (*merge.Report, error) { return pgtest.MergeCommit(t, w.pool, s, d, merge.Options{}) }

	if _, err := run(w.S, w.S); !errors.Is(err, merge.ErrSameStudent) {
		t.Errorf("same id: %v", err)
	}
	if _, err := run(w.S, 999999); !errors.Is(err, merge.ErrNotFound) || !strings.Contains(err.Error(), "duplicate 999999") {
		t.Errorf("missing duplicate: %v", err)
	}
	if _, err := run(999999, w.D); !errors.Is(err, merge.ErrNotFound) || !strings.Contains(err.Error(), "survivor 999999") {
		t.Errorf("missing survivor: %v", err)
	}
	// "old" was merged into D: as a survivor it is refused, as a duplicate it is a no-op.
	if _, err := run(w.ids["old"], w.X); !errors.Is(err, merge.ErrSurvivorMerged) {
		t.Errorf("merged survivor: %v", err)
	}
	rep, err := run(w.X, w.ids["old"])
	if err != nil || rep.AlreadyMergedInto != w.D {
		t.Errorf("already merged duplicate: %+v, %v", rep, err)
	}
	for _, err := range []error{merge.ErrSameStudent, merge.ErrNotFound, merge.ErrSurvivorMerged, merge.ErrInvalidRequest} {
		if !merge.IsPermanent(err) {
			t.Errorf("%v not permanent", err)
		}
	}
	if merge.IsPermanent(errors.New("merge: connection reset")) {
		t.Error("a transient error classed permanent")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM students WHERE merged_into IS NOT NULL`); n != 1 {
		t.Fatalf("validation failures merged something: %d merged", n)
	}
}

func TestMergeCoversTableAddedAtRunTime(t *testing.T) {
	w := newWorld(t)
	// Next year's tables: no code knows them. Scholarships are unique per (student, year) and have
	// disbursements; a many-to-many "study buddies" table has two FKs to students and a composite PK.
	mustExec(t, w.pool, `CREATE TABLE scholarships (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		student_id bigint NOT NULL REFERENCES students (id) ON DELETE CASCADE,
		year int NOT NULL, amount int NOT NULL, UNIQUE (student_id, year))`)
	mustExec(t, w.pool, `CREATE TABLE disbursements (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		scholarship_id bigint NOT NULL REFERENCES scholarships (id) ON DELETE CASCADE, amount int NOT NULL)`)
	mustExec(t, w.pool, `CREATE TABLE study_buddies (
		a bigint REFERENCES students (id), b bigint REFERENCES students (id), PRIMARY KEY (a, b))`)
	sS := one(t, w.pool, `INSERT INTO scholarships (student_id, year, amount) VALUES ($1, 2025, 100) RETURNING id`, w.S)
	sD := one(t, w.pool, `INSERT INTO scholarships (student_id, year, amount) VALUES ($1, 2025, 50) RETURNING id`, w.D)
	one(t, w.pool, `INSERT INTO scholarships (student_id, year, amount) VALUES ($1, 2026, 70) RETURNING id`, w.D)
	one(t, w.pool, `INSERT INTO disbursements (scholarship_id, amount) VALUES ($1, 50) RETURNING id`, sD)
	// (X, D) and (X, S) collide once D is S; (D, S) and (S, D) both become (S, S): two changed
	// rows collide with each other, and one of them is kept and moved.
	mustExec(t, w.pool, `INSERT INTO study_buddies VALUES ($1, $2), ($1, $3), ($2, $3), ($3, $2)`, w.X, w.D, w.S)

	rep := mergeOK(t, w)
	wantCounts(t, rep, "scholarships", 1, 0, 1, 0)
	wantCounts(t, rep, "disbursements", 0, 1, 0, 0)
	wantCounts(t, rep, "study_buddies", 1, 0, 2, 0)
	if n := one(t, w.pool, `SELECT count(*) FROM disbursements WHERE scholarship_id = $1`, sS); n != 1 {
		t.Fatal("disbursement of the folded scholarship not re-pointed")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM study_buddies WHERE a = $1 AND b = $1`, w.S); n != 1 {
		t.Fatal("(D, S) did not become (S, S)")
	}
}

func TestVerifyCatchesPlantedOrphanAndStaleReference(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	ctx := context.Background()

	// replica mode skips the FK triggers, as a careless bulk load would.
	plant := func(sql string, args ...any) {
		t.Helper()
		conn, err := w.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		mustExec(t, conn, `SET session_replication_role = replica`)
		mustExec(t, conn, sql, args...)
		mustExec(t, conn, `RESET session_replication_role`)
	}
	wantOrphan := func(err error, what, want string) {
		t.Helper()
		if !errors.Is(err, merge.ErrVerify) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s = %v, want %q", what, err, want)
		}
	}
	ok := func(err error, what string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// An orphan among the rows the merge touched: a comment on the duplicate's grade that the fold
	// deleted. Verify finds it through the keys the report recorded, or with no report through the
	// pair's merge_audit row.
	if len(rep.Folds) == 0 {
		t.Fatal("report records no folds")
	}
	plant(`INSERT INTO grade_comments (grade_id, body) VALUES ($1, 'orphan')`, w.ids["gD1"])
	wantOrphan(merge.Verify(ctx, w.pool, w.S, w.D, rep), "Verify", "grade_comments: 1 orphan rows")
	wantOrphan(merge.Verify(ctx, w.pool, w.S, w.D, nil), "Verify without a report", "grade_comments: 1 orphan rows")
	wantOrphan(merge.VerifyDatabase(ctx, w.pool, w.S, w.D, rep), "VerifyDatabase", "grade_comments: 1 orphan rows")
	mustExec(t, w.pool, `DELETE FROM grade_comments WHERE body = 'orphan'`)

	// An orphan no merge touched is not this merge's doing: only the full sweep finds it.
	plant(`INSERT INTO grade_comments (grade_id, body) VALUES (987654, 'orphan')`)
	ok(merge.Verify(ctx, w.pool, w.S, w.D, rep), "Verify with an orphan outside the pair")
	wantOrphan(merge.VerifyDatabase(ctx, w.pool, w.S, w.D, rep), "VerifyDatabase", "grade_comments: 1 orphan rows")
	mustExec(t, w.pool, `DELETE FROM grade_comments WHERE grade_id = 987654`)

	// An orphan on an FK leaving the student side (enrollments -> courses): the bystander's is
	// found by the sweep, a row moved to the survivor by both.
	const courseOrphan = "enrollments: 1 orphan rows (enrollments_course_id_fkey references missing courses rows)"
	plant(`UPDATE enrollments SET course_id = 987654 WHERE id = $1`, w.ids["enrX1"])
	ok(merge.Verify(ctx, w.pool, w.S, w.D, rep), "Verify with the bystander's orphan")
	wantOrphan(merge.VerifyDatabase(ctx, w.pool, w.S, w.D, rep), "VerifyDatabase", courseOrphan)
	mustExec(t, w.pool, `UPDATE enrollments SET course_id = $1 WHERE id = $2`, w.ids["c1"], w.ids["enrX1"])
	plant(`UPDATE enrollments SET course_id = 987654 WHERE id = $1`, w.ids["enrD2"])
	wantOrphan(merge.Verify(ctx, w.pool, w.S, w.D, rep), "Verify", courseOrphan)
	wantOrphan(merge.VerifyDatabase(ctx, w.pool, w.S, w.D, rep), "VerifyDatabase", courseOrphan)
	mustExec(t, w.pool, `UPDATE enrollments SET course_id = $1 WHERE id = $2`, w.ids["c2"], w.ids["enrD2"])

	// A note moved to the survivor whose attendance row is gone (the multi-column FK).
	plant(`DELETE FROM attendance WHERE student_id = $1 AND session_id = $2`, w.S, w.ids["sess2"])
	wantOrphan(merge.Verify(ctx, w.pool, w.S, w.D, rep), "Verify", "attendance_notes: 1 orphan rows")
	plant(`INSERT INTO attendance (student_id, session_id, status) VALUES ($1, $2, 'present')`, w.S, w.ids["sess2"])

	ok(merge.Verify(ctx, w.pool, w.S, w.D, rep), "Verify after removing the orphans")
	ok(merge.VerifyDatabase(ctx, w.pool, w.S, w.D, rep), "VerifyDatabase after removing the orphans")

	// A row referencing the duplicate after the merge (an app that ignored merged_into).
	mustExec(t, w.pool, `INSERT INTO library_loans (student_id, title) VALUES ($1, 'late')`, w.D)
	err := merge.Verify(ctx, w.pool, w.S, w.D, rep)
	if !errors.Is(err, merge.ErrVerify) || !strings.Contains(err.Error(), "library_loans: 1 rows still reference duplicate") {
		t.Fatalf("Verify = %v, want the stale reference", err)
	}
	mustExec(t, w.pool, `DELETE FROM library_loans WHERE title = 'late'`)

	// A count that no longer matches the report.
	mustExec(t, w.pool, `DELETE FROM enrollments WHERE id = $1`, w.ids["enrD2"])
	err = merge.Verify(ctx, w.pool, w.S, w.D, rep)
	if !errors.Is(err, merge.ErrVerify) || !strings.Contains(err.Error(), "enrollments: 1 rows reference survivor") {
		t.Fatalf("Verify = %v, want the count mismatch", err)
	}
	// And a report for another pair.
	if err := merge.Verify(ctx, w.pool, w.X, w.D, rep); !errors.Is(err, merge.ErrVerify) {
		t.Fatalf("Verify of the wrong pair = %v", err)
	}
}

func TestReportFormatAndJSON(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	var buf bytes.Buffer
	if err := rep.Format(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"merge: duplicate", "enrollments", "grade_comments", "total"} {
		if !strings.Contains(out, want) {
			t.Errorf("Format output lacks %q:\n%s", want, out)
		}
	}
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"survivor_id"`, `"duplicate_id"`, `"dry_run"`, `"moved"`, `"folded"`, `"deleted"`} {
		if !bytes.Contains(js, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, js)
		}
	}
	var back merge.Report
	if err := json.Unmarshal(js, &back); err != nil || back.Totals() != rep.Totals() {
		t.Fatalf("JSON round trip: %v %+v", err, back.Totals())
	}
	if err := rep.Format(failingWriter{}); err == nil {
		t.Fatal("Format hid a write error")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRunRequest(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	var req merge.MergeRequest
	if err := json.Unmarshal([]byte(`{"survivor_id": 1, "duplicate_id": 2, "dry_run": true}`), &req); err != nil {
		t.Fatal(err)
	}
	if req != (merge.MergeRequest{SurvivorID: 1, DuplicateID: 2, DryRun: true}) {
		t.Fatalf("decoded %+v", req)
	}
	for _, bad := range []merge.MergeRequest{{SurvivorID: 0, DuplicateID: 2}, {SurvivorID: 1, DuplicateID: -2}} {
		if err := bad.Validate(); !errors.Is(err, merge.ErrInvalidRequest) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := merge.Run(ctx, tx, merge.MergeRequest{SurvivorID: w.S, DuplicateID: w.S}); !errors.Is(err, merge.ErrSameStudent) {
		t.Fatalf("Run same id: %v", err)
	}
	rep, err := merge.Run(ctx, tx, merge.MergeRequest{SurvivorID: w.S, DuplicateID: w.D, DryRun: true})
	if err != nil || !rep.DryRun || rep.Totals().Moved == 0 {
		t.Fatalf("Run dry: %+v %v", rep, err)
	}
	rep, err = merge.Run(ctx, tx, merge.MergeRequest{SurvivorID: w.S, DuplicateID: w.D})
	if err != nil || rep.DryRun {
		t.Fatalf("Run: %+v %v", rep, err)
	}
	if err := merge.Verify(ctx, tx, w.S, w.D, rep); err != nil {
		t.Fatal(err)
	}
}

func TestMergePartialNullsNotDistinctAndKeylessUniqueKeys(t *testing.T) {
	w := newWorld(t)
	// Advisors: one primary per student (partial unique index), one per (student, term) with
	// NULL terms colliding (NULLS NOT DISTINCT).
	mustExec(t, w.pool, `CREATE TABLE advisors (
		id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
		student_id bigint NOT NULL REFERENCES students (id),
		term text, is_primary boolean NOT NULL, name text NOT NULL, phone text,
		UNIQUE NULLS NOT DISTINCT (student_id, term, name))`)
	mustExec(t, w.pool, `CREATE UNIQUE INDEX advisors_one_primary ON advisors (student_id) WHERE is_primary`)
	mustExec(t, w.pool, `INSERT INTO advisors (student_id, term, is_primary, name, phone) VALUES
		($1, NULL, true, 'Ms S', NULL), ($2, NULL, true, 'Mr D', '555'),
		($1, NULL, false, 'Coach', NULL), ($2, NULL, false, 'Coach', '777'),
		($2, 'fall', false, 'Coach', NULL)`, w.S, w.D)
	// Lockers have no primary key: rows are identified by their unique key, which a child
	// references as a whole.
	mustExec(t, w.pool, `CREATE TABLE lockers (student_id bigint NOT NULL REFERENCES students (id), locker_no int NOT NULL,
		UNIQUE (student_id, locker_no))`)
	mustExec(t, w.pool, `CREATE TABLE locker_keys (serial text PRIMARY KEY, student_id bigint NOT NULL, locker_no int NOT NULL,
		FOREIGN KEY (student_id, locker_no) REFERENCES lockers (student_id, locker_no))`)
	mustExec(t, w.pool, `INSERT INTO lockers VALUES ($1, 5), ($2, 5), ($2, 6)`, w.S, w.D)
	mustExec(t, w.pool, `INSERT INTO locker_keys VALUES ('k-d5', $1, 5), ('k-d6', $1, 6)`, w.D)

	rep := mergeOK(t, w)
	// The partial index: both had a primary advisor; the survivor's stays primary.
	if n := one(t, w.pool, `SELECT count(*) FROM advisors WHERE student_id = $1 AND is_primary AND name = 'Ms S'`, w.S); n != 1 {
		t.Fatal("survivor's primary advisor not kept")
	}
	if n := one(t, w.pool, `SELECT count(*) FROM advisors WHERE student_id = $1 AND is_primary`, w.S); n != 1 {
		t.Fatalf("%d primary advisors", n)
	}
	// One primary per student makes it a one-row-per-student key: the survivor's NULL phone is
	// filled from the duplicate's primary advisor.
	if n := one(t, w.pool, `SELECT count(*) FROM advisors WHERE name = 'Ms S' AND phone = '555'`); n != 1 {
		t.Fatal("fill rule not applied through the partial unique index")
	}
	wantCounts(t, rep, "advisors", 1, 0, 2, 1)
	// NULLS NOT DISTINCT: both had ('Coach', NULL term); one row remains, the 'fall' one moved.
	if n := one(t, w.pool, `SELECT count(*) FROM advisors WHERE student_id = $1 AND name = 'Coach'`, w.S); n != 2 {
		t.Fatalf("%d Coach rows, want 2", n)
	}
	if n := one(t, w.pool, `SELECT count(*) FROM advisors`); n != 3 {
		t.Fatalf("%d advisors left, want 3", n)
	}
	// Lockers: (D, 5) folded into (S, 5), its key re-pointed; (D, 6) moved with its key.
	if n := one(t, w.pool, `SELECT count(*) FROM locker_keys WHERE student_id = $1`, w.S); n != 2 {
		t.Fatalf("%d locker keys on the survivor, want 2", n)
	}
	if n := one(t, w.pool, `SELECT count(*) FROM lockers WHERE student_id = $1`, w.S); n != 2 {
		t.Fatalf("%d lockers on the survivor, want 2", n)
	}
	wantCounts(t, rep, "lockers", 1, 0, 1, 0)
	wantCounts(t, rep, "locker_keys", 1, 1, 0, 0)
}

// failingMerge runs a merge expected to fail in a transaction that the test then commits: the
// failed merge must leave nothing behind and the transaction usable.
func failingMerge(t *testing.T, w *world, opts merge.Options, wantErr string) {
	t.Helper()
	ctx := context.Background()
	before := snapshot(t, w.pool)
	audits := one(t, w.pool, `SELECT count(*) FROM merge_audit`)
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = merge.Merge(ctx, tx, w.S, w.D, opts)
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("Merge error = %v, want one containing %q", err, wantErr)
	}
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatalf("caller's transaction unusable after a failed merge: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, w.pool); after != before {
		t.Fatalf("failed merge changed data:\nbefore\n%s\nafter\n%s", before, after)
	}
	if n := one(t, w.pool, `SELECT count(*) FROM merge_audit`); n != audits {
		t.Fatal("failed merge was audited")
	}
}

func TestFailureWritingAuditLeavesDatabaseUnchanged(t *testing.T) {
	w := newWorld(t)
	mustExec(t, w.pool, `ALTER TABLE merge_audit ADD CONSTRAINT no_audit CHECK (false) NOT VALID`)
	failingMerge(t, w, merge.Options{}, "merge: writing merge_audit")
	failingMerge(t, w, merge.Options{DryRun: true}, "merge: writing merge_audit")
}

// A trigger that silently skips a write must not pass for a merge: the defensive counts catch it.
func TestSilentlySkippedWritesAreCaught(t *testing.T) {
	w := newWorld(t)
	mustExec(t, w.pool, `CREATE FUNCTION skip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`)
	mustExec(t, w.pool, `CREATE TRIGGER skip BEFORE DELETE ON enrollments FOR EACH ROW EXECUTE FUNCTION skip()`)
	failingMerge(t, w, merge.Options{}, "merge: deleted 0 of 1 folded rows of enrollments")
	mustExec(t, w.pool, `DROP TRIGGER skip ON enrollments`)

	mustExec(t, w.pool, `CREATE TRIGGER skip BEFORE UPDATE ON library_loans FOR EACH ROW EXECUTE FUNCTION skip()`)
	failingMerge(t, w, merge.Options{}, "merge: library_loans still has 1 rows referencing")
	mustExec(t, w.pool, `DROP TRIGGER skip ON library_loans`)
	mergeOK(t, w)
}

func TestMergeWithoutSchema(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := merge.Merge(ctx, tx, 1, 2, merge.Options{}); err == nil || !strings.Contains(err.Error(), `merge: table "students" not found`) {
		t.Fatalf("Merge without a students table: %v", err)
	}
	if err := merge.Verify(ctx, tx, 1, 2, nil); err == nil {
		t.Fatal("Verify without a students table succeeded")
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE students (a int, b int, merged_into int, PRIMARY KEY (a, b))`); err != nil {
		t.Fatal(err)
	}
	if _, err := merge.Merge(ctx, tx, 1, 2, merge.Options{}); err == nil || !strings.Contains(err.Error(), "single-column primary key") {
		t.Fatalf("Merge with a composite students key: %v", err)
	}
}

// A table that references students through another unique column would keep pointing at the merged
// account, unseen by the move and by Verify: the merge refuses, and changes nothing.
func TestMergeRefusesReferencesThroughAnotherStudentKey(t *testing.T) {
	w := newWorld(t)
	mustExec(t, w.pool, `ALTER TABLE students ADD COLUMN sis_uuid uuid UNIQUE DEFAULT gen_random_uuid()`)
	mustExec(t, w.pool, `CREATE TABLE lti_links (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
		student_uuid uuid NOT NULL REFERENCES students (sis_uuid))`)
	mustExec(t, w.pool, `INSERT INTO lti_links (student_uuid) SELECT sis_uuid FROM students WHERE id = $1`, w.D)
	_, err := pgtest.MergeCommit(t, w.pool, w.S, w.D, merge.Options{})
	if err == nil || !strings.Contains(err.Error(), "lti_links") || !strings.Contains(err.Error(), "students.sis_uuid") {
		t.Fatalf("Merge = %v, want a refusal naming lti_links and students.sis_uuid", err)
	}
	if n := one(t, w.pool, `SELECT count(*) FROM students WHERE id = $1 AND merged_into IS NULL`, w.D); n != 1 {
		t.Error("the refused merge changed the duplicate")
	}
}
