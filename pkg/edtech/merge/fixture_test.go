package merge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/internal/pgtest"
)

// world is a database with two accounts of one person (S, the survivor, and D, the duplicate)
// whose data hits every trap of the reference schema, plus a bystander X.
type world struct {
	pool    *pgxpool.Pool
	S, D, X int64
	ids     map[string]int64 // named rows for assertions
}

// one runs a query returning a single bigint.
func one(t testing.TB, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string, args ...any) int64 {
	t.Helper()
	var v int64
	if err := db.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{pool: pgtest.Pool(t), ids: map[string]int64{}}
	id := func(name, sql string, args ...any) int64 {
		v := one(t, w.pool, sql, args...)
		w.ids[name] = v
		return v
	}
	w.S = id("S", `INSERT INTO students (email, first_name, last_name, birth_date) VALUES ('ana@example.com', 'Ana', 'Diaz', '2008-04-01') RETURNING id`)
	w.D = id("D", `INSERT INTO students (email, first_name, last_name, birth_date) VALUES ('ANA@example.com ', 'ana', 'diaz', '2008-04-01') RETURNING id`)
	w.X = id("X", `INSERT INTO students (email, first_name, last_name) VALUES ('x@example.com', 'Xavier', 'Roe') RETURNING id`)
	// An account merged into D earlier: it must follow D to S.
	id("old", `INSERT INTO students (email, first_name, last_name, merged_into) VALUES ('ana.old@example.com', 'Ana', 'Diaz', $1) RETURNING id`, w.D)

	c1 := id("c1", `INSERT INTO courses (code, title) VALUES ('MATH1', 'Math') RETURNING id`)
	c2 := id("c2", `INSERT INTO courses (code, title) VALUES ('BIO1', 'Biology') RETURNING id`)
	s1 := id("sess1", `INSERT INTO class_sessions (course_id, starts_at) VALUES ($1, '2026-01-05 09:00Z') RETURNING id`, c1)
	s2 := id("sess2", `INSERT INTO class_sessions (course_id, starts_at) VALUES ($1, '2026-01-06 09:00Z') RETURNING id`, c1)
	a1 := id("a1", `INSERT INTO assignments (course_id, title) VALUES ($1, 'HW1') RETURNING id`, c1)
	a2 := id("a2", `INSERT INTO assignments (course_id, title) VALUES ($1, 'HW2') RETURNING id`, c1)
	a3 := id("a3", `INSERT INTO assignments (course_id, title) VALUES ($1, 'HW3') RETURNING id`, c1)
	g1 := id("g1", `INSERT INTO guardians (name) VALUES ('Parent One') RETURNING id`)
	g2 := id("g2", `INSERT INTO guardians (name) VALUES ('Parent Two') RETURNING id`)
	b1 := id("b1", `INSERT INTO badges (name) VALUES ('early bird') RETURNING id`)
	b2 := id("b2", `INSERT INTO badges (name) VALUES ('helper') RETURNING id`)

	// Enrollments: both accounts in MATH1 (unique (student_id, course_id)), D alone in BIO1.
	id("enrS1", `INSERT INTO enrollments (student_id, course_id, status) VALUES ($1, $2, 'active') RETURNING id`, w.S, c1)
	id("enrD1", `INSERT INTO enrollments (student_id, course_id, status) VALUES ($1, $2, 'dropped') RETURNING id`, w.D, c1)
	id("enrD2", `INSERT INTO enrollments (student_id, course_id) VALUES ($1, $2) RETURNING id`, w.D, c2)
	id("enrX1", `INSERT INTO enrollments (student_id, course_id) VALUES ($1, $2) RETURNING id`, w.X, c1)

	// Guardians (composite PK): g1 linked to both accounts, g2 to D only.
	mustExec(t, w.pool, `INSERT INTO guardians_students (guardian_id, student_id, relation) VALUES ($1, $2, 'mother'), ($1, $3, 'mother'), ($4, $3, 'father')`, g1, w.S, w.D, g2)

	// Attendance (composite PK) and notes (FK to the composite key): both attended sess1, D's row has
	// a note; D alone attended sess2, with a note.
	mustExec(t, w.pool, `INSERT INTO attendance (student_id, session_id, status) VALUES ($1, $3, 'present'), ($2, $3, 'late'), ($2, $4, 'present')`, w.S, w.D, s1, s2)
	id("noteD1", `INSERT INTO attendance_notes (student_id, session_id, note) VALUES ($1, $2, 'came late') RETURNING id`, w.D, s1)
	id("noteD2", `INSERT INTO attendance_notes (student_id, session_id, note) VALUES ($1, $2, 'asked questions') RETURNING id`, w.D, s2)

	// Messages (two FKs): between the two accounts themselves both ways, a broadcast, and with X.
	id("msgDS", `INSERT INTO messages (sender_id, recipient_id, body) VALUES ($1, $2, 'hi me') RETURNING id`, w.D, w.S)
	id("msgSD", `INSERT INTO messages (sender_id, recipient_id, body) VALUES ($1, $2, 'hi me too') RETURNING id`, w.S, w.D)
	id("msgDnull", `INSERT INTO messages (sender_id, recipient_id, body) VALUES ($1, NULL, 'to all') RETURNING id`, w.D)
	id("msgXD", `INSERT INTO messages (sender_id, recipient_id, body) VALUES ($1, $2, 'hello') RETURNING id`, w.X, w.D)

	// Profiles (one row per student): the survivor's is kept, its NULLs filled from the duplicate's.
	id("profS", `INSERT INTO student_profiles (student_id, display_name, bio, timezone) VALUES ($1, 'Ana D', NULL, 'UTC') RETURNING id`, w.S)
	id("profD", `INSERT INTO student_profiles (student_id, display_name, bio, avatar_url, timezone) VALUES ($1, 'ana', 'likes math', 'https://a/1.png', 'CET') RETURNING id`, w.D)

	// The 3-deep chain. a1: both submitted, both graded; D's grade has two comments (one by X).
	subS1 := id("subS1", `INSERT INTO submissions (student_id, assignment_id, body) VALUES ($1, $2, 'S a1') RETURNING id`, w.S, a1)
	subD1 := id("subD1", `INSERT INTO submissions (student_id, assignment_id, body) VALUES ($1, $2, 'D a1') RETURNING id`, w.D, a1)
	gS1 := id("gS1", `INSERT INTO grades (submission_id, score) VALUES ($1, 90) RETURNING id`, subS1)
	gD1 := id("gD1", `INSERT INTO grades (submission_id, score) VALUES ($1, 70) RETURNING id`, subD1)
	id("cS1", `INSERT INTO grade_comments (grade_id, body) VALUES ($1, 'good') RETURNING id`, gS1)
	id("cD1a", `INSERT INTO grade_comments (grade_id, body) VALUES ($1, 'ok') RETURNING id`, gD1)
	id("cD1b", `INSERT INTO grade_comments (grade_id, author_student_id, body) VALUES ($1, $2, 'peer: nice') RETURNING id`, gD1, w.X)
	// a2: D alone, graded: moves whole.
	subD2 := id("subD2", `INSERT INTO submissions (student_id, assignment_id) VALUES ($1, $2) RETURNING id`, w.D, a2)
	gD2 := id("gD2", `INSERT INTO grades (submission_id, score) VALUES ($1, 55) RETURNING id`, subD2)
	id("cD2", `INSERT INTO grade_comments (grade_id, body) VALUES ($1, 'redo') RETURNING id`, gD2)
	// a3: both submitted, only D's is graded: the grade moves to S's submission.
	id("subS3", `INSERT INTO submissions (student_id, assignment_id) VALUES ($1, $2) RETURNING id`, w.S, a3)
	subD3 := id("subD3", `INSERT INTO submissions (student_id, assignment_id) VALUES ($1, $2) RETURNING id`, w.D, a3)
	id("gD3", `INSERT INTO grades (submission_id, score) VALUES ($1, 88) RETURNING id`, subD3)
	// D wrote a peer comment on X's work: nullable FK to students.
	subX := id("subX", `INSERT INTO submissions (student_id, assignment_id) VALUES ($1, $2) RETURNING id`, w.X, a1)
	gX := id("gX", `INSERT INTO grades (submission_id, score) VALUES ($1, 60) RETURNING id`, subX)
	id("cXbyD", `INSERT INTO grade_comments (grade_id, author_student_id, body) VALUES ($1, $2, 'peer: try again') RETURNING id`, gX, w.D)
	id("cXstaff", `INSERT INTO grade_comments (grade_id, author_student_id, body) VALUES ($1, NULL, 'staff') RETURNING id`, gX)

	// Library loans (nullable, ON DELETE SET NULL), invoices (no CASCADE) and payments.
	id("loanD", `INSERT INTO library_loans (student_id, title) VALUES ($1, 'Dune') RETURNING id`, w.D)
	id("loanNull", `INSERT INTO library_loans (student_id, title) VALUES (NULL, 'Lost') RETURNING id`)
	invD := id("invD", `INSERT INTO invoices (student_id, amount_cents) VALUES ($1, 1000) RETURNING id`, w.D)
	id("payD", `INSERT INTO payments (invoice_id, amount_cents) VALUES ($1, 1000) RETURNING id`, invD)

	// Badges (composite PK of two FKs): both have b1, D has b2.
	mustExec(t, w.pool, `INSERT INTO student_badges (student_id, badge_id) VALUES ($1, $3), ($2, $3), ($2, $4)`, w.S, w.D, b1, b2)

	// Forum: D's post, S's reply to it, D's reply to S.
	pD := id("postD", `INSERT INTO forum_posts (author_id, body) VALUES ($1, 'question') RETURNING id`, w.D)
	pS := id("postS", `INSERT INTO forum_posts (author_id, parent_post_id, body) VALUES ($1, $2, 'answer') RETURNING id`, w.S, pD)
	id("postD2", `INSERT INTO forum_posts (author_id, parent_post_id, body) VALUES ($1, $2, 'thanks') RETURNING id`, w.D, pS)
	return w
}

func mustExec(t testing.TB, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, sql string, args ...any) {
	t.Helper()
	if _, err := db.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// snapshot fingerprints every table but the audit and migration tables.
func snapshot(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
		AND tablename NOT IN ('merge_audit', 'edtech_schema_migrations') ORDER BY tablename`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, n := range names {
		var h string
		q := fmt.Sprintf(`SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM %s x`, pgx.Identifier{n}.Sanitize())
		if err := pool.QueryRow(ctx, q).Scan(&h); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s\n", n, h)
	}
	return b.String()
}
