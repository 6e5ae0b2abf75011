package merge_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/merge"
)

// person inserts a student whose data collides with everyone else's made by person: same course,
// session, assignment, badge; one profile each.
func person(t testing.TB, pool *pgxpool.Pool, n int, course, session, assignment, badge int64) int64 {
	t.Helper()
	id := one(t, pool, `INSERT INTO students (email, first_name, last_name) VALUES ($1, 'P', 'Q') RETURNING id`, fmt.Sprintf("p%d@example.com", n))
	mustExec(t, pool, `INSERT INTO enrollments (student_id, course_id) VALUES ($1, $2)`, id, course)
	mustExec(t, pool, `INSERT INTO attendance (student_id, session_id) VALUES ($1, $2)`, id, session)
	mustExec(t, pool, `INSERT INTO attendance_notes (student_id, session_id, note) VALUES ($1, $2, 'n')`, id, session)
	mustExec(t, pool, `INSERT INTO student_badges (student_id, badge_id) VALUES ($1, $2)`, id, badge)
	mustExec(t, pool, `INSERT INTO student_profiles (student_id, bio) VALUES ($1, $2)`, id, fmt.Sprint("bio ", n))
	sub := one(t, pool, `INSERT INTO submissions (student_id, assignment_id) VALUES ($1, $2) RETURNING id`, id, assignment)
	g := one(t, pool, `INSERT INTO grades (submission_id, score) VALUES ($1, 50) RETURNING id`, sub)
	mustExec(t, pool, `INSERT INTO grade_comments (grade_id, author_student_id, body) VALUES ($1, $2, 'c')`, g, id)
	return id
}

func TestConcurrentOverlappingMerges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := newWorld(t)
	pool := w.pool
	course := one(t, pool, `INSERT INTO courses (code, title) VALUES ('CONC', 'c') RETURNING id`)
	session := one(t, pool, `INSERT INTO class_sessions (course_id, starts_at) VALUES ($1, now()) RETURNING id`, course)
	assignment := one(t, pool, `INSERT INTO assignments (course_id, title) VALUES ($1, 'a') RETURNING id`, course)
	badge := one(t, pool, `INSERT INTO badges (name) VALUES ('conc') RETURNING id`)

	type job struct{ s, d int64 }
	var jobs []job
	const triples = 8
	var prevB int64
	for i := range triples {
		a := person(t, pool, 3*i, course, session, assignment, badge)
		b := person(t, pool, 3*i+1, course, session, assignment, badge)
		c := person(t, pool, 3*i+2, course, session, assignment, badge)
		// Messages across the triple so the merges touch the same rows.
		mustExec(t, pool, `INSERT INTO messages (sender_id, recipient_id, body) VALUES ($1, $2, 'x'), ($2, $3, 'y'), ($3, $1, 'z')`, a, b, c)
		// And across triples, so unrelated merges contend for the same message rows.
		if prevB != 0 {
			mustExec(t, pool, `INSERT INTO messages (sender_id, recipient_id, body) VALUES ($1, $2, 'across'), ($2, $1, 'back')`, prevB, b)
		}
		prevB = b
		if i%2 == 0 {
			jobs = append(jobs, job{a, b}, job{b, c}) // A<-B and B<-C
		} else {
			jobs = append(jobs, job{a, b}, job{c, a}) // A<-B and C<-A
		}
	}

	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	reports := make([]*merge.Report, len(jobs))
	start := make(chan struct{})
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = func() error {
				tx, err := pool.Begin(ctx)
				if err != nil {
					return err
				}
				defer func() { _ = tx.Rollback(ctx) }()
				rep, err := merge.Merge(ctx, tx, j.s, j.d, merge.Options{})
				if err != nil {
					return err
				}
				reports[i] = rep
				return tx.Commit(ctx)
			}()
		}()
	}
	close(start)
	wg.Wait()

	merged := 0
	for i, err := range errs {
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "40P01":
			t.Errorf("merge %d <- %d deadlocked: %v", jobs[i].s, jobs[i].d, err)
		case errors.Is(err, merge.ErrSurvivorMerged):
			// The other merge of the pair won and merged this survivor away: refused, as designed.
		case err != nil:
			t.Errorf("merge %d <- %d: %v", jobs[i].s, jobs[i].d, err)
		default:
			merged++
		}
	}
	if merged < triples {
		t.Fatalf("only %d merges succeeded; at least one per triple must", merged)
	}

	// Whatever the interleaving, every merged account points at a live one and nothing references
	// a merged account or dangles.
	rows, err := pool.Query(ctx, `SELECT id, merged_into FROM students WHERE merged_into IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	type pair struct{ d, s int64 }
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pair, error) {
		var p pair
		return p, r.Scan(&p.d, &p.s)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < triples+1 { // +1: the world's earlier merge
		t.Fatalf("%d merged accounts", len(all))
	}
	for _, p := range all {
		if err := merge.Verify(ctx, pool, p.s, p.d, nil); err != nil {
			t.Errorf("after the concurrent merges: %v", err)
		}
	}
	// Each triple ends with exactly one profile per live account.
	if n := one(t, pool, `SELECT count(*) FROM student_profiles p JOIN students s ON s.id = p.student_id WHERE s.merged_into IS NOT NULL`); n != 0 {
		t.Fatalf("%d profiles on merged accounts", n)
	}
}
