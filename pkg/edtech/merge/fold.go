package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A fold pairs a row that must go (loser) with the row that stays (keeper). Rows travel between
// statements as JSON arrays of the columns in their shape, never interpreted in Go; the SQL casts
// each element back to its column's type.
type foldPair struct {
	Keeper json.RawMessage `json:"k"`
	Loser  json.RawMessage `json:"l"`
}

// shape is the list of columns carried for a table's rows during a fold: the columns that identify
// a row plus every column referenced by an FK into the table.
type shape struct {
	cols     []string
	id       []string
	nullSafe bool // compare id with IS NOT DISTINCT FROM (NULLS NOT DISTINCT key, no primary key)
}

func shapeFor(t *table, u uniqueKey) shape {
	s := shape{id: t.pk}
	if len(s.id) == 0 {
		s.id, s.nullSafe = u.cols, u.nullsNotDistinct
	}
	need := map[string]bool{}
	for _, c := range s.id {
		need[c] = true
	}
	for _, fk := range t.incoming {
		for _, c := range fk.refCols {
			need[c] = true
		}
	}
	for _, c := range t.order {
		if need[c] {
			s.cols = append(s.cols, c)
		}
	}
	return s
}

func (s shape) pos(c string) int { return slices.Index(s.cols, c) }

// rowJSON is the SQL building the JSON array of a row of alias a.
func (s shape) rowJSON(a string) string {
	parts := make([]string, len(s.cols))
	for i, c := range s.cols {
		parts[i] = a + "." + pgx.Identifier{c}.Sanitize()
	}
	return "jsonb_build_array(" + strings.Join(parts, ", ") + ")"
}

// field is the SQL extracting element pos of the pair side ("l" or "k") of p, cast to typ.
func field(side string, pos int, typ string) string {
	return "(p->'" + side + "'->>" + strconv.Itoa(pos) + ")::" + typ
}

func eq(a, b string, nullSafe bool) string {
	if nullSafe {
		return a + " IS NOT DISTINCT FROM " + b
	}
	return a + " = " + b
}

func mAlias(side string, i int) string { return "__merge_" + side + strconv.Itoa(i) }

