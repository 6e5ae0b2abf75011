package scan

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// FindCandidatesNaive is the original platform's scan, kept as the benchmark's baseline: it loads
// the range's students, sends one query per student for its matches (using the same key columns
// and indexes as FindCandidates, so the comparison is fair), and sorts the pairs in memory. It returns exactly what FindCandidates returns, at one round trip per student.
func FindCandidatesNaive(ctx context.Context, db Querier, r Range) ([]Pair, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	type student struct {
		id                 int64
		email, first, last string
		birth              *time.Time
	}
	rows, err := db.Query(ctx, `SELECT id, email, first_name, last_name, birth_date FROM students
		WHERE id BETWEEN $1 AND $2 AND merged_into IS NULL`, r.First, r.Last)
	if err != nil {
		return nil, fmt.Errorf("scan: loading students %d..%d: %w", r.First, r.Last, err)
	}
	var students []student
	for rows.Next() {
		var s student
		if err := rows.Scan(&s.id, &s.email, &s.first, &s.last, &s.birth); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan: loading students %d..%d: %w", r.First, r.Last, err)
		}
		students = append(students, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("scan: loading students %d..%d: %w", r.First, r.Last, err)
	}

	var pairs []Pair
	for _, s := range students {
		// Older live matches, and merged accounts standing for their live root when it is older.
		// Two branches, so each probes its own partial indexes as FindCandidates does.
		matches, err := db.Query(ctx, `
			SELECT id,
			       email_norm = edtech_normalize_email($2) COLLATE "C",
			       coalesce(last_name_lower = lower($4) COLLATE "C" AND first_name_lower = lower($3) COLLATE "C"
			                AND birth_date = $5, false)
			FROM students
			WHERE merged_into IS NULL AND id < $1
			  AND (email_norm = edtech_normalize_email($2) COLLATE "C"
			       OR (last_name_lower = lower($4) COLLATE "C" AND first_name_lower = lower($3) COLLATE "C"
			           AND birth_date = $5))
			UNION ALL
			SELECT m.merged_into,
			       m.email_norm = edtech_normalize_email($2) COLLATE "C",
			       coalesce(m.last_name_lower = lower($4) COLLATE "C" AND m.first_name_lower = lower($3) COLLATE "C"
			                AND m.birth_date = $5, false)
			FROM students m JOIN students r ON r.id = m.merged_into AND r.merged_into IS NULL
			WHERE m.merged_into IS NOT NULL AND m.merged_into < $1
			  AND (m.email_norm = edtech_normalize_email($2) COLLATE "C"
			       OR (m.last_name_lower = lower($4) COLLATE "C" AND m.first_name_lower = lower($3) COLLATE "C"
			           AND m.birth_date = $5))`,
			s.id, s.email, s.first, s.last, s.birth)
		if err != nil {
			return nil, fmt.Errorf("scan: matching student %d: %w", s.id, err)
		}
		// survivor id -> how it matched, over the live matches and the merged accounts' roots.
		type how struct{ email, name bool }
		found := map[int64]how{}
		for matches.Next() {
			var id int64
			var byEmail, byName bool
			if err := matches.Scan(&id, &byEmail, &byName); err != nil {
				matches.Close()
				return nil, fmt.Errorf("scan: matching student %d: %w", s.id, err)
			}
			h := found[id]
			found[id] = how{h.email || byEmail, h.name || byName}
		}
		if err := matches.Err(); err != nil {
			return nil, fmt.Errorf("scan: matching student %d: %w", s.id, err)
		}
		var best int64
		for id := range found {
			if best == 0 || id < best {
				best = id
			}
		}
		if best != 0 {
			pairs = append(pairs, Pair{SurvivorID: best, DuplicateID: s.id, Reason: reason(found[best].email, found[best].name)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].DuplicateID < pairs[j].DuplicateID })
	return pairs, nil
}

func reason(byEmail, byName bool) string {
	switch {
	case byEmail && byName:
		return ReasonEmail + "," + ReasonNameBirthDate
	case byEmail:
		return ReasonEmail
	}
	return ReasonNameBirthDate
}
