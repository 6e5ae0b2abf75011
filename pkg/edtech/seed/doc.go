// Package seed fills an edtech database with deterministic synthetic data for tests and
// benchmarks: students (with planted duplicates whose pairs are reported back), the non-student
// side (courses, sessions, assignments, guardians, badges) and on average RelatedPerStudent rows
// per student spread over the tables that reference students. Rows go in with COPY
// (pgx.CopyFrom) in batches, so 200,000 students and about 2 million related rows take seconds.
package seed
