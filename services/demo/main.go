// Command demo drives `make demo`: it enqueues a few thousand demo jobs over the producer's HTTP API
// across the queues (some flaky, a few that fail for good, some submitted twice), shows live progress
// from the database, and ends with a summary. infra/demo.sh starts the stack and the services around it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/schollz/progressbar/v3"

	"github.com/pubq/pubq/pkg/api"
	"github.com/pubq/pubq/pkg/demo"
	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/publish"
)

func main() {
	jobs := flag.Int("jobs", 3000, "jobs to enqueue")
	producer := flag.String("producer", "http://127.0.0.1:8080", "producer base URL")
	token := flag.String("token", os.Getenv("PUBQ_DEMO_TOKEN"), "producer bearer token")
	timeout := flag.Duration("timeout", 3*time.Minute, "give up after this long")
	jaeger := flag.String("jaeger", os.Getenv("PUBQ_JAEGER_URL"), "Jaeger base URL, if one runs")
	sample := flag.String("sample-file", "", "write the sample job's key, trace id and attempts here (a line each), for make demo to print its trace")
	flag.Parse()
	if err := run(*jobs, *producer, *token, *timeout, *jaeger, *sample); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type plan struct {
	reqs      []publish.Request
	payloads  []demo.Payload
	permanent int
	flaky     int
}

func makePlan(run string, n int, r *rand.Rand) plan {
	var p plan
	for i := range n {
		pl := demo.Payload{Note: fmt.Sprintf("demo job %d", i)}
		kind := "demo.record"
		switch x := r.IntN(100); {
		case x < 20:
			kind = "demo.payment"
		case x < 60:
			kind = "demo.email"
		case x < 65:
			kind, pl.FailTimes = "demo.flaky", 1+r.IntN(2) // succeeds on attempt 2 or 3
			p.flaky++
		}
		if i%500 == 499 {
			kind, pl.Permanent, pl.FailTimes = "demo.record", true, 0
			p.permanent++
		}
		p.payloads = append(p.payloads, pl)
		p.reqs = append(p.reqs, publish.Request{Kind: kind, Key: fmt.Sprintf("demo-%s-%05d", run, i)})
	}
	return p
}

func run(n int, producer, token string, timeout time.Duration, jaeger, sampleFile string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	dsn := os.Getenv("PUBQ_DATABASE_URL")
	if dsn == "" {
		return errors.New("PUBQ_DATABASE_URL is required (to watch progress)")
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	client, err := api.NewClient(producer, token, nil)
	if err != nil {
		return err
	}
	runID := fmt.Sprintf("%x", time.Now().Unix()%0xfffff)
	p := makePlan(runID, n, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)))
	fmt.Printf("pubq demo: enqueueing %d jobs over HTTP (%d flaky, %d that fail for good, every 10th batch sent twice)\n", n, p.flaky, p.permanent)

	start := time.Now()
	var dups atomic.Int64
	var enqErr error
	var once sync.Once
	var wg sync.WaitGroup
	batches := make(chan []publish.Request)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				res, err := client.EnqueueMany(ctx, b)
				if err != nil {
					once.Do(func() { enqErr = err; cancel() })
					return
				}
				for _, r := range res {
					if r.Duplicate {
						dups.Add(1)
					}
				}
			}
		}()
	}
	go func() {
		defer close(batches)
		for i := 0; i < len(p.reqs); i += 100 {
			b := p.reqs[i:min(i+100, len(p.reqs))]
			for k := range b {
				// Stamped at send time, so the summary's latency is enqueue → effect.
				pl := p.payloads[i+k]
				pl.EnqueuedNS = time.Now().UnixNano()
				b[k].Payload, _ = json.Marshal(pl)
			}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
			if (i/100)%10 == 9 {
				select { // a client retrying a batch whose answer it lost: same keys, no new jobs
				case batches <- b:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	bar := progressbar.NewOptions(n, progressbar.OptionSetDescription("jobs"), progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(20), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWriter(os.Stdout), progressbar.OptionSetRenderBlankState(true))
	prefix := "demo-" + runID + "-%"
	var last counts
	for {
		c, err := stateCounts(ctx, pool, prefix)
		if err != nil {
			if enqErr != nil {
				return fmt.Errorf("enqueue: %w", enqErr)
			}
			return err
		}
		last = c
		finished := c.succeeded + c.dead
		rate := float64(c.succeeded) / time.Since(start).Seconds()
		bar.Describe(fmt.Sprintf("done %d · running %d · queued %d · dead %d · %.0f/s", c.succeeded, c.running, c.waiting, c.dead, rate))
		_ = bar.Set(finished)
		if finished >= n {
			break
		}
		select {
		case <-ctx.Done():
			if enqErr != nil {
				return fmt.Errorf("enqueue: %w", enqErr)
			}
			return fmt.Errorf("timed out: %+v", c)
		case <-time.After(200 * time.Millisecond):
		}
	}
	_ = bar.Finish()
	wg.Wait()
	elapsed := time.Since(start)
	return summary(ctx, pool, prefix, n, last, dups.Load(), p, elapsed, jaeger, sampleFile)
}

type counts struct{ waiting, running, succeeded, dead int }

func stateCounts(ctx context.Context, pool *pgxpool.Pool, prefix string) (counts, error) {
	var c counts
	rows, err := pool.Query(ctx, `SELECT state, count(*) FROM pubq.jobs WHERE key LIKE $1 GROUP BY state`, prefix)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		var k int
		if err := rows.Scan(&s, &k); err != nil {
			return c, err
		}
		switch s {
		case "succeeded":
			c.succeeded += k
		case "dead", "cancelled":
			c.dead += k
		case "running":
			c.running += k
		default:
			c.waiting += k
		}
	}
	return c, rows.Err()
}

func summary(ctx context.Context, pool *pgxpool.Pool, prefix string, n int, c counts, dups int64, p plan, elapsed time.Duration, jaeger, sampleFile string) error {
	fmt.Printf("\n%d jobs finished in %.1fs (%.0f jobs/s end to end)\n\n", n, elapsed.Seconds(), float64(n)/elapsed.Seconds())
	rows, err := pool.Query(ctx, `
		SELECT j.queue, count(*), count(*) FILTER (WHERE j.state = 'succeeded'), count(*) FILTER (WHERE j.state = 'dead'),
		       count(*) FILTER (WHERE j.attempt > 1 AND j.state = 'succeeded'),
		       coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY e.latency_us) / 1000, 0),
		       coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY e.latency_us) / 1000, 0)
		FROM pubq.jobs j LEFT JOIN demo_effects e ON e.job_key = j.key
		WHERE j.key LIKE $1 GROUP BY j.queue ORDER BY j.queue`, prefix)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "queue\tjobs\tsucceeded\tdead-lettered\tsucceeded after retry\tp50 ms\tp99 ms\t")
	for rows.Next() {
		var q string
		var jobs, ok, dead, retried int
		var p50, p99 float64
		if err := rows.Scan(&q, &jobs, &ok, &dead, &retried, &p50, &p99); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t\n", q, jobs, ok, dead, retried, p50, p99)
	}
	rows.Close()
	_ = tw.Flush()
	var effects, distinct int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT job_key) FROM demo_effects WHERE job_key LIKE $1`, prefix).Scan(&effects, &distinct); err != nil {
		return err
	}
	fmt.Printf("\neffects: %d rows for %d jobs (duplicates: %d) · resubmitted batches answered %d duplicates, no new jobs\n", effects, distinct, effects-distinct, dups)
	fmt.Printf("dead-lettered: %d (planned %d permanent failures) · in the dead-letter topics with their reason\n", c.dead, p.permanent)
	var key, tp string
	var attempts int
	_ = pool.QueryRow(ctx, `SELECT key, coalesce(trace_parent, ''), attempt FROM pubq.jobs WHERE key LIKE $1 AND kind = 'demo.flaky' AND state = 'succeeded' ORDER BY attempt DESC LIMIT 1`, prefix).Scan(&key, &tp, &attempts)
	if key != "" {
		traceID := inspect.TraceID(tp)
		fmt.Printf("\nsample job %s (succeeded after retries), trace %s\n", key, orDash(traceID))
		fmt.Printf("  inspect it:  bin/pubqctl job %s   (the stack stops when the demo ends; PUBQ_DEMO_KEEP=1 make demo keeps it up)\n", key)
		if jaeger != "" {
			fmt.Printf("  its trace:   bin/pubqctl trace %s, or --id %s; %s/trace/%s where Jaeger serves its UI (docker compose)\n",
				key, orDash(traceID), strings.TrimRight(jaeger, "/"), orDash(traceID))
		} else {
			fmt.Printf("  its trace:   build Jaeger once with infra/jaeger.sh build; make demo then prints the waterfall\n")
		}
		if sampleFile != "" {
			if err := os.WriteFile(sampleFile, []byte(fmt.Sprintf("%s\n%s\n%d\n", key, traceID, attempts)), 0o644); err != nil {
				return err
			}
		}
	}
	if effects != distinct {
		return fmt.Errorf("%d duplicate effects", effects-distinct)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