// conflicts finds the rows of t that would collide on unique key u once every student column
// equal to the duplicate holds the survivor and, when via is set, once the rows of t referencing
// a loser of the parent fold (pairs, the parent's JSON; viaPos locates via's referenced columns in
// it) reference its keeper. In each colliding group the keeper is an unchanged row (the
// survivor's), else a row not re-pointed, else the lowest; the others are its losers.
func (m *merger) conflicts(ctx context.Context, t *table, u uniqueKey, via *foreignKey, viaPos []int, pairs []byte) ([]foldPair, error) {
	sh := shapeFor(t, u)
	col := func(a, c string) string { return a + "." + pgx.Identifier{c}.Sanitize() }

	// $1 and $2 (survivor, duplicate) appear only when u has a student column; the pairs follow.
	usesIDs := intersects(u.cols, t.studentCols)
	pairsParam := "$3"
	if !usesIDs {
		pairsParam = "$1"
	}
	var with []string
	if via != nil {
		var sel []string
		for i, c := range via.cols {
			typ := t.cols[c].typ
			sel = append(sel, field("l", viaPos[i], typ)+" AS "+mAlias("l", i), field("k", viaPos[i], typ)+" AS "+mAlias("k", i))
		}
		with = append(with, "m AS (SELECT "+strings.Join(sel, ", ")+" FROM jsonb_array_elements("+pairsParam+"::jsonb) AS p)")
	}
	matched := "false"
	var join, notMatched []string
	if via != nil {
		matched = "m." + mAlias("l", 0) + " IS NOT NULL"
		for i, c := range via.cols {
			join = append(join, col("t", c)+" = m."+mAlias("l", i))
		}
		notMatched = append(notMatched, "NOT EXISTS (SELECT 1 FROM m WHERE "+strings.Join(join, " AND ")+")")
	}
	var hasDup, keys, projected, nonNull []string
	for i, c := range u.cols {
		e := col("t", c)
		if via != nil {
			if j := slices.Index(via.cols, c); j >= 0 {
				e = "CASE WHEN " + matched + " THEN m." + mAlias("k", j) + " ELSE " + e + " END"
			}
		}
		if t.isStudentCol(c) {
			hasDup = append(hasDup, col("t", c)+" = $2::bigint")
			notMatched = append(notMatched, col("t", c)+" IS DISTINCT FROM $2::bigint")
			e = "CASE WHEN " + e + " = $2::bigint THEN $1::bigint ELSE " + e + " END"
		}
		k := "k" + strconv.Itoa(i)
		keys = append(keys, k)
		projected = append(projected, e+" AS "+k)
		nonNull = append(nonNull, e+" IS NOT NULL")
	}
	changed := append([]string{matched}, hasDup...)
	where := "(" + strings.Join(changed, " OR ") + ")"
	if !u.nullsNotDistinct {
		where += " AND " + strings.Join(nonNull, " AND ")
	}
	pred := ""
	if u.pred != "" { // SQL the database deparsed from its own catalog (pg_get_expr), not input
		pred = " AND (" + u.pred + ")"
	}
	from := t.ident() + " t"
	if via != nil {
		from += " LEFT JOIN m ON " + strings.Join(join, " AND ")
	}
	with = append(with, "chg AS (SELECT "+sh.rowJSON("t")+" AS rid, "+strings.Join(projected, ", ")+", "+matched+
		" AS matched FROM "+from+" WHERE "+where+pred+")")

	var partner string
	if u.nullsNotDistinct {
		var on []string
		for i, c := range u.cols {
			on = append(on, "chg."+keys[i]+" IS NOT DISTINCT FROM "+col("t", c))
		}
		partner = "EXISTS (SELECT 1 FROM chg WHERE " + strings.Join(on, " AND ") + ")"
	} else {
		var raw []string
		for _, c := range u.cols {
			raw = append(raw, col("t", c))
		}
		partner = "(" + strings.Join(raw, ", ") + ") IN (SELECT " + strings.Join(keys, ", ") + " FROM chg)"
	}
	var rawKeys []string
	for i, c := range u.cols {
		rawKeys = append(rawKeys, col("t", c)+" AS "+keys[i])
	}
	if len(notMatched) == 0 {
		notMatched = []string{"true"}
	}
	with = append(with, "grp AS (SELECT rid, "+strings.Join(keys, ", ")+", true AS changed, matched FROM chg"+
		" UNION ALL SELECT "+sh.rowJSON("t")+", "+strings.Join(rawKeys, ", ")+", false, false FROM "+t.ident()+" t WHERE "+
		partner+" AND "+strings.Join(notMatched, " AND ")+pred+")")
	with = append(with, "ranked AS (SELECT rid, first_value(rid) OVER w AS keeper, row_number() OVER w AS rn FROM grp"+
		" WINDOW w AS (PARTITION BY "+strings.Join(keys, ", ")+" ORDER BY changed, matched, rid))")
	sql := "WITH " + strings.Join(with, ",\n") + "\nSELECT keeper, rid FROM ranked WHERE rn > 1 ORDER BY keeper, rid"

	var args []any
	if usesIDs {
		args = append(args, m.survivor, m.duplicate)
	}
	if via != nil {
		args = append(args, string(pairs))
	}
	rows, err := m.tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("merge: finding collisions in %s on %s: %w", t.label(), u.name, err)
	}
	defer rows.Close()
	var out []foldPair
	for rows.Next() {
		var k, l []byte
		if err := rows.Scan(&k, &l); err != nil {
			return nil, fmt.Errorf("merge: finding collisions in %s on %s: %w", t.label(), u.name, err)
		}
		out = append(out, foldPair{Keeper: k, Loser: l})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("merge: finding collisions in %s on %s: %w", t.label(), u.name, err)
	}
	return out, nil
}

