package merge

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/jackc/pgx/v5"
)

// StudentsTable is the table whose rows are merged; it is resolved through the search_path.
const StudentsTable = "students"

// AuditTable receives one row per merge and per dry run.
const AuditTable = "merge_audit"

// MergedIntoColumn is the students column that points a merged account at its survivor.
const MergedIntoColumn = "merged_into"

// mergedInto is MergedIntoColumn quoted for SQL.
var mergedInto = pgx.Identifier{MergedIntoColumn}.Sanitize()

// Querier is what discovery and Verify read through: pgx.Tx, *pgx.Conn and *pgxpool.Pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type column struct {
	name     string
	typ      string // format_type(): catalog text used in casts, never user input
	writable bool   // neither generated nor GENERATED ALWAYS AS IDENTITY
}

type uniqueKey struct {
	name             string
	cols             []string
	primary          bool
	nullsNotDistinct bool
	pred             string // partial index predicate (pg_get_expr), "" when none
}

type foreignKey struct {
	name    string
	child   *table
	cols    []string
	parent  *table
	refCols []string
}

type table struct {
	oid     uint32
	schema  string
	name    string
	cols    map[string]column
	order   []string // column names in attnum order
	uniques []uniqueKey
	pk      []string
	// studentCols hold a student id: an FK column whose referenced column is students.id or,
	// transitively, another student column (attendance_notes.student_id through attendance).
	studentCols []string
	incoming    []*foreignKey
}

// ident is the quoted, schema-qualified name for SQL.
func (t *table) ident() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// label is the name used in reports.
func (t *table) label() string {
	if t.schema == "public" {
		return t.name
	}
	return t.schema + "." + t.name
}

func (t *table) isStudentCol(c string) bool { return slices.Contains(t.studentCols, c) }

// graph is the part of the FK graph that hangs off students, read from pg_catalog.
type graph struct {
	students *table
	rootCol  string
	tables   []*table      // students first, then by label: a deterministic processing order
	fks      []*foreignKey // FKs between tables below students: what folds follow
	checked  []*foreignKey // every FK of a table below students: what Verify checks for orphans
}

