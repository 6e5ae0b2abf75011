package merge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Verify checks a finished merge against the database q sees (a transaction or a pool):
//
//   - the duplicate exists and is marked merged into the survivor, which exists and is not merged;
//   - no row references the duplicate, across every FK discovered now (so a table added since the
//     merge is checked too);
//   - no row of any table below students is an orphan (an FK value with no referenced row, on any
//     of its FKs, courses and sessions included), which a load with triggers disabled could leave;
//   - for every table with a student column, the survivor's rows equal the report's SurvivorRows.
//
// A nil report skips the count check (useful after several merges). All problems are returned
// together, joined under ErrVerify. Verify reads every FK of every table
// below students in full: meant for tests and on-call checks, not for the hot path.
func Verify(ctx context.Context, q Querier, survivorID, duplicateID int64, report *Report) error {
	g, err := discover(ctx, q)
	if err != nil {
		return err
	}
	var problems []error
	add := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }

	if report != nil && (report.SurvivorID != survivorID || report.DuplicateID != duplicateID) {
		add("report is for %d <- %d, not %d <- %d", report.SurvivorID, report.DuplicateID, survivorID, duplicateID)
	}
	if report != nil && report.DryRun {
		add("report is a dry run: nothing was merged")
	}

	id := pgx.Identifier{g.rootCol}.Sanitize()
	accounts := `SELECT ` + mergedInto + `::bigint FROM ` + g.students.ident() + ` WHERE ` + id + ` = $1::bigint`
	var sInto, dInto *int64
	switch err := q.QueryRow(ctx, accounts, survivorID).Scan(&sInto); {
	case errors.Is(err, pgx.ErrNoRows):
		add("survivor %d does not exist", survivorID)
	case err != nil:
		return fmt.Errorf("merge: verifying: reading survivor: %w", err)
	case sInto != nil:
		add("survivor %d is itself merged into %d", survivorID, *sInto)
	}
	switch err := q.QueryRow(ctx, accounts, duplicateID).Scan(&dInto); {
	case errors.Is(err, pgx.ErrNoRows):
		add("duplicate %d does not exist (it must be kept, marked merged)", duplicateID)
	case err != nil:
		return fmt.Errorf("merge: verifying: reading duplicate: %w", err)
	case dInto == nil || *dInto != survivorID:
		add("duplicate %d is not marked merged into %d", duplicateID, survivorID)
	}

	counts, err := census(ctx, q, g, survivorID, duplicateID)
	if err != nil {
		return err
	}
	covered := map[string]bool{}
	for _, t := range g.tables {
		if len(t.studentCols) == 0 {
			continue
		}
		c := counts[t]
		if c[1] != 0 {
			add("%s: %d rows still reference duplicate %d", t.label(), c[1], duplicateID)
		}
		if report == nil || report.AlreadyMergedInto != 0 {
			continue
		}
		covered[t.label()] = true
		tr, ok := report.Table(t.label())
		switch {
		case !ok:
			add("%s: not in the report", t.label())
		case tr.SurvivorRows != c[0]:
			add("%s: %d rows reference survivor %d, the report says %d", t.label(), c[0], survivorID, tr.SurvivorRows)
		}
	}
	if report != nil {
		for _, tr := range report.Tables {
			if tr.SurvivorRows != 0 && !covered[tr.Table] {
				add("%s: in the report with %d survivor rows, but has no student column now", tr.Table, tr.SurvivorRows)
			}
		}
	}

	orphans, err := countOrphans(ctx, q, g)
	if err != nil {
		return err
	}
	for i, fk := range g.checked {
		if orphans[i] != 0 {
			add("%s: %d orphan rows (%s references missing %s rows)", fk.child.label(), orphans[i], fk.name, fk.parent.label())
		}
	}

	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w for %d <- %d: %w", ErrVerify, survivorID, duplicateID, errors.Join(problems...))
}

// countOrphans counts, per FK (MATCH SIMPLE: a row with a NULL FK column references nothing), the
// child rows whose referenced row is missing, in one round trip.
func countOrphans(ctx context.Context, q Querier, g *graph) ([]int64, error) {
	out := make([]int64, len(g.checked))
	if len(g.checked) == 0 {
		return out, nil
	}
	var parts []string
	for i, fk := range g.checked {
		var notNull, match []string
		for j, c := range fk.cols {
			qc := "c." + pgx.Identifier{c}.Sanitize()
			notNull = append(notNull, qc+" IS NOT NULL")
			match = append(match, "p."+pgx.Identifier{fk.refCols[j]}.Sanitize()+" = "+qc)
		}
		parts = append(parts, fmt.Sprintf("SELECT %d, count(*) FROM %s c WHERE %s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)",
			i, fk.child.ident(), strings.Join(notNull, " AND "), fk.parent.ident(), strings.Join(match, " AND ")))
	}
	rows, err := q.Query(ctx, strings.Join(parts, "\nUNION ALL\n"))
	if err != nil {
		return nil, fmt.Errorf("merge: counting orphans: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var i int
		var n int64
		if err := rows.Scan(&i, &n); err != nil {
			return nil, fmt.Errorf("merge: counting orphans: %w", err)
		}
		out[i] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("merge: counting orphans: %w", err)
	}
	return out, nil
}
