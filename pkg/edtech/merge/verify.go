package merge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Verify checks a finished merge against the database q sees (a transaction or a pool), reading
// only the pair's rows, through indexes (a few milliseconds at any database size):
//
//   - the duplicate exists and is marked merged into the survivor, which exists and is not merged;
//   - no row references the duplicate, across every FK discovered now (so a table added since the
//     merge is checked too; a student column of a multi-column FK is a student column itself);
//   - no orphan among the rows the merge touched: the rows that reference the survivor now (moved
//     rows among them), on every FK of their table; and the rows that reference a row the merge
//     deleted or kept in a fold (the report's Folds), on the FKs into that row's table;
//   - for every table with a student column, the survivor's rows equal the report's SurvivorRows.
//
// A nil report skips the count check (useful after several merges) and takes the folds from the
// pair's merge_audit rows. All problems are returned together, joined under ErrVerify. An orphan
// elsewhere (a load with triggers disabled) cannot come from the merge; [VerifyDatabase] looks for
// those too.
func Verify(ctx context.Context, q Querier, survivorID, duplicateID int64, report *Report) error {
	return verify(ctx, q, survivorID, duplicateID, report, false, nil)
}

// VerifyDatabase is Verify whose orphan check covers every row of every table below students (and
// every FK they have) instead of the pair's: at 200k students it reads 2.3M rows, about 0.7 s. For
// on-call checks after a bulk load, not for every merge.
func VerifyDatabase(ctx context.Context, q Querier, survivorID, duplicateID int64, report *Report) error {
	return verify(ctx, q, survivorID, duplicateID, report, true, nil)
}

// VerifyReport is Verify (VerifyDatabase with full) of the merge that produced report, called in the
// transaction that merge ran in: it reuses the foreign-key graph the merge read from the catalog
// instead of reading it again.
func VerifyReport(ctx context.Context, q Querier, report *Report, full bool) error {
	return verify(ctx, q, report.SurvivorID, report.DuplicateID, report, full, report.graph)
}

