package merge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/edtech/merge"
)

// reads is what a transaction has read so far from the user tables and their indexes.
type reads struct{ seqScans, seqTuples, idxTuples int64 }

func xactReads(t *testing.T, tx pgx.Tx) map[string]reads {
	t.Helper()
	rows, err := tx.Query(context.Background(), `
		SELECT s.relname::text, s.seq_scan, s.seq_tup_read,
		       s.idx_tup_fetch + coalesce((SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid))
		                                   FROM pg_index i WHERE i.indrelid = s.relid), 0)::bigint
		FROM pg_stat_xact_user_tables s WHERE s.schemaname = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]reads{}
	for rows.Next() {
		var name string
		var r reads
		if err := rows.Scan(&name, &r.seqScans, &r.seqTuples, &r.idxTuples); err != nil {
			t.Fatal(err)
		}
		out[name] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// measure runs verify in a transaction where sequential scans are disabled, so that any table
// without an index for a lookup shows up as a sequential scan, and returns what it read per table.
func measure(t *testing.T, w *world, verify func(context.Context, merge.Querier) error) map[string]reads {
	t.Helper()
	ctx := context.Background()
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	mustExec(t, tx, `SET LOCAL enable_seqscan = off`)
	before := xactReads(t, tx)
	if err := verify(ctx, tx); err != nil {
		t.Fatal(err)
	}
	after := xactReads(t, tx)
	delta := map[string]reads{}
	for name, a := range after {
		b := before[name]
		delta[name] = reads{a.seqScans - b.seqScans, a.seqTuples - b.seqTuples, a.idxTuples - b.idxTuples}
	}
	return delta
}

// Verify reads the pair's rows through indexes only: with 2,000 unrelated students holding rows in
// every table it reads no table sequentially and a few dozen tuples in all, while the full sweep
// reads every row. The bound does not depend on time or on the number of unrelated rows.
func TestVerifyReadsOnlyThePairsRowsThroughIndexes(t *testing.T) {
	w := newWorld(t)
	rep := mergeOK(t, w)
	const others = 2000
	mustExec(t, w.pool, `INSERT INTO students (email, first_name, last_name)
		SELECT 'o' || i || '@example.com', 'O', 'Other' || i FROM generate_series(1, $1) i`, others)
	other := `FROM students s WHERE s.last_name LIKE 'Other%'`
	for _, sql := range []string{
		`INSERT INTO enrollments (student_id, course_id) SELECT s.id, $1 ` + other,
		`INSERT INTO guardians_students (guardian_id, student_id) SELECT $2, s.id ` + other,
		`INSERT INTO attendance (student_id, session_id) SELECT s.id, $3 ` + other,
		`INSERT INTO attendance_notes (student_id, session_id, note) SELECT s.id, $3, 'n' ` + other,
		`INSERT INTO messages (sender_id, recipient_id, body) SELECT s.id, $4, 'm' ` + other,
		`INSERT INTO student_profiles (student_id) SELECT s.id ` + other,
		`INSERT INTO submissions (student_id, assignment_id) SELECT s.id, $5 ` + other,
		`INSERT INTO grades (submission_id, score) SELECT id, 50 FROM submissions WHERE student_id IN (SELECT s.id ` + other + `)`,
		`INSERT INTO grade_comments (grade_id, author_student_id, body) SELECT g.id, $4, 'c' FROM grades g
			JOIN submissions sub ON sub.id = g.submission_id WHERE sub.student_id IN (SELECT s.id ` + other + `)`,
		`INSERT INTO library_loans (student_id, title) SELECT s.id, 't' ` + other,
		`INSERT INTO invoices (student_id, amount_cents) SELECT s.id, 1 ` + other,
		`INSERT INTO payments (invoice_id, amount_cents) SELECT id, 1 FROM invoices WHERE student_id IN (SELECT s.id ` + other + `)`,
		`INSERT INTO student_badges (student_id, badge_id) SELECT s.id, $6 ` + other,
		`INSERT INTO forum_posts (author_id, parent_post_id, body) SELECT s.id, $7, 'p' ` + other,
	} {
		// The ids are the test's own integers: written into the SQL, not bound.
		mustExec(t, w.pool, strings.NewReplacer("$1", fmt.Sprint(w.ids["c1"]), "$2", fmt.Sprint(w.ids["g1"]),
			"$3", fmt.Sprint(w.ids["sess1"]), "$4", fmt.Sprint(w.X), "$5", fmt.Sprint(w.ids["a1"]),
			"$6", fmt.Sprint(w.ids["b1"]), "$7", fmt.Sprint(w.ids["postD"])).Replace(sql))
	}
	mustExec(t, w.pool, `ANALYZE`)

	// The pair owns a few rows per table (re-read by each check); every table below students holds
	// 2,000 unrelated ones or more.
	check := func(what string, got map[string]reads) {
		t.Helper()
		var total int64
		for name, r := range got {
			if r.seqScans != 0 || r.seqTuples != 0 {
				t.Errorf("%s scanned %s sequentially (%d scans, %d tuples): a lookup has no index", what, name, r.seqScans, r.seqTuples)
			}
			if r.idxTuples > 100 {
				t.Errorf("%s read %d tuples of %s, want the pair's few", what, r.idxTuples, name)
			}
			total += r.idxTuples
		}
		if total == 0 || total > 1000 {
			t.Errorf("%s read %d tuples in all, want the pair's few hundred at most", what, total)
		}
	}
	check("Verify", measure(t, w, func(ctx context.Context, q merge.Querier) error { return merge.Verify(ctx, q, w.S, w.D, rep) }))
	// The same for a pair with no report: its folds come from merge_audit.
	check("Verify without a report", measure(t, w, func(ctx context.Context, q merge.Querier) error { return merge.Verify(ctx, q, w.S, w.D, nil) }))

	// The measure can fail: the full sweep reads every row of the tables below students.
	var total int64
	for _, r := range measure(t, w, func(ctx context.Context, q merge.Querier) error { return merge.VerifyDatabase(ctx, q, w.S, w.D, rep) }) {
		total += r.seqTuples + r.idxTuples
	}
	if total < 10*others {
		t.Errorf("VerifyDatabase read %d tuples in all, want the %d+ rows below students", total, 14*others)
	}
}
