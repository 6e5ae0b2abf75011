package seed_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/internal/pgtest"
	"github.com/pubq/pubq/pkg/edtech/seed"
)

func fingerprint(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var h string
	err := pool.QueryRow(context.Background(), `SELECT
		(SELECT md5(string_agg(s::text, ',' ORDER BY id)) FROM (SELECT id, email, first_name, last_name, birth_date FROM students) s) ||
		(SELECT md5(string_agg(e::text, ',' ORDER BY e::text)) FROM (SELECT student_id, course_id FROM enrollments) e) ||
		(SELECT md5(string_agg(g::text, ',' ORDER BY id)) FROM (SELECT id, submission_id, score FROM grades) g)`).Scan(&h)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestGenerateIsDeterministic(t *testing.T) {
	ctx := context.Background()
	opts := seed.Options{Students: 1500, RelatedPerStudent: 10, DuplicateRate: 0.1, Seed: 42, BatchSize: 400}
	a, b := pgtest.Pool(t), pgtest.Pool(t)
	ra, err := seed.Generate(ctx, a, opts)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := seed.Generate(ctx, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ra, rb) {
		t.Fatalf("results differ:\n%+v\n%+v", ra, rb)
	}
	if fa, fb := fingerprint(t, a), fingerprint(t, b); fa != fb {
		t.Fatal("same options, different data")
	}
	opts.Seed = 43
	c := pgtest.Pool(t)
	if _, err := seed.Generate(ctx, c, opts); err != nil {
		t.Fatal(err)
	}
	if fingerprint(t, a) == fingerprint(t, c) {
		t.Fatal("another seed gave the same data")
	}
}

func TestGenerateShapeAndPlantedDuplicates(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	var calls [][2]int
	res, err := seed.Generate(ctx, pool, seed.Options{
		Students: 3000, RelatedPerStudent: 10, DuplicateRate: 0.05, Seed: 7, BatchSize: 1000,
		Progress: func(done, total int) { calls = append(calls, [2]int{done, total}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := [][2]int{{1000, 3000}, {2000, 3000}, {3000, 3000}}; !reflect.DeepEqual(calls, want) {
		t.Fatalf("progress calls %v, want %v", calls, want)
	}
	if res.LastStudentID-res.FirstStudentID+1 != 3000 || res.Rows["students"] != 3000 {
		t.Fatalf("students %d..%d, %d rows", res.FirstStudentID, res.LastStudentID, res.Rows["students"])
	}
	if rel := res.Related(); rel < 27000 || rel > 36000 {
		t.Fatalf("%d related rows, want about 30,000", rel)
	}
	for _, table := range []string{"enrollments", "attendance", "attendance_notes", "messages", "student_profiles",
		"submissions", "grades", "grade_comments", "guardians_students", "library_loans", "invoices", "payments",
		"student_badges", "forum_posts"} {
		var n int64
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 || n != res.Rows[table] {
			t.Errorf("%s: %d rows in the table, %d reported", table, n, res.Rows[table])
		}
	}
	if d := len(res.Duplicates); d < 90 || d > 220 {
		t.Fatalf("%d planted duplicates for 3000 students at 5%%", d)
	}
	// Every planted pair really matches, by the criterion it claims.
	for _, p := range res.Duplicates {
		var email, name bool
		err := pool.QueryRow(ctx, `SELECT edtech_normalize_email(s.email) = edtech_normalize_email(d.email),
			(lower(s.first_name), lower(s.last_name), s.birth_date) = (lower(d.first_name), lower(d.last_name), d.birth_date)
			FROM students s, students d WHERE s.id = $1 AND d.id = $2`, p.SurvivorID, p.DuplicateID).Scan(&email, &name)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][2]bool{"email": {true, false}, "name_birth_date": {false, true}, "email,name_birth_date": {true, true}}[p.Reason]
		if [2]bool{email, name} != want || p.SurvivorID >= p.DuplicateID {
			t.Errorf("pair %+v: email match %v, name match %v", p, email, name)
		}
	}
	// And nothing else matches: the matching pairs in the whole table are exactly the planted ones.
	var matching int
	if err := pool.QueryRow(ctx, `SELECT count(DISTINCT id) FROM (
		SELECT d.id FROM students d JOIN students s ON s.id < d.id
			AND edtech_normalize_email(s.email) = edtech_normalize_email(d.email)
		UNION ALL
		SELECT d.id FROM students d JOIN students s ON s.id < d.id
			AND (lower(s.first_name), lower(s.last_name), s.birth_date) = (lower(d.first_name), lower(d.last_name), d.birth_date)) m`).Scan(&matching); err != nil {
		t.Fatal(err)
	}
	if matching != len(res.Duplicates) {
		t.Fatalf("%d students have an older match, %d were planted", matching, len(res.Duplicates))
	}
}

func TestGenerateOnNonEmptyDatabase(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	first, err := seed.Generate(ctx, pool, seed.Options{Students: 200, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	second, err := seed.Generate(ctx, pool, seed.Options{Students: 200, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if second.FirstStudentID != first.LastStudentID+1 {
		t.Fatalf("second run starts at %d, want %d", second.FirstStudentID, first.LastStudentID+1)
	}
	// The identity sequences moved past the generated ids: a plain insert works.
	if _, err := pool.Exec(ctx, `INSERT INTO students (email, first_name, last_name) VALUES ('a@b.c', 'A', 'B')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO submissions (student_id, assignment_id) VALUES ($1, (SELECT min(id) FROM assignments))`, first.FirstStudentID+3); err != nil {
		// A unique collision here would be legitimate; a PK collision is the bug this guards.
		if !strings.Contains(err.Error(), "submissions_student_id_assignment_id_key") {
			t.Fatal(err)
		}
	}
}

func TestGenerateRejectsBadOptions(t *testing.T) {
	for _, o := range []seed.Options{
		{Students: 0},
		{Students: 10, RelatedPerStudent: -1},
		{Students: 10, DuplicateRate: 0.9},
		{Students: 10, DuplicateRate: -0.1},
		{Students: 10, BatchSize: -5},
	} {
		// No database is touched before validation, so a nil Beginner is fine.
		if _, err := seed.Generate(context.Background(), nil, o); !errors.Is(err, seed.ErrOptions) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

func TestGenerateRollsBackOnFailure(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	if _, err := pool.Exec(ctx, `ALTER TABLE forum_posts ADD CONSTRAINT no_posts CHECK (false) NOT VALID`); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Generate(ctx, pool, seed.Options{Students: 300, Seed: 1}); err == nil {
		t.Fatal("Generate succeeded although forum_posts rejects every row")
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM students`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d students left behind by a failed Generate", n)
	}
}