// fold reconciles the losers of t with their keepers: fill (one-row-per-student tables only),
// re-point every referencing row, then delete the losers.
func (m *merger) fold(ctx context.Context, t *table, u uniqueKey, pairs []foldPair, depth int) error {
	if len(pairs) == 0 {
		return nil
	}
	if depth > maxFoldDepth {
		return fmt.Errorf("merge: folds nested deeper than %d at %s", maxFoldDepth, t.label())
	}
	sh := shapeFor(t, u)
	js, err := json.Marshal(pairs)
	if err != nil {
		return fmt.Errorf("merge: encoding folds of %s: %w", t.label(), err)
	}

	onePerStudent := len(u.cols) > 0
	for _, c := range u.cols {
		if !t.isStudentCol(c) {
			onePerStudent = false
		}
	}
	if onePerStudent {
		if err := m.fill(ctx, t, sh, js); err != nil {
			return err
		}
	}
	for _, fk := range t.incoming {
		if err := m.repoint(ctx, fk, sh, js, depth); err != nil {
			return err
		}
	}

	var sel, match []string
	for i, c := range sh.id {
		sel = append(sel, field("l", sh.pos(c), t.cols[c].typ)+" AS "+mAlias("l", i))
		match = append(match, eq("t."+pgx.Identifier{c}.Sanitize(), "m."+mAlias("l", i), sh.nullSafe))
	}
	// Each deleted row comes back whole: a loser may hold data its keeper lacks (the duplicate's
	// final submission, its grade), and the audit must keep it for a human to restore.
	idCols := make([]string, len(sh.id))
	for i, c := range sh.id {
		idCols[i] = "t." + pgx.Identifier{c}.Sanitize()
	}
	rows, err := m.tx.Query(ctx, "DELETE FROM "+t.ident()+" t USING (SELECT "+strings.Join(sel, ", ")+
		" FROM jsonb_array_elements($1::jsonb) AS p) m WHERE "+strings.Join(match, " AND ")+
		" RETURNING jsonb_build_array("+strings.Join(idCols, ", ")+"), to_jsonb(t)", string(js))
	if err != nil {
		return fmt.Errorf("merge: deleting folded rows of %s: %w", t.label(), err)
	}
	deleted := map[string]json.RawMessage{} // identity (sh.id's values) -> the whole row
	for rows.Next() {
		var id, row []byte
		if err := rows.Scan(&id, &row); err != nil {
			rows.Close()
			return fmt.Errorf("merge: deleting folded rows of %s: %w", t.label(), err)
		}
		var vals []json.RawMessage
		if err := json.Unmarshal(id, &vals); err != nil {
			rows.Close()
			return fmt.Errorf("merge: deleting folded rows of %s: %w", t.label(), err)
		}
		deleted[identity(vals)] = row
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("merge: deleting folded rows of %s: %w", t.label(), err)
	}
	if len(deleted) != len(pairs) {
		return fmt.Errorf("merge: deleted %d of %d folded rows of %s", len(deleted), len(pairs), t.label())
	}
	m.stat(t).Deleted += int64(len(deleted))
	for _, p := range pairs {
		k, err := sh.object(p.Keeper)
		if err != nil {
			return fmt.Errorf("merge: recording folds of %s: %w", t.label(), err)
		}
		l, err := sh.object(p.Loser)
		if err != nil {
			return fmt.Errorf("merge: recording folds of %s: %w", t.label(), err)
		}
		var vals []json.RawMessage
		if err := json.Unmarshal(p.Loser, &vals); err != nil {
			return fmt.Errorf("merge: recording folds of %s: %w", t.label(), err)
		}
		ids := make([]json.RawMessage, len(sh.id))
		for i, c := range sh.id {
			ids[i] = vals[sh.pos(c)]
		}
		row, ok := deleted[identity(ids)]
		if !ok {
			return fmt.Errorf("merge: folded row %s of %s was not among those deleted", p.Loser, t.label())
		}
		m.folds = append(m.folds, Fold{Table: t.label(), Kept: k, Deleted: l, Row: row})
	}
	return nil
}

// identity joins a row's identity values as Postgres wrote them (jsonb's canonical text on both sides).
func identity(vals []json.RawMessage) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = string(v)
	}
	return strings.Join(parts, "\x00")
}

