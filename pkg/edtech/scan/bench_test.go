package scan_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/edtech/internal/pgtest"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/edtech/seed"
)

// envInt reads a benchmark size from the environment.
func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkScan runs the naive and the batched scan over the same seeded database in the same
// run and reports the ratio. Sizes: EDTECH_BENCH_STUDENTS (default 20,000), EDTECH_BENCH_RELATED
// (rows per student, default 10), EDTECH_BENCH_RANGES (default 64, as the nightly schedule).
// The 200k run: make -C pkg/edtech bench-200k.
func BenchmarkScan(b *testing.B) {
	ctx := context.Background()
	students := envInt(b, "EDTECH_BENCH_STUDENTS", 20_000)
	related := envInt(b, "EDTECH_BENCH_RELATED", 10)
	nRanges := envInt(b, "EDTECH_BENCH_RANGES", 64)

	pool := pgtest.Pool(b)
	start := time.Now()
	res, err := seed.Generate(ctx, pool, seed.Options{Students: students, RelatedPerStudent: related, DuplicateRate: 0.02, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d students, %d related rows, %d planted duplicates in %s",
		students, res.Related(), len(res.Duplicates), time.Since(start).Round(time.Millisecond))
	// By the nightly run autovacuum has set the visibility map (without it every index-only scan
	// visits the heap) and is done with the fresh rows: vacuum everything now rather than have
	// autovacuum compete with the measurement.
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		b.Fatal(err)
	}
	ranges, err := scan.Ranges(ctx, pool, nRanges)
	if err != nil {
		b.Fatal(err)
	}

	scanAll := func(b *testing.B, find func(context.Context, scan.Querier, scan.Range) ([]scan.Pair, error)) {
		for range b.N {
			found := 0
			for _, r := range ranges {
				ps, err := find(ctx, pool, r)
				if err != nil {
					b.Fatal(err)
				}
				found += len(ps)
			}
			if found != len(res.Duplicates) {
				b.Fatalf("found %d pairs, planted %d", found, len(res.Duplicates))
			}
		}
		b.ReportMetric(float64(students)*float64(b.N)/b.Elapsed().Seconds(), "students/s")
	}
	var naive, batched time.Duration
	b.Run("naive", func(b *testing.B) {
		scanAll(b, scan.FindCandidatesNaive)
		naive = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("batched", func(b *testing.B) {
		scanAll(b, scan.FindCandidates)
		batched = b.Elapsed() / time.Duration(b.N)
	})
	if naive == 0 || batched == 0 {
		return // a -bench filter skipped one side
	}
	b.Run("speedup", func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(naive.Seconds(), "naive-s/scan")
		b.ReportMetric(batched.Seconds(), "batched-s/scan")
		b.ReportMetric(float64(naive)/float64(batched), "x")
	})
}
