package scan

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

var (
	// ErrRanges: Ranges was asked for fewer than one range.
	ErrRanges = errors.New("scan: the number of ranges must be positive")
	// ErrRange: a Range whose First is after its Last.
	ErrRange = errors.New("scan: invalid range")
)

// Querier is what the scan reads through: *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Range is an inclusive range of student ids.
type Range struct {
	First int64 `json:"first"`
	Last  int64 `json:"last"`
}

// Validate rejects a range that contains nothing by construction.
func (r Range) Validate() error {
	if r.First > r.Last {
		return fmt.Errorf("%w: first %d after last %d", ErrRange, r.First, r.Last)
	}
	return nil
}

// Reasons a pair was found; a pair may carry both, comma-separated, in that order.
const (
	ReasonEmail         = "email"
	ReasonNameBirthDate = "name_birth_date"
)

// Pair is a likely duplicate: DuplicateID is a newer account (higher id) of the person whose
// oldest live account is SurvivorID.
type Pair struct {
	SurvivorID  int64  `json:"survivor_id"`
	DuplicateID int64  `json:"duplicate_id"`
	Reason      string `json:"reason"`
}

// Ranges splits the live (not merged) students by id into at most n contiguous ranges of nearly
// equal size (ntile), which together cover every id from the smallest to the largest. Fewer than n
// come back when there are fewer students; none when there are none.
func Ranges(ctx context.Context, db Querier, n int) ([]Range, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: got %d", ErrRanges, n)
	}
	rows, err := db.Query(ctx, `
		SELECT min(id), max(id)
		FROM (SELECT id, ntile($1) OVER (ORDER BY id) AS bucket FROM students WHERE merged_into IS NULL) s
		GROUP BY bucket ORDER BY bucket`, n)
	if err != nil {
		return nil, fmt.Errorf("scan: splitting students into %d ranges: %w", n, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Range, error) {
		var x Range
		return x, r.Scan(&x.First, &x.Last)
	})
	if err != nil {
		return nil, fmt.Errorf("scan: splitting students into %d ranges: %w", n, err)
	}
	// Close the gaps left by merged accounts so the ranges tile the id space.
	for i := 0; i+1 < len(out); i++ {
		out[i].Last = out[i+1].First - 1
	}
	return out, nil
}

// candidatesSQL joins the live students of the range to all live students on each match key
// (students.email_norm; last_name_lower, first_name_lower, birth_date: stored, C-collated, each
// with a partial (key..., id) index) and keeps the oldest match per student. The planner picks
// the join: at thousands of students per range a merge join against an index-only scan of the
// key index, for small ranges index probes. One statement per range, ordered by the database.
//
// Accounts merged away since still match, standing for their live root (merged_into, which every
// merge keeps pointing at a live account): a student whose only match was merged into an older
// account is paired with that account, instead of with nobody for ever. Only roots older than the
// student count, as for live matches, so two ranges never pair the same two accounts both ways.
// Merged accounts have partial indexes of their own; they are few.
const candidatesSQL = `
WITH d AS MATERIALIZED (
	SELECT id, email_norm, first_name_lower, last_name_lower, birth_date
	FROM students
	WHERE id BETWEEN $1 AND $2 AND merged_into IS NULL
),
by_email AS (
	SELECT d.id, min(s.id) AS survivor
	FROM d JOIN students s ON s.email_norm = d.email_norm AND s.id < d.id AND s.merged_into IS NULL
	GROUP BY d.id
),
by_name AS (
	SELECT d.id, min(s.id) AS survivor
	FROM d JOIN students s
	  ON s.last_name_lower = d.last_name_lower AND s.first_name_lower = d.first_name_lower
	 AND s.birth_date = d.birth_date AND s.id < d.id AND s.merged_into IS NULL
	GROUP BY d.id
),
m AS (
	SELECT m.merged_into AS root, m.email_norm, m.first_name_lower, m.last_name_lower, m.birth_date
	FROM students m JOIN students r ON r.id = m.merged_into AND r.merged_into IS NULL
	WHERE m.merged_into IS NOT NULL
),
via_merged AS (
	SELECT d.id, m.root AS survivor, m.email_norm = d.email_norm AS email,
	       coalesce(m.last_name_lower = d.last_name_lower AND m.first_name_lower = d.first_name_lower
	                AND m.birth_date = d.birth_date, false) AS name
	FROM d JOIN m ON m.root < d.id
	 AND (m.email_norm = d.email_norm
	      OR (m.last_name_lower = d.last_name_lower AND m.first_name_lower = d.first_name_lower
	          AND m.birth_date = d.birth_date))
),
cand AS (
	SELECT id, survivor, true AS email, false AS name FROM by_email
	UNION ALL SELECT id, survivor, false, true FROM by_name
	UNION ALL SELECT id, survivor, email, name FROM via_merged
),
best AS (SELECT id, min(survivor) AS survivor FROM cand GROUP BY id)
SELECT b.survivor, b.id,
       concat_ws(',', CASE WHEN bool_or(c.email) THEN 'email' END, CASE WHEN bool_or(c.name) THEN 'name_birth_date' END)
FROM best b JOIN cand c ON c.id = b.id AND c.survivor = b.survivor
GROUP BY b.survivor, b.id
ORDER BY b.id`

// FindCandidates returns the likely duplicates whose newer account lies in r, ordered by
// duplicate id. Two live accounts match when their e-mails normalise alike (edtech_normalize_email:
// lower-case, trimmed; for gmail.com/googlemail.com also without dots and +tag) or when
// lower(first_name), lower(last_name) and birth_date are equal (a NULL birth date matches
// nothing). Each duplicate is paired with its oldest match (lowest id). A merged account is never a
// duplicate or a survivor itself, but still matches for its live root when that root is older than
// the student. It runs one set-based statement.
func FindCandidates(ctx context.Context, db Querier, r Range) ([]Pair, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	// QueryExecModeExec: an unnamed statement is planned for these bounds every time; a cached
	// generic plan would assume a small range and probe row by row.
	rows, err := db.Query(ctx, candidatesSQL, pgx.QueryExecModeExec, r.First, r.Last)
	if err != nil {
		return nil, fmt.Errorf("scan: finding candidates in %d..%d: %w", r.First, r.Last, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Pair, error) {
		var p Pair
		return p, row.Scan(&p.SurvivorID, &p.DuplicateID, &p.Reason)
	})
	if err != nil {
		return nil, fmt.Errorf("scan: finding candidates in %d..%d: %w", r.First, r.Last, err)
	}
	return out, nil
}

// ScanRange is the students.scan_range handler body: the candidates of one range.
func ScanRange(ctx context.Context, db Querier, r Range) ([]Pair, error) {
	return FindCandidates(ctx, db, r)
}