// object turns a row's JSON array into a {"column": value} object, the form the report records
// (it outlives the shape, which depends on the FKs of the day).
func (s shape) object(row json.RawMessage) (json.RawMessage, error) {
	var vals []json.RawMessage
	if err := json.Unmarshal(row, &vals); err != nil {
		return nil, err
	}
	if len(vals) != len(s.cols) {
		return nil, fmt.Errorf("row %s has %d values for columns %v", row, len(vals), s.cols)
	}
	obj := make(map[string]json.RawMessage, len(vals))
	for i, c := range s.cols {
		obj[c] = vals[i]
	}
	return json.Marshal(obj)
}

// fill copies the loser's values into the keeper's NULL columns: for a one-row-per-student table
// (a profile) the union of what is known about the person is right, whereas for an event row (an
// enrollment) mixing two rows would invent a record. Key columns are left alone.
func (m *merger) fill(ctx context.Context, t *table, sh shape, js []byte) error {
	inKey := map[string]bool{}
	for _, u := range t.uniques {
		for _, c := range u.cols {
			inKey[c] = true
		}
	}
	var sets, anyNull []string
	for _, c := range t.order {
		if inKey[c] || !t.cols[c].writable {
			continue
		}
		q := pgx.Identifier{c}.Sanitize()
		sets = append(sets, q+" = COALESCE(k."+q+", l."+q+")")
		anyNull = append(anyNull, "(k."+q+" IS NULL AND l."+q+" IS NOT NULL)")
	}
	if len(sets) == 0 {
		return nil
	}
	var sel, match []string
	for i, c := range sh.id {
		typ := t.cols[c].typ
		sel = append(sel, field("l", sh.pos(c), typ)+" AS "+mAlias("l", i), field("k", sh.pos(c), typ)+" AS "+mAlias("k", i))
		q := pgx.Identifier{c}.Sanitize()
		match = append(match, eq("k."+q, "m."+mAlias("k", i), sh.nullSafe), eq("l."+q, "m."+mAlias("l", i), sh.nullSafe))
	}
	tag, err := m.tx.Exec(ctx, "UPDATE "+t.ident()+" k SET "+strings.Join(sets, ", ")+
		" FROM (SELECT "+strings.Join(sel, ", ")+" FROM jsonb_array_elements($1::jsonb) AS p) m, "+t.ident()+" l"+
		" WHERE "+strings.Join(match, " AND ")+" AND ("+strings.Join(anyNull, " OR ")+")", string(js))
	if err != nil {
		return fmt.Errorf("merge: filling %s from folded rows: %w", t.label(), err)
	}
	m.stat(t).Filled += tag.RowsAffected()
	return nil
}

// repoint makes the rows of fk.child that reference a loser of fk.parent reference its keeper,
// folding first the child rows that would then collide.
func (m *merger) repoint(ctx context.Context, fk *foreignKey, parent shape, js []byte, depth int) error {
	c := fk.child
	viaPos := make([]int, len(fk.cols))
	for i, rc := range fk.refCols {
		viaPos[i] = parent.pos(rc)
	}
	for _, u := range c.uniques {
		if !intersects(u.cols, fk.cols) {
			continue
		}
		pairs, err := m.conflicts(ctx, c, u, fk, viaPos, js)
		if err != nil {
			return err
		}
		if err := m.fold(ctx, c, u, pairs, depth+1); err != nil {
			return err
		}
	}
	var sel, sets, match []string
	for i, col := range fk.cols {
		typ := c.cols[col].typ
		sel = append(sel, field("l", viaPos[i], typ)+" AS "+mAlias("l", i), field("k", viaPos[i], typ)+" AS "+mAlias("k", i))
		q := pgx.Identifier{col}.Sanitize()
		sets = append(sets, q+" = m."+mAlias("k", i))
		match = append(match, "t."+q+" = m."+mAlias("l", i))
	}
	tag, err := m.tx.Exec(ctx, "UPDATE "+c.ident()+" t SET "+strings.Join(sets, ", ")+
		" FROM (SELECT "+strings.Join(sel, ", ")+" FROM jsonb_array_elements($1::jsonb) AS p) m WHERE "+
		strings.Join(match, " AND "), string(js))
	if err != nil {
		return fmt.Errorf("merge: re-pointing %s.%s to kept rows: %w", c.label(), fk.name, err)
	}
	if n := tag.RowsAffected(); n > 0 {
		m.stat(c).Folded += n
	}
	return nil
}
