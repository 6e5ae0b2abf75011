package jobs_test

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/edtech/schema"
	"github.com/pubq/pubq/pkg/edtech/seed"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
)

func benchEnv(tb testing.TB, name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func benchInt(tb testing.TB, name string, def int) int {
	v := benchEnv(tb, name, strconv.Itoa(def))
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// template is a seeded database that every run clones, so every run starts from the same rows,
// statistics and visibility map.
type template struct {
	admin string // URL of the server's postgres database, from which databases are created
	name  string
	pairs []seed.Pair
	n     int
}

func seedTemplate(b *testing.B, students int, rate float64) *template {
	b.Helper()
	ctx := context.Background()
	dbURL := testenv.Postgres(b)
	u, err := url.Parse(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	t := &template{name: strings.TrimPrefix(u.Path, "/")}
	u.Path = "/postgres"
	t.admin = u.String()
	st, err := store.Open(ctx, store.Config{URL: dbURL})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	if err := schema.Apply(ctx, st.Pool()); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	res, err := seed.Generate(ctx, st.Pool(), seed.Options{Students: students, RelatedPerStudent: 10, DuplicateRate: rate, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	// As by the nightly run: autovacuum has set the visibility map and is done with the fresh rows.
	if _, err := st.Pool().Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		b.Fatal(err)
	}
	b.Logf("template: %d students, %d related rows, %d planted duplicates, seeded and vacuumed in %s",
		students, res.Related(), len(res.Duplicates), time.Since(start).Round(time.Millisecond))
	t.pairs, t.n = res.Duplicates, students
	return t
}

// clone creates a copy of the template, dropped when tb ends.
func (t *template) clone(tb testing.TB, suffix string) string {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, t.admin)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	name := t.name + "_" + suffix
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()+` TEMPLATE `+pgx.Identifier{t.name}.Sanitize()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		c, err := pgx.Connect(ctx, t.admin)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
	})
	u, _ := url.Parse(t.admin)
	u.Path = "/" + name
	return u.String()
}

// verifyConfig is the handlers' configuration for a verification mode: pair (merge.Verify), full
// (merge.VerifyDatabase) or off.
func verifyConfig(b *testing.B, mode string) jobs.Config {
	switch mode {
	case "pair":
		return jobs.Config{}
	case "full":
		return jobs.Config{VerifyDatabase: true}
	case "off":
		return jobs.Config{SkipVerify: true}
	}
	b.Fatalf("verification mode %q: want pair, full or off", mode)
	return jobs.Config{}
}

// benchRow is one line of the benchmark's table.
type benchRow struct {
	what, mode, verify       string
	workers                  int
	rangeJobs, mergeJobs     int
	split, rangesDone, total time.Duration
	mergeSpan, p50           time.Duration
	retries                  int
}

func (r benchRow) mergesPerSec() float64 {
	if r.mergeSpan <= 0 {
		return 0
	}
	return float64(r.mergeJobs) / r.mergeSpan.Seconds()
}

// timings reads what the jobs' own rows say: every time is the database's, relative to start.
func timings(b *testing.B, bd *bundle, start time.Time, r *benchRow) {
	b.Helper()
	ctx := context.Background()
	if n := bd.count(b, `SELECT count(*) FROM pubq.jobs WHERE state <> 'succeeded'`); n != 0 {
		var key, state, lastErr string
		_ = bd.pool.QueryRow(ctx, `SELECT key, state, coalesce(last_error, '') FROM pubq.jobs WHERE state <> 'succeeded' LIMIT 1`).Scan(&key, &state, &lastErr)
		b.Fatalf("%d jobs did not succeed, e.g. %s: %s: %s", n, key, state, lastErr)
	}
	var scanDone, rangesDone, allDone, mergeFirst, mergeLast *time.Time
	var p50 *float64
	err := bd.pool.QueryRow(ctx, `SELECT
		(SELECT max(finished_at) FROM pubq.jobs WHERE kind = $1),
		(SELECT max(finished_at) FROM pubq.jobs WHERE kind = $2),
		(SELECT max(finished_at) FROM pubq.jobs),
		(SELECT min(started_at) FROM pubq.jobs WHERE kind = $3),
		(SELECT max(finished_at) FROM pubq.jobs WHERE kind = $3),
		(SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) FROM pubq.jobs WHERE kind = $3),
		(SELECT count(*) FROM pubq.jobs WHERE kind = $2),
		(SELECT count(*) FROM pubq.jobs WHERE kind = $3),
		(SELECT count(*) FROM pubq.attempts)`, jobs.KindScan, jobs.KindScanRange, jobs.KindMerge).
		Scan(&scanDone, &rangesDone, &allDone, &mergeFirst, &mergeLast, &p50, &r.rangeJobs, &r.mergeJobs, &r.retries)
	if err != nil {
		b.Fatal(err)
	}
	since := func(t *time.Time) time.Duration {
		if t == nil {
			return 0
		}
		return t.Sub(start)
	}
	r.split, r.rangesDone, r.total = since(scanDone), since(rangesDone), since(allDone)
	if mergeFirst != nil && mergeLast != nil {
		r.mergeSpan = mergeLast.Sub(*mergeFirst)
	}
	if p50 != nil {
		r.p50 = time.Duration(*p50 * float64(time.Second))
	}
}

func dbNow(b *testing.B, bd *bundle) time.Time {
	b.Helper()
	var now time.Time
	if err := bd.pool.QueryRow(context.Background(), `SELECT clock_timestamp()`).Scan(&now); err != nil {
		b.Fatal(err)
	}
	return now
}

// BenchmarkNightlyFanout times the nightly duplicate scan as the workers run it: students.scan
// {ranges, mode} on a seeded database until every students.scan_range job and every account.merge
// job it led to has finished, with one worker and with two (in-process, each with its own Pub/Sub
// client, database pool and relay, on the same database and emulator, with the shipped
// queues.yaml); then the merge job alone, merges/s with and without verification. Every run
// starts from a clone of one seeded template. Sizes: EDTECH_BENCH_STUDENTS (default 20,000),
// EDTECH_BENCH_RANGES (64), EDTECH_BENCH_DUPLICATE_RATE (0.02), EDTECH_BENCH_MODES (dry_run,auto),
// EDTECH_BENCH_WORKERS (1,2), EDTECH_BENCH_FANOUT_VERIFY (pair; full costs ~0.7 s per merge at
// 200k; off), EDTECH_BENCH_MERGE_VERIFY (pair,full,off), EDTECH_BENCH_MERGE_JOBS (200).
// make bench-edtech runs it at 200k.
func BenchmarkNightlyFanout(b *testing.B) {
	students := benchInt(b, "EDTECH_BENCH_STUDENTS", 20_000)
	ranges := benchInt(b, "EDTECH_BENCH_RANGES", 64)
	rate, err := strconv.ParseFloat(benchEnv(b, "EDTECH_BENCH_DUPLICATE_RATE", "0.02"), 64)
	if err != nil {
		b.Fatal(err)
	}
	fanoutVerify := benchEnv(b, "EDTECH_BENCH_FANOUT_VERIFY", "pair")
	mergeJobs := benchInt(b, "EDTECH_BENCH_MERGE_JOBS", 200)
	queues, err := os.ReadFile(filepath.Join(testenv.RepoRoot(b), "queues.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	tmpl := seedTemplate(b, students, rate)
	var rows []benchRow
	run := 0

	for _, mode := range strings.Split(benchEnv(b, "EDTECH_BENCH_MODES", "dry_run,auto"), ",") {
		for _, ws := range strings.Split(benchEnv(b, "EDTECH_BENCH_WORKERS", "1,2"), ",") {
			workers, err := strconv.Atoi(ws)
			if err != nil || workers < 1 {
				b.Fatalf("EDTECH_BENCH_WORKERS: %q", ws)
			}
			b.Run(fmt.Sprintf("fanout/%s/workers=%d", mode, workers), func(b *testing.B) {
				var r benchRow
				for range b.N {
					run++
					bd := setupOn(b, string(queues), tmpl.clone(b, fmt.Sprint(run)), verifyConfig(b, fanoutVerify))
					for range workers {
						bd.run(b)
					}
					start := dbNow(b, bd)
					bd.enqueue(b, jobs.KindScan, "bench-scan", scan.ScanRequest{Ranges: ranges, Mode: scan.Mode(mode)})
					bd.waitSettled(b, 2*time.Hour, "bench-scan")
					r = benchRow{what: "fan-out", mode: mode, verify: fanoutVerify, workers: workers}
					timings(b, bd, start, &r)
					if r.mergeJobs != len(tmpl.pairs) {
						b.Fatalf("%d merge jobs, %d planted pairs", r.mergeJobs, len(tmpl.pairs))
					}
					if mode == string(scan.ModeAuto) {
						if n := bd.count(b, `SELECT count(*) FROM students WHERE merged_into IS NOT NULL`); n != len(tmpl.pairs) {
							b.Fatalf("%d students merged, %d planted pairs", n, len(tmpl.pairs))
						}
					}
				}
				b.ReportMetric(r.total.Seconds(), "s/fanout")
				b.ReportMetric(r.mergesPerSec(), "merges/s")
				rows = append(rows, r)
			})
		}
	}

	for _, verify := range strings.Split(benchEnv(b, "EDTECH_BENCH_MERGE_VERIFY", "pair,full,off"), ",") {
		b.Run("merge_job/verify="+verify, func(b *testing.B) {
			var r benchRow
			for range b.N {
				run++
				bd := setupOn(b, string(queues), tmpl.clone(b, fmt.Sprint(run)), verifyConfig(b, verify))
				n := min(mergeJobs, len(tmpl.pairs))
				reqs := make([]publish.Request, n)
				for i, p := range tmpl.pairs[:n] {
					var err error
					if reqs[i], err = jobs.MergeJob(merge.MergeRequest{SurvivorID: p.SurvivorID, DuplicateID: p.DuplicateID}, ""); err != nil {
						b.Fatal(err)
					}
				}
				bd.run(b)
				start := dbNow(b, bd)
				if _, err := bd.pub.EnqueueMany(context.Background(), reqs); err != nil {
					b.Fatal(err)
				}
				bd.waitSettled(b, 2*time.Hour)
				r = benchRow{what: "merge job", mode: string(scan.ModeAuto), verify: verify, workers: 1}
				timings(b, bd, start, &r)
			}
			b.ReportMetric(r.mergesPerSec(), "merges/s")
			rows = append(rows, r)
		})
	}
	printBenchTable(os.Stdout, students, ranges, len(tmpl.pairs), rows)
}

func printBenchTable(w io.Writer, students, ranges, pairs int, rows []benchRow) {
	fmt.Fprintf(w, "\nnightly fan-out: %d students, %d ranges, %d planted pairs (times from the jobs' rows, from the enqueue)\n", students, ranges, pairs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tmode\tverify\tworkers\trange jobs\tmerge jobs\tsplit\tranges done\tall done\tmerges/s\tp50 merge job\tretries\tvs 1 worker\t")
	base := map[string]time.Duration{}
	for _, r := range rows {
		key := r.what + r.mode + r.verify
		if r.workers == 1 {
			base[key] = r.total
		}
		ratio := "-"
		if b, ok := base[key]; ok && r.workers > 1 && r.total > 0 {
			ratio = fmt.Sprintf("%.2fx", b.Seconds()/r.total.Seconds())
		}
		sec := func(d time.Duration) string {
			if d == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2fs", d.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%.1f\t%s\t%d\t%s\t\n", r.what, r.mode, r.verify, r.workers, r.rangeJobs, r.mergeJobs,
			sec(r.split), sec(r.rangesDone), sec(r.total), r.mergesPerSec(), r.p50.Round(time.Millisecond), r.retries, ratio)
	}
	tw.Flush()
}
