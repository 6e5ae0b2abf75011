package merge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

var (
	// ErrSameStudent: survivor and duplicate are one id.
	ErrSameStudent = errors.New("merge: survivor and duplicate are the same student")
	// ErrNotFound: the survivor or the duplicate does not exist.
	ErrNotFound = errors.New("merge: student not found")
	// ErrSurvivorMerged: the survivor was itself merged into another account; merge into that one.
	ErrSurvivorMerged = errors.New("merge: survivor has been merged into another student")
	// ErrInvalidRequest: a MergeRequest failed validation.
	ErrInvalidRequest = errors.New("merge: invalid request")
	// ErrVerify: Verify found a reference to the duplicate, an orphan or a count that differs.
	ErrVerify = errors.New("merge: verification failed")
)

// maxFoldDepth bounds the recursion of folds (a fold re-points children, which may fold, ...).
const maxFoldDepth = 32

// Options tune a merge.
type Options struct {
	// DryRun computes the report without changing any data: the merge runs in a savepoint that is
	// rolled back. The audit row is still written, with dry_run = true. Default false.
	DryRun bool
}

// Plan is Merge with DryRun set: the report of what Merge would do.
func Plan(ctx context.Context, tx pgx.Tx, survivorID, duplicateID int64) (*Report, error) {
	return Merge(ctx, tx, survivorID, duplicateID, Options{DryRun: true})
}

// Merge folds the duplicate student into the survivor inside tx, the caller's transaction, so the
// job runtime can commit it together with the job's completion.
//
// The FK graph below students is read from pg_catalog on every call. Then:
//
//  1. Both student rows are locked in id order (SELECT ... FOR UPDATE ORDER BY id), so merges that
//     share an account queue instead of deadlocking. A duplicate merged before makes the call a
//     no-op whose report says into whom; a survivor merged before is ErrSurvivorMerged.
//  2. Fold: for every unique key that includes a student column, rows that would collide once the
//     duplicate's id becomes the survivor's are reconciled by one rule: the survivor's row is kept
//     (among duplicate-side rows, the one with the lowest key); the rows of every table that
//     reference the other row are re-pointed at the kept row (which may fold them in turn, e.g.
//     submissions -> grades -> grade_comments); then the other row is deleted. In a
//     one-row-per-student table (a unique key made only of student columns, like
//     student_profiles) the kept row's NULL columns are first filled from the deleted row.
//  3. Move: one statement rewrites every student column equal to the duplicate, in every table, to
//     the survivor; being one statement, rows keyed through a multi-column FK (attendance and its
//     notes) move together without deferrable constraints.
//  4. The duplicate is marked merged_into = survivor; it is never deleted, CASCADE would destroy
//     data. An audit row goes to merge_audit.
//
// All writes happen in a savepoint: on error it is rolled back and tx is left as it was. Limits:
// unique expression indexes and exclusion constraints are not reconciled (a collision there fails
// the merge), partial unique indexes are judged by their predicate on the current values, and a
// fold that re-keys a row referenced through a multi-column FK containing the re-pointed column
// fails on the FK.
func Merge(ctx context.Context, tx pgx.Tx, survivorID, duplicateID int64, opts Options) (*Report, error) {
	if survivorID == duplicateID {
		return nil, fmt.Errorf("%w: %d", ErrSameStudent, survivorID)
	}
	g, err := discover(ctx, tx)
	if err != nil {
		return nil, err
	}
	rep := &Report{SurvivorID: survivorID, DuplicateID: duplicateID, DryRun: opts.DryRun, Tables: []TableReport{}, graph: g}

	into, err := lockPair(ctx, tx, g, survivorID, duplicateID)
	if err != nil {
		return nil, err
	}
	if into != 0 {
		rep.AlreadyMergedInto = into
		return rep, nil
	}

	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("merge: savepoint: %w", err)
	}
	defer func() { _ = sp.Rollback(ctx) }() // a no-op once released

	m := &merger{tx: sp, g: g, survivor: survivorID, duplicate: duplicateID, stats: map[*table]*TableReport{}}
	if err := m.run(ctx); err != nil {
		return nil, err
	}
	rep.Tables, rep.Folds = m.tables(), m.folds

	// The audit row is written in a savepoint too, so that a failure there also leaves tx as it
	// was; for a dry run, after the merge's own savepoint is rolled back.
	auditTx := sp
	if opts.DryRun {
		if err := sp.Rollback(ctx); err != nil {
			return nil, fmt.Errorf("merge: rolling back the dry run: %w", err)
		}
		if auditTx, err = tx.Begin(ctx); err != nil {
			return nil, fmt.Errorf("merge: savepoint: %w", err)
		}
		defer func() { _ = auditTx.Rollback(ctx) }()
	}
	if _, err := auditTx.Exec(ctx, `INSERT INTO `+pgx.Identifier{AuditTable}.Sanitize()+
		` (survivor_id, duplicate_id, dry_run, report) VALUES ($1, $2, $3, $4)`,
		survivorID, duplicateID, opts.DryRun, rep); err != nil {
		return nil, fmt.Errorf("merge: writing %s: %w", AuditTable, err)
	}
	if err := auditTx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("merge: releasing savepoint: %w", err)
	}
	return rep, nil
}