// verify checks the merge on g, the foreign-key graph (nil: read it from the catalog now).
func verify(ctx context.Context, q Querier, survivorID, duplicateID int64, report *Report, full bool, g *graph) error {
	if g == nil {
		var err error
		if g, err = discover(ctx, q); err != nil {
			return err
		}
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

	var orphans []int64
	if full {
		orphans, err = countOrphans(ctx, q, g)
	} else {
		var folds map[*table][]json.RawMessage
		if folds, err = pairFolds(ctx, q, g, survivorID, duplicateID, report); err != nil {
			return err
		}
		orphans, err = countPairOrphans(ctx, q, g, survivorID, folds)
	}
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

// pairFolds returns, per table, the keys of the rows folds deleted or kept: the report's, or with
// no report those recorded in the pair's merge_audit rows.
func pairFolds(ctx context.Context, q Querier, g *graph, survivorID, duplicateID int64, report *Report) (map[*table][]json.RawMessage, error) {
	reports := []*Report{report}
	if report == nil {
		reports = nil
		rows, err := q.Query(ctx, `SELECT report FROM `+pgx.Identifier{AuditTable}.Sanitize()+
			` WHERE survivor_id = $1 AND duplicate_id = $2 AND NOT dry_run`, survivorID, duplicateID)
		if err != nil {
			return nil, fmt.Errorf("merge: verifying: reading %s: %w", AuditTable, err)
		}
		for rows.Next() {
			var r Report
			if err := rows.Scan(&r); err != nil {
				rows.Close()
				return nil, fmt.Errorf("merge: verifying: reading %s: %w", AuditTable, err)
			}
			reports = append(reports, &r)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("merge: verifying: reading %s: %w", AuditTable, err)
		}
	}
	byLabel := map[string]*table{}
	for _, t := range g.tables {
		byLabel[t.label()] = t
	}
	out := map[*table][]json.RawMessage{}
	for _, r := range reports {
		for _, f := range r.Folds {
			if t := byLabel[f.Table]; t != nil { // else dropped since: nothing can reference its rows
				out[t] = append(out[t], f.Kept, f.Deleted)
			}
		}
	}
	return out, nil
}

// countPairOrphans counts, per FK of g.checked, the orphans among the rows a merge into survivor
// touched: rows with a student column equal to the survivor (moved rows among them), and rows
// referencing a key that a fold deleted or kept. Every lookup goes through an index on the child's
// FK or student columns and the parent's referenced key; one round trip. An FK whose recorded keys
// lack a referenced column (an FK added since the merge) is checked in full.
func countPairOrphans(ctx context.Context, q Querier, g *graph, survivor int64, folds map[*table][]json.RawMessage) ([]int64, error) {
	out := make([]int64, len(g.checked))
	args := []any{survivor}
	param := map[*table]string{} // the $n holding a parent table's fold keys
	var parts []string
	for i, fk := range g.checked {
		var notNull, match []string
		for j, c := range fk.cols {
			qc := "c." + pgx.Identifier{c}.Sanitize()
			notNull = append(notNull, qc+" IS NOT NULL")
			match = append(match, "p."+pgx.Identifier{fk.refCols[j]}.Sanitize()+" = "+qc)
		}
		orphan := "NOT EXISTS (SELECT 1 FROM " + fk.parent.ident() + " p WHERE " + strings.Join(match, " AND ") + ")"
		var sets []string
		if len(fk.child.studentCols) > 0 {
			var isS []string
			for _, c := range fk.child.studentCols {
				isS = append(isS, "c."+pgx.Identifier{c}.Sanitize()+" = $1::bigint")
			}
			sets = append(sets, "SELECT c.ctid FROM "+fk.child.ident()+" c WHERE ("+strings.Join(isS, " OR ")+") AND "+
				strings.Join(notNull, " AND ")+" AND "+orphan)
		}
		if keys := folds[fk.parent]; len(keys) > 0 {
			if !hasColumns(keys, fk.refCols) {
				sets = append(sets, "SELECT c.ctid FROM "+fk.child.ident()+" c WHERE "+strings.Join(notNull, " AND ")+" AND "+orphan)
			} else {
				n, ok := param[fk.parent]
				if !ok {
					js, err := json.Marshal(keys)
					if err != nil {
						return nil, fmt.Errorf("merge: encoding fold keys: %w", err)
					}
					args = append(args, string(js))
					n = "$" + strconv.Itoa(len(args))
					param[fk.parent] = n
				}
				var sel, on []string
				for j, c := range fk.cols {
					v := "v" + strconv.Itoa(j)
					sel = append(sel, "(k->>"+quoteLiteral(fk.refCols[j])+")::"+fk.child.cols[c].typ+" AS "+v)
					on = append(on, "c."+pgx.Identifier{c}.Sanitize()+" = m."+v)
				}
				// A lateral subquery kept apart by OFFSET 0 is one index lookup per key: as a join, the
				// planner's guess of 100 keys makes it read the whole child table.
				sets = append(sets, "SELECT o.ctid FROM (SELECT DISTINCT "+strings.Join(sel, ", ")+" FROM jsonb_array_elements("+n+
					"::jsonb) k) m CROSS JOIN LATERAL (SELECT c.ctid FROM "+fk.child.ident()+" c WHERE "+strings.Join(on, " AND ")+
					" AND "+orphan+" OFFSET 0) o")
			}
		}
		if len(sets) > 0 {
			// UNION, not UNION ALL: a row reached both ways is one orphan.
			parts = append(parts, fmt.Sprintf("SELECT %d, count(*) FROM (%s) o", i, strings.Join(sets, " UNION ")))
		}
	}
	if len(parts) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, strings.Join(parts, "\nUNION ALL\n"), args...)
	if err != nil {
		return nil, fmt.Errorf("merge: counting the pair's orphans: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var i int
		var n int64
		if err := rows.Scan(&i, &n); err != nil {
			return nil, fmt.Errorf("merge: counting the pair's orphans: %w", err)
		}
		out[i] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("merge: counting the pair's orphans: %w", err)
	}
	return out, nil
}

// hasColumns reports whether every recorded key object has all of cols.
func hasColumns(keys []json.RawMessage, cols []string) bool {
	for _, k := range keys {
		var obj map[string]json.RawMessage
		if json.Unmarshal(k, &obj) != nil {
			return false
		}
		for _, c := range cols {
			if _, ok := obj[c]; !ok {
				return false
			}
		}
	}
	return true
}

// quoteLiteral quotes s as an SQL string literal (column names from pg_catalog, used as JSON keys).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
