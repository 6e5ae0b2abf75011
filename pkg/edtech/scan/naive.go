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
		matches, err := db.Query(ctx, `
			SELECT id,
			       email_norm = edtech_normalize_email($2) COLLATE "C",
			       coalesce(last_name_lower = lower($4) COLLATE "C" AND first_name_lower = lower($3) COLLATE "C"
			                AND birth_date = $5, false)
			FROM students
			WHERE merged_into IS NULL AND id < $1
			  AND (email_norm = edtech_normalize_email($2) COLLATE "C"
			       OR (last_name_lower = lower($4) COLLATE "C" AND first_name_lower = lower($3) COLLATE "C"
			           AND birth_date = $5))`,
			s.id, s.email, s.first, s.last, s.birth)
		if err != nil {
			return nil, fmt.Errorf("scan: matching student %d: %w", s.id, err)
		}
		var best Pair
		for matches.Next() {
			var id int64
			var byEmail, byName bool
			if err := matches.Scan(&id, &byEmail, &byName); err != nil {
				matches.Close()
				return nil, fmt.Errorf("scan: matching student %d: %w", s.id, err)
			}
			if best.SurvivorID == 0 || id < best.SurvivorID {
				best = Pair{SurvivorID: id, DuplicateID: s.id, Reason: reason(byEmail, byName)}
			}
		}
		if err := matches.Err(); err != nil {
			return nil, fmt.Errorf("scan: matching student %d: %w", s.id, err)
		}
		if best.SurvivorID != 0 {
			pairs = append(pairs, best)
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