// lockPair locks both rows in id order and validates them. It returns the account the duplicate
// was already merged into, or 0.
func lockPair(ctx context.Context, tx pgx.Tx, g *graph, survivorID, duplicateID int64) (int64, error) {
	id := pgx.Identifier{g.rootCol}.Sanitize()
	rows, err := tx.Query(ctx, `SELECT `+id+`::bigint, `+mergedInto+`::bigint FROM `+g.students.ident()+
		` WHERE `+id+` = ANY($1) ORDER BY `+id+` FOR UPDATE`, []int64{survivorID, duplicateID})
	if err != nil {
		return 0, fmt.Errorf("merge: locking students: %w", err)
	}
	mergedInto := map[int64]*int64{}
	for rows.Next() {
		var sid int64
		var into *int64
		if err := rows.Scan(&sid, &into); err != nil {
			rows.Close()
			return 0, fmt.Errorf("merge: locking students: %w", err)
		}
		mergedInto[sid] = into
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("merge: locking students: %w", err)
	}
	sInto, sOK := mergedInto[survivorID]
	dInto, dOK := mergedInto[duplicateID]
	switch {
	case !dOK:
		return 0, fmt.Errorf("%w: duplicate %d", ErrNotFound, duplicateID)
	case !sOK:
		return 0, fmt.Errorf("%w: survivor %d", ErrNotFound, survivorID)
	case dInto != nil:
		return *dInto, nil
	case sInto != nil:
		return 0, fmt.Errorf("%w: %d was merged into %d", ErrSurvivorMerged, survivorID, *sInto)
	}
	return 0, nil
}

type merger struct {
	tx                  pgx.Tx
	g                   *graph
	survivor, duplicate int64
	stats               map[*table]*TableReport
	folds               []Fold
}

func (m *merger) stat(t *table) *TableReport {
	s := m.stats[t]
	if s == nil {
		s = &TableReport{Table: t.label()}
		m.stats[t] = s
	}
	return s
}

// tables lists the report rows in graph order: tables with a student column, and any other table
// a fold touched.
func (m *merger) tables() []TableReport {
	out := []TableReport{}
	for _, t := range m.g.tables {
		if s, ok := m.stats[t]; ok {
			out = append(out, *s)
		}
	}
	return out
}