// discover reads the FK graph below students from pg_catalog, so a table added later is covered
// without a code change.
func discover(ctx context.Context, q Querier) (*graph, error) {
	var studentsOID uint32
	var ok bool
	if err := q.QueryRow(ctx, `SELECT coalesce(to_regclass($1)::oid, 0), to_regclass($1) IS NOT NULL`, StudentsTable).
		Scan(&studentsOID, &ok); err != nil {
		return nil, fmt.Errorf("merge: resolving %s: %w", StudentsTable, err)
	}
	if !ok {
		return nil, fmt.Errorf("merge: table %q not found in the search_path", StudentsTable)
	}

	type rawFK struct {
		name          string
		child, parent uint32
		cols, refCols []string
	}
	rows, err := q.Query(ctx, `
		SELECT c.conname, c.conrelid::oid, c.confrelid::oid,
		       array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
		             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
		       array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
		             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
		FROM pg_constraint c
		JOIN pg_namespace n ON n.oid = c.connamespace
		WHERE c.contype = 'f'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND (n.nspname NOT LIKE 'pg\_temp\_%' OR n.oid = pg_my_temp_schema())
		ORDER BY c.conrelid, c.conname`)
	if err != nil {
		return nil, fmt.Errorf("merge: reading foreign keys: %w", err)
	}
	var raws []rawFK
	for rows.Next() {
		var r rawFK
		if err := rows.Scan(&r.name, &r.child, &r.parent, &r.cols, &r.refCols); err != nil {
			rows.Close()
			return nil, fmt.Errorf("merge: reading foreign keys: %w", err)
		}
		raws = append(raws, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("merge: reading foreign keys: %w", err)
	}

	// Tables below students: everything that references students or a table below it.
	below := map[uint32]bool{studentsOID: true}
	for changed := true; changed; {
		changed = false
		for _, r := range raws {
			if below[r.parent] && !below[r.child] {
				below[r.child] = true
				changed = true
			}
		}
	}
	// The tables those reference (courses, sessions, ...) are loaded too, for Verify's orphan check.
	oids := make([]uint32, 0, len(below))
	loaded := map[uint32]bool{}
	for oid := range below {
		oids = append(oids, oid)
		loaded[oid] = true
	}
	for _, r := range raws {
		if below[r.child] && !loaded[r.parent] {
			oids = append(oids, r.parent)
			loaded[r.parent] = true
		}
	}
	tables, err := loadTables(ctx, q, oids)
	if err != nil {
		return nil, err
	}
	g := &graph{students: tables[studentsOID]}
	if len(g.students.pk) != 1 {
		return nil, fmt.Errorf("merge: %s must have a single-column primary key, has %v", StudentsTable, g.students.pk)
	}
	g.rootCol = g.students.pk[0]
	for _, r := range raws {
		if !below[r.child] {
			continue
		}
		fk := &foreignKey{name: r.name, child: tables[r.child], cols: r.cols, parent: tables[r.parent], refCols: r.refCols}
		g.checked = append(g.checked, fk)
		if below[r.parent] {
			fk.parent.incoming = append(fk.parent.incoming, fk)
			g.fks = append(g.fks, fk)
		}
	}

	// A reference to students through another unique column (students.sis_uuid, say) would be missed by
	// the move, the census and Verify alike, leaving rows on the merged-away account: refuse to merge
	// rather than report a clean merge.
	for _, fk := range g.fks {
		if fk.parent != g.students {
			continue
		}
		for _, rc := range fk.refCols {
			if rc != g.rootCol {
				return nil, fmt.Errorf("merge: %s (%s) references students.%s, not students.%s: a merge cannot move those rows; point it at students.%s",
					fk.child.label(), fk.name, rc, g.rootCol, g.rootCol)
			}
		}
	}

	// Student columns: a fixpoint over the FKs, starting at students.id.
	isStudent := func(t *table, c string) bool {
		return (t == g.students && c == g.rootCol) || t.isStudentCol(c)
	}
	for changed := true; changed; {
		changed = false
		for _, fk := range g.fks {
			for i, c := range fk.cols {
				if isStudent(fk.parent, fk.refCols[i]) && !isStudent(fk.child, c) {
					fk.child.studentCols = append(fk.child.studentCols, c)
					changed = true
				}
			}
		}
	}
	for oid, t := range tables {
		if !below[oid] {
			continue
		}
		sort.Slice(t.studentCols, func(i, j int) bool {
			return slices.Index(t.order, t.studentCols[i]) < slices.Index(t.order, t.studentCols[j])
		})
		g.tables = append(g.tables, t)
	}
	sort.Slice(g.tables, func(i, j int) bool {
		a, b := g.tables[i], g.tables[j]
		if (a == g.students) != (b == g.students) {
			return a == g.students
		}
		return a.label() < b.label()
	})
	return g, nil
}

func loadTables(ctx context.Context, q Querier, oids []uint32) (map[uint32]*table, error) {
	tables := make(map[uint32]*table, len(oids))
	rows, err := q.Query(ctx, `
		SELECT c.oid, n.nspname::text, c.relname::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = ANY($1)`, oids)
	if err != nil {
		return nil, fmt.Errorf("merge: reading tables: %w", err)
	}
	for rows.Next() {
		t := &table{cols: map[string]column{}}
		if err := rows.Scan(&t.oid, &t.schema, &t.name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("merge: reading tables: %w", err)
		}
		tables[t.oid] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("merge: reading tables: %w", err)
	}

	rows, err = q.Query(ctx, `
		SELECT a.attrelid::oid, a.attname::text, format_type(a.atttypid, a.atttypmod),
		       a.attgenerated = '' AND a.attidentity <> 'a'
		FROM pg_attribute a
		WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attrelid, a.attnum`, oids)
	if err != nil {
		return nil, fmt.Errorf("merge: reading columns: %w", err)
	}
	for rows.Next() {
		var oid uint32
		var c column
		if err := rows.Scan(&oid, &c.name, &c.typ, &c.writable); err != nil {
			rows.Close()
			return nil, fmt.Errorf("merge: reading columns: %w", err)
		}
		t := tables[oid]
		t.cols[c.name] = c
		t.order = append(t.order, c.name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("merge: reading columns: %w", err)
	}

	// Unique constraints and unique indexes alike; expression indexes cannot be projected and are
	// skipped (a collision there aborts the merge instead of being folded).
	rows, err = q.Query(ctx, `
		SELECT i.indrelid::oid, ic.relname::text, i.indisprimary, i.indnullsnotdistinct,
		       coalesce(pg_get_expr(i.indpred, i.indrelid), ''),
		       array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
		             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
		             WHERE k.o <= i.indnkeyatts ORDER BY k.o)
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		WHERE i.indrelid = ANY($1) AND i.indisunique AND i.indisvalid AND i.indexprs IS NULL
		ORDER BY i.indrelid, NOT i.indisprimary, ic.relname`, oids)
	if err != nil {
		return nil, fmt.Errorf("merge: reading unique keys: %w", err)
	}
	for rows.Next() {
		var oid uint32
		var u uniqueKey
		if err := rows.Scan(&oid, &u.name, &u.primary, &u.nullsNotDistinct, &u.pred, &u.cols); err != nil {
			rows.Close()
			return nil, fmt.Errorf("merge: reading unique keys: %w", err)
		}
		t := tables[oid]
		t.uniques = append(t.uniques, u)
		if u.primary {
			t.pk = u.cols
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("merge: reading unique keys: %w", err)
	}
	return tables, nil
}
