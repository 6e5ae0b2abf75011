package merge_test

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/pubq/pubq/pkg/edtech/internal/pgtest"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/seed"
)

// BenchmarkMerge merges planted duplicate pairs of a seeded database, one transaction each, and
// reports merges/s; dry_run plans the same kind of merge and rolls it back, merge+verify and
// merge+verify_database verify each merge in its transaction. Size:
// EDTECH_BENCH_MERGE_STUDENTS (default 5,000 students, 10 related rows each, 30% duplicates).
func BenchmarkMerge(b *testing.B) {
	ctx := context.Background()
	students := 5000
	if v := os.Getenv("EDTECH_BENCH_MERGE_STUDENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("EDTECH_BENCH_MERGE_STUDENTS=%q: want a positive integer", v)
		}
		students = n
	}
	pool := pgtest.Pool(b)
	res, err := seed.Generate(ctx, pool, seed.Options{Students: students, RelatedPerStudent: 10, DuplicateRate: 0.3, Seed: 3})
	if err != nil {
		b.Fatal(err)
	}
	pairs := res.Duplicates
	next := 0

	b.Run("dry_run", func(b *testing.B) {
		for i := range b.N {
			p := pairs[i%len(pairs)]
			tx, err := pool.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := merge.Plan(ctx, tx, p.SurvivorID, p.DuplicateID); err != nil {
				b.Fatal(err)
			}
			if err := tx.Rollback(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "merges/s")
	})
	// One merge and its verification in one transaction, as the account.merge job does them.
	for _, v := range []struct {
		name   string
		verify func(context.Context, merge.Querier, int64, int64, *merge.Report) error
	}{{"merge+verify", merge.Verify}, {"merge+verify_database", merge.VerifyDatabase}} {
		b.Run(v.name, func(b *testing.B) {
			if next+b.N > len(pairs) {
				b.Fatalf("%d merges asked, %d planted pairs left: lower -benchtime or raise EDTECH_BENCH_MERGE_STUDENTS", b.N, len(pairs)-next)
			}
			for range b.N {
				p := pairs[next]
				next++
				tx, err := pool.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				rep, err := merge.Merge(ctx, tx, p.SurvivorID, p.DuplicateID, merge.Options{})
				if err != nil {
					b.Fatal(err)
				}
				if err := v.verify(ctx, tx, p.SurvivorID, p.DuplicateID, rep); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "merges/s")
		})
	}
	b.Run("merge", func(b *testing.B) {
		if next+b.N > len(pairs) {
			b.Fatalf("%d merges asked, %d planted pairs left: lower -benchtime or raise EDTECH_BENCH_MERGE_STUDENTS", b.N, len(pairs)-next)
		}
		var last *merge.Report
		for range b.N {
			p := pairs[next]
			next++
			tx, err := pool.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if last, err = merge.Merge(ctx, tx, p.SurvivorID, p.DuplicateID, merge.Options{}); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "merges/s")
		b.StopTimer()
		if err := merge.Verify(ctx, pool, last.SurvivorID, last.DuplicateID, last); err != nil {
			b.Fatal(err)
		}
	})
}