func (m *merger) run(ctx context.Context) error {
	before, err := census(ctx, m.tx, m.g, m.survivor, m.duplicate)
	if err != nil {
		return err
	}
	for t, c := range before {
		s := m.stat(t)
		s.SurvivorRowsBefore, s.DuplicateRowsBefore = c[0], c[1]
	}

	// Fold every collision a student-column rewrite would cause.
	for _, t := range m.g.tables {
		for _, u := range t.uniques {
			if !intersects(u.cols, t.studentCols) {
				continue
			}
			pairs, err := m.conflicts(ctx, t, u, nil, nil, nil)
			if err != nil {
				return err
			}
			if err := m.fold(ctx, t, u, pairs, 0); err != nil {
				return err
			}
		}
	}
	if err := m.move(ctx); err != nil {
		return err
	}
	tag, err := m.tx.Exec(ctx, `UPDATE `+m.g.students.ident()+` SET `+mergedInto+` = $1::bigint WHERE `+
		pgx.Identifier{m.g.rootCol}.Sanitize()+` = $2::bigint AND `+mergedInto+` IS NULL`, m.survivor, m.duplicate)
	if err != nil {
		return fmt.Errorf("merge: marking %d merged into %d: %w", m.duplicate, m.survivor, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("merge: marking %d merged into %d: %d rows updated", m.duplicate, m.survivor, tag.RowsAffected())
	}

	after, err := census(ctx, m.tx, m.g, m.survivor, m.duplicate)
	if err != nil {
		return err
	}
	for t, c := range after {
		m.stat(t).SurvivorRows = c[0]
		if c[1] != 0 {
			return fmt.Errorf("merge: %s still has %d rows referencing %d after the move", t.label(), c[1], m.duplicate)
		}
	}
	return nil
}

// move rewrites every student column equal to the duplicate, in all tables, in one statement: RI
// checks run at its end, so a parent and the rows that reference it through a multi-column key
// change together.
func (m *merger) move(ctx context.Context) error {
	var ctes, counts []string
	var order []*table
	for _, t := range m.g.tables {
		if len(t.studentCols) == 0 {
			continue
		}
		var sets, where []string
		for _, c := range t.studentCols {
			q := pgx.Identifier{c}.Sanitize()
			sets = append(sets, fmt.Sprintf("%s = CASE WHEN %s = $2::bigint THEN $1::bigint ELSE %s END", q, q, q))
			where = append(where, q+" = $2::bigint")
		}
		name := fmt.Sprintf("moved_%d", len(order))
		ctes = append(ctes, fmt.Sprintf("%s AS (UPDATE %s SET %s WHERE %s RETURNING 1)",
			name, t.ident(), strings.Join(sets, ", "), strings.Join(where, " OR ")))
		counts = append(counts, "(SELECT count(*) FROM "+name+")")
		order = append(order, t)
	}
	if len(order) == 0 {
		return nil
	}
	moved := make([]int64, len(order))
	dest := make([]any, len(order))
	for i := range moved {
		dest[i] = &moved[i]
	}
	sql := "WITH " + strings.Join(ctes, ",\n") + "\nSELECT " + strings.Join(counts, ", ")
	if err := m.tx.QueryRow(ctx, sql, m.survivor, m.duplicate).Scan(dest...); err != nil {
		return fmt.Errorf("merge: moving references from %d to %d: %w", m.duplicate, m.survivor, err)
	}
	for i, t := range order {
		m.stat(t).Moved += moved[i]
	}
	return nil
}

// census counts, per table with a student column, the rows that reference the survivor and the
// duplicate, in one round trip.
func census(ctx context.Context, q Querier, g *graph, survivor, duplicate int64) (map[*table][2]int64, error) {
	var parts []string
	var order []*table
	for _, t := range g.tables {
		if len(t.studentCols) == 0 {
			continue
		}
		var isS, isD, either []string
		for _, c := range t.studentCols {
			qc := pgx.Identifier{c}.Sanitize()
			isS = append(isS, qc+" = $1::bigint")
			isD = append(isD, qc+" = $2::bigint")
			either = append(either, qc+" IN ($1::bigint, $2::bigint)")
		}
		parts = append(parts, fmt.Sprintf("SELECT %d, count(*) FILTER (WHERE %s), count(*) FILTER (WHERE %s) FROM %s WHERE %s",
			len(order), strings.Join(isS, " OR "), strings.Join(isD, " OR "), t.ident(), strings.Join(either, " OR ")))
		order = append(order, t)
	}
	out := make(map[*table][2]int64, len(order))
	if len(order) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, strings.Join(parts, "\nUNION ALL\n"), survivor, duplicate)
	if err != nil {
		return nil, fmt.Errorf("merge: counting references: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var i int
		var s, d int64
		if err := rows.Scan(&i, &s, &d); err != nil {
			return nil, fmt.Errorf("merge: counting references: %w", err)
		}
		out[order[i]] = [2]int64{s, d}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("merge: counting references: %w", err)
	}
	return out, nil
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}
