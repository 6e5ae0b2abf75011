// Command bench measures pubq's worker end to end on the Pub/Sub emulator against a baseline in the
// same run: a raw Pub/Sub receive-and-ack loop with the same streams and flow control. Ratios are what
// count (the machine is shared and noisy); absolute numbers are for orientation.
//
// Each mode gets its own topic and subscription and does two phases:
//
//	throughput  drain a pre-published backlog of -messages; jobs/s = messages / (last done − first receipt)
//	latency     publish at -rate msg/s for -latency-for while consuming; per-job latency is publish call →
//	            done (acked after the outcome is durable, for pubq), reported as p50/p99
//
// Modes: raw (receive + ack), raw-claim (the raw loop plus one batched claim per message, no completion:
// the "simple batcher" reference point; not in the default modes), pubq (decode, batched claim with lease, no-op handler, batched completion,
// ack), pubq-traced (pubq with the Pub/Sub client's tracing and pubq's handler spans at 100 % sampling,
// configured as telemetry.Setup configures the binaries, into an in-process discarding exporter; otelpgx
// is on too: the no-op handler runs no SQL, and each batched round trip of claims and completions is a
// pubq batch span with its SQL under it, linked with the jobs' spans), pubq-traced-lite (the same, but received by a client
// without its own tracing, as the worker does with PUBQ_PUBSUB_RECEIVE_TRACING=false: the handler span
// continues the publisher's create span; not in the default modes).
//
// Each throughput phase also reports the process's CPU time (user + system) per job: on a shared machine
// jobs/s swings with the neighbours' load, while CPU per job is what tracing costs, and once the machine
// is saturated it alone decides the jobs/s ratio.
//
// It needs PUBSUB_EMULATOR_HOST and PUBQ_DATABASE_URL (make bench provides both).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/pubq/pubq/pkg/admin"
	"github.com/pubq/pubq/pkg/gctune"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
	"github.com/pubq/pubq/pkg/worker"
)

type options struct {
	gc           string // the garbage collector's settings, as gctune applied them
	drainProfile string // prefix of per-drain CPU profiles ("" for none)
	messages     int
	streams      int
	outstanding  int
	rate         int
	latencyFor   time.Duration
	modes        []string
	rounds       int
	jsonOut      bool
	flushes      int
	delay        time.Duration
	flood        int
	criticalRate int
	bulkMaxRate  float64
	bulkStreams  int
	rawCritical  bool
	warmup       int
	subs         int
	window       int
}

// Result is one mode's measurement.
type Result struct {
	Mode        string  `json:"mode"`
	Round       int     `json:"round"`
	Messages    int     `json:"messages"`
	Seconds     float64 `json:"seconds"`
	JobsPerSec  float64 `json:"jobs_per_sec"`
	CPUPerJobUS float64 `json:"cpu_us_per_job"` // this process's CPU time during the throughput phase ÷ messages
	// The same for the local stack's servers, when their pid files are in PUBQ_RUN_DIR (make bench).
	EmulatorUSPerJob float64 `json:"emulator_cpu_us_per_job,omitempty"`
	PostgresUSPerJob float64 `json:"postgres_cpu_us_per_job,omitempty"`
	LatencyJobs      int     `json:"latency_jobs"`
	P50ms            float64 `json:"p50_ms"`
	P99ms            float64 `json:"p99_ms"`
}

// Report is the whole run.
type Report struct {
	Streams     int                `json:"streams"`
	Outstanding int                `json:"max_outstanding"`
	Rate        int                `json:"latency_rate"`
	Queues      int                `json:"queues"`
	Window      int                `json:"window,omitempty"`
	GC          string             `json:"gc"`
	Results     []Result           `json:"results"`
	Ratios      map[string]float64 `json:"ratios"`         // median jobs/s of a mode ÷ median jobs/s of raw
	CPUPerJobUS map[string]float64 `json:"cpu_us_per_job"` // median CPU µs per job of each mode
	Flood       *FloodResult       `json:"flood,omitempty"`
}

func main() {
	var o options
	var modes string
	flag.IntVar(&o.messages, "messages", 60000, "messages per throughput phase")
	flag.IntVar(&o.streams, "streams", 32, "streaming pulls per mode (NumGoroutines); the emulator paces each at ~2k msg/s")
	flag.IntVar(&o.outstanding, "outstanding", 2000, "max outstanding messages (flow control), same for every mode")
	flag.IntVar(&o.window, "window", 0, "throughput phase: publish while consuming, at most this many messages ahead (0: pre-publish the whole backlog)")
	flag.IntVar(&o.subs, "subscriptions", 1, "queues (topic + subscription each) the streams, outstanding messages and messages are split over")
	flag.IntVar(&o.rate, "rate", 2000, "publish rate of the latency phase, msg/s")
	flag.DurationVar(&o.latencyFor, "latency-for", 5*time.Second, "length of the latency phase")
	flag.StringVar(&modes, "modes", "raw,pubq,pubq-traced", "modes to run, comma-separated (flood: critical latency idle vs a bulk flood)")
	flag.IntVar(&o.flood, "flood", 100000, "flood mode: bulk jobs in the flood")
	flag.IntVar(&o.criticalRate, "critical-rate", 50, "flood mode: critical jobs per second")
	flag.Float64Var(&o.bulkMaxRate, "bulk-max-rate", 0, "flood mode: bulk's max_rate in jobs/s (0: unlimited)")
	flag.IntVar(&o.bulkStreams, "bulk-streams", 0, "flood mode: bulk's streaming pulls (0: the shipped queues.yaml's 1)")
	flag.BoolVar(&o.rawCritical, "raw-critical", false, "flood mode: consume critical with a raw Pub/Sub loop (the emulator's baseline)")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds (modes interleaved per round); ratios use medians")
	flag.IntVar(&o.warmup, "warmup", 30000, "messages of a discarded run of each mode first, so the emulator's JIT is warm for every mode")
	flag.BoolVar(&o.jsonOut, "json", false, "print JSON instead of a table")
	flag.IntVar(&o.flushes, "batch-flushes", 0, "pubq: claim/completion round trips in flight (0: worker default)")
	flag.DurationVar(&o.delay, "batch-delay", 0, "pubq: longest wait for batch companions (0: worker default)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.StringVar(&o.drainProfile, "drain-profile", "", "write a CPU profile of each measured drain alone to PREFIX-MODE-ROUND.prof (not with --cpuprofile)")
	memprofile := flag.String("memprofile", "", "write an allocation profile of the whole run to this file")
	flag.Parse()
	if o.subs < 1 || o.streams < o.subs || o.outstanding < o.subs || o.window < 0 {
		fmt.Fprintln(os.Stderr, "bench: need 1 ≤ --subscriptions ≤ --streams and --outstanding, and --window ≥ 0")
		os.Exit(2)
	}
	if *memprofile != "" {
		runtime.MemProfileRate = 4096 // fine enough to count the hot path's allocations per job
		defer writeHeapProfile(*memprofile)
	}
	if *cpuprofile != "" && o.drainProfile != "" {
		fmt.Fprintln(os.Stderr, "bench: --cpuprofile and --drain-profile exclude each other (one CPU profile at a time)")
		os.Exit(2)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	o.modes = strings.Split(modes, ",")
	// The worker binary's garbage collector settings, for every mode alike: the bench measures the
	// worker as it ships.
	o.gc = gctune.Apply().String()
	if err := run(context.Background(), o); err != nil {
		pprof.StopCPUProfile()
		if *memprofile != "" {
			writeHeapProfile(*memprofile)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		_ = f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: memprofile:", err)
	}
}

func run(ctx context.Context, o options) error {
	if os.Getenv("PUBSUB_EMULATOR_HOST") == "" || os.Getenv("PUBQ_DATABASE_URL") == "" {
		return fmt.Errorf("PUBSUB_EMULATOR_HOST and PUBQ_DATABASE_URL are required (use make bench)")
	}
	project := fmt.Sprintf("bench-%d", time.Now().UnixNano()%1e9)
	rep := Report{Streams: o.streams, Outstanding: o.outstanding, Rate: o.rate, Queues: o.subs, Window: o.window, GC: o.gc, Ratios: map[string]float64{}, CPUPerJobUS: map[string]float64{}}
	if o.warmup > 0 {
		// Every measured mode once, discarded: the emulator's JIT then has compiled the paths each one
		// takes (a pubq mode holds messages longer than the raw loop), and Postgres has its tables warm.
		fmt.Fprintf(os.Stderr, "warming up with %d messages per mode ...\n", o.warmup)
		w := o
		w.messages, w.latencyFor = o.warmup, 0
		for _, mode := range o.modes {
			if mode == "flood" {
				mode = "raw"
			}
			if _, err := runMode(ctx, w, project, mode, 0); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	for round := 1; round <= o.rounds; round++ {
		for _, mode := range o.modes {
			if mode == "flood" {
				if round > 1 {
					continue
				}
				fmt.Fprintf(os.Stderr, "flood: %d bulk jobs, critical at %d/s ...\n", o.flood, o.criticalRate)
				fr, err := runFlood(ctx, project, o.flood, o.criticalRate, 5*time.Second, o.bulkMaxRate, o.bulkStreams, o.rawCritical)
				if err != nil {
					return fmt.Errorf("flood: %w", err)
				}
				rep.Flood = &fr
				continue
			}
			fmt.Fprintf(os.Stderr, "round %d: %s ...\n", round, mode)
			r, err := runMode(ctx, o, project, mode, round)
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			rep.Results = append(rep.Results, r)
		}
	}
	base := median(rep.Results, "raw")
	for _, mode := range o.modes {
		if base > 0 && mode != "raw" {
			rep.Ratios[mode+"/raw"] = median(rep.Results, mode) / base
		}
	}
	for _, traced := range []string{"pubq-traced", "pubq-traced-lite"} {
		if p, t := median(rep.Results, "pubq"), median(rep.Results, traced); p > 0 && t > 0 {
			rep.Ratios[traced+"/pubq"] = t / p
		}
	}
	for _, r := range rep.Results {
		if _, done := rep.CPUPerJobUS[r.Mode]; !done {
			rep.CPUPerJobUS[r.Mode] = medianOf(rep.Results, r.Mode, func(r Result) float64 { return r.CPUPerJobUS })
		}
	}
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if f := rep.Flood; f != nil {
		consumer := "pubq worker"
		if f.RawCritical {
			consumer = "raw Pub/Sub loop (baseline)"
		}
		fmt.Printf("flood: %d bulk jobs (max_rate %g/s, 0 = unlimited) drained in %.1fs (%.0f jobs/s) while critical ran at %d/s, consumed by the %s\n",
			f.Flood, f.BulkMaxRate, f.FloodSeconds, f.BulkPerSec, f.CriticalRate, consumer)
		fmt.Printf("  critical idle:   %4d jobs  p50 %6.1f ms  p99 %6.1f ms\n", f.IdleJobs, f.IdleP50ms, f.IdleP99ms)
		fmt.Printf("  critical flood:  %4d jobs  p50 %6.1f ms  p99 %6.1f ms   (p99 flood/idle %.2f, target ≤ 2)\n", f.FloodJobs, f.FloodP50ms, f.FloodP99ms, f.P99FloodPerIdle)
		fmt.Printf("  of which publish → handler start p99: idle %.1f ms, flood %.1f ms\n\n", f.IdleStartP99ms, f.FloodStartP99ms)
	}
	if len(rep.Results) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "mode\tround\tmessages\tseconds\tjobs/s\tcpu µs/job\temulator µs/job\tpostgres µs/job\tlatency jobs\tp50 ms\tp99 ms\t\n")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.0f\t%.1f\t%.1f\t%.1f\t%d\t%.1f\t%.1f\t\n", r.Mode, r.Round, r.Messages, r.Seconds, r.JobsPerSec,
			r.CPUPerJobUS, r.EmulatorUSPerJob, r.PostgresUSPerJob, r.LatencyJobs, r.P50ms, r.P99ms)
	}
	_ = tw.Flush()
	backlog := "pre-published backlog"
	if o.window > 0 {
		backlog = fmt.Sprintf("published while consumed, at most %d ahead", o.window)
	}
	fmt.Printf("\nstreams %d, max outstanding %d over %d queue(s); throughput phase: %s; latency phase %d msg/s for %s\n%s\n",
		o.streams, o.outstanding, o.subs, backlog, o.rate, o.latencyFor, o.gc)
	for _, k := range sortedKeys(rep.Ratios) {
		fmt.Printf("ratio %-18s %.2f\n", k, rep.Ratios[k])
	}
	for _, k := range sortedKeys(rep.CPUPerJobUS) {
		fmt.Printf("cpu µs/job %-13s %.1f (median)\n", k, rep.CPUPerJobUS[k])
	}
	return nil
}

func median(rs []Result, mode string) float64 {
	return medianOf(rs, mode, func(r Result) float64 { return r.JobsPerSec })
}

func medianOf(rs []Result, mode string, f func(Result) float64) float64 {
	var v []float64
	for _, r := range rs {
		if r.Mode == mode {
			v = append(v, f(r))
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func sortedKeys(m map[string]float64) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// consumer is a mode's receive side: start it, and it calls done(publishNanos) per finished job.
type consumer func(ctx context.Context, done func(sentNS int64)) error

// deleteQueue removes a mode's subscriptions and topics when it is done: the emulator keeps every
// message of a live subscription, and its background work on earlier modes' would tax later ones.
func deleteQueue(client *pubsub.Client, project string, q queue.Queue) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, sub := range []string{q.Subscription, q.DeadLetterSubscription} {
		_ = client.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: admin.SubscriptionName(project, sub)})
	}
	for _, t := range []string{q.Topic, q.DeadLetterTopic} {
		_ = client.TopicAdminClient.DeleteTopic(ctx, &pubsubpb.DeleteTopicRequest{Topic: admin.TopicName(project, t)})
	}
}

// runStart distinguishes this run's topics and job keys (main modes and flood) from earlier runs'.
var runStart = time.Now().Unix()

func runMode(ctx context.Context, o options, project, mode string, round int) (Result, error) {
	// The run's start time keeps job keys distinct across runs against one database: a repeated key would
	// be a duplicate delivery, acked without running, and would flatter the next run.
	id := fmt.Sprintf("bench-%s-%d-%x", mode, round, runStart)
	traced := mode == "pubq-traced" || mode == "pubq-traced-lite"
	client, err := pubsub.NewClientWithConfig(ctx, project, &pubsub.ClientConfig{EnableOpenTelemetryTracing: traced})
	if err != nil {
		return Result{}, err
	}
	defer client.Close()
	recv := client // publishes with tracing in the traced modes; receives with it in pubq-traced only
	if mode == "pubq-traced-lite" {
		if recv, err = pubsub.NewClient(ctx, project); err != nil {
			return Result{}, err
		}
		defer recv.Close()
	}
	cfgYAML := "version: 1\nqueues:\n"
	for i := range o.subs {
		cfgYAML += fmt.Sprintf(`  bench%[4]d:
    topic: %[1]s-%[4]d
    subscription: %[1]s-%[4]d-sub
    dead_letter_topic: %[1]s-%[4]d-dead
    dead_letter_subscription: %[1]s-%[4]d-dead-sub
    ack_deadline: 60s
    concurrency: %[2]d
    streams: %[3]d
    kinds: [bench.noop%[4]d]
`, id, o.outstanding/o.subs, o.streams/o.subs, i)
	}
	qcfg, err := queue.Parse([]byte(cfgYAML))
	if err != nil {
		return Result{}, err
	}
	if _, err := admin.Bootstrap(ctx, client, project, qcfg); err != nil {
		return Result{}, err
	}
	for _, q := range qcfg.Queues {
		defer deleteQueue(client, project, q)
	}
	var consume consumer
	var cleanup func()
	switch mode {
	case "raw":
		consume = rawConsumer(client, qcfg.Queues)
	case "raw-claim":
		consume, cleanup, err = rawClaimConsumer(ctx, client, qcfg.Queues, o)
		if err != nil {
			return Result{}, err
		}
		defer cleanup()
	case "pubq", "pubq-traced", "pubq-traced-lite":
		consume, cleanup, err = pubqConsumer(ctx, recv, qcfg, traced, o)
		if err != nil {
			return Result{}, err
		}
		defer cleanup()
	default:
		return Result{}, fmt.Errorf("unknown mode %q", mode)
	}
	res := Result{Mode: mode, Round: round, Messages: o.messages}

	// Throughput: pre-publish the backlog, then drain it.
	var slots chan struct{}
	if o.window == 0 {
		if err := publishAll(ctx, client, qcfg.Queues, id+"-t", o.messages, 0); err != nil {
			return res, err
		}
		settle(ctx)
	} else {
		slots = make(chan struct{}, o.window)
	}
	srv := findServers()
	stopProfile := func() {}
	if o.drainProfile != "" && round > 0 {
		// Only the measured drain: the warm-up and the in-process publishing are not the worker's.
		f, err := os.Create(fmt.Sprintf("%s-%s-%d.prof", o.drainProfile, mode, round))
		if err != nil {
			return res, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return res, err
		}
		stopProfile = func() { pprof.StopCPUProfile(); _ = f.Close(); stopProfile = func() {} }
		defer func() { stopProfile() }()
	}
	cpu0, emu0, pg0 := cpuTime(), treeCPU(srv.emulator), treeCPU(srv.postgres)
	var n atomic.Int64
	var first, last atomic.Int64
	all := make(chan struct{})
	total := int64(o.messages)
	cctx, stop := context.WithCancel(ctx)
	var phase atomic.Int32 // 0 throughput, 1 latency
	var latMu sync.Mutex
	var lats []time.Duration
	var latN atomic.Int64
	latTotal := int64(o.rate) * int64(o.latencyFor/time.Second)
	latDone := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- consume(cctx, func(sent int64) {
			now := time.Now().UnixNano()
			if phase.Load() == 0 {
				if slots != nil {
					// Non-blocking: a redelivered message is done twice, and the publisher may be
					// finished; a slot too many only widens the window by one.
					select {
					case <-slots:
					default:
					}
				}
				first.CompareAndSwap(0, now)
				if n.Add(1) == total {
					last.Store(now)
					close(all)
				}
				return
			}
			if sent > 0 {
				latMu.Lock()
				lats = append(lats, time.Duration(now-sent))
				latMu.Unlock()
				if latN.Add(1) == latTotal {
					close(latDone)
				}
			}
		})
	}()
	var pubErr chan error // nil (never ready) unless publishing while consuming
	if slots != nil {
		pubErr = make(chan error, 1)
		// cctx: stopping the phase early also unblocks a publisher waiting for a slot.
		go func(out chan<- error) { out <- publishWindowed(cctx, client, qcfg.Queues, id+"-t", o.messages, slots) }(pubErr)
	}
	// The first receipt is marked by the first done, which slightly favours nobody: both modes are
	// measured the same way.
	timeout := time.After(10 * time.Minute)
wait:
	for {
		select {
		case <-all:
			break wait
		case err := <-errc:
			stop()
			return res, fmt.Errorf("consumer stopped: %v", err)
		case err := <-pubErr:
			if err != nil {
				stop()
				return res, fmt.Errorf("publishing while consuming: %w", err)
			}
			pubErr = nil // done; wait for the consumer
		case <-timeout:
			stop()
			return res, fmt.Errorf("throughput phase timed out with %d of %d done", n.Load(), total)
		}
	}
	stopProfile()
	res.Seconds = float64(last.Load()-first.Load()) / 1e9
	res.JobsPerSec = float64(o.messages) / res.Seconds
	perJob := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(o.messages) }
	res.CPUPerJobUS = perJob(cpuTime() - cpu0)
	if srv.emulator > 0 {
		res.EmulatorUSPerJob = perJob(treeCPU(srv.emulator) - emu0)
	}
	if srv.postgres > 0 {
		res.PostgresUSPerJob = perJob(treeCPU(srv.postgres) - pg0)
	}

	// Latency: steady publishing while consuming.
	phase.Store(1)
	if latTotal > 0 {
		if err := publishAll(ctx, client, qcfg.Queues, id+"-l", int(latTotal), o.rate); err != nil {
			stop()
			return res, err
		}
		select {
		case <-latDone:
		case <-time.After(2 * time.Minute):
		}
	}
	stop()
	<-errc
	latMu.Lock()
	defer latMu.Unlock()
	res.LatencyJobs, res.P50ms, res.P99ms = pct(lats)
	return res, nil
}

// publishWindowed publishes n jobs round-robin over the queues' topics, each after taking a slot
// that the consumer gives back when the job is done: at most cap(slots) jobs are ahead of it.
func publishWindowed(ctx context.Context, client *pubsub.Client, qs []queue.Queue, prefix string, n int, slots chan struct{}) error {
	pubs := make([]*pubsub.Publisher, len(qs))
	for i, q := range qs {
		pubs[i] = client.Publisher(q.Topic)
		pubs[i].PublishSettings.CountThreshold = 500
		pubs[i].PublishSettings.DelayThreshold = time.Millisecond
		defer pubs[i].Stop()
	}
	results := make([]*pubsub.PublishResult, 0, n)
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		q := i % len(qs)
		results = append(results, pubs[q].Publish(ctx, benchMessage(qs[q].Kinds[0], fmt.Sprintf("%s-%d", prefix, i))))
	}
	return awaitPublished(ctx, results)
}

// publishAll publishes n jobs spread evenly over the queues' topics, concurrently.
func publishAll(ctx context.Context, client *pubsub.Client, qs []queue.Queue, prefix string, n, rate int) error {
	var g errgroup.Group
	for i, q := range qs {
		share := n / len(qs)
		if i < n%len(qs) {
			share++
		}
		g.Go(func() error {
			return publishN(ctx, client, q.Topic, q.Kinds[0], fmt.Sprintf("%s-%d", prefix, i), share, max(rate/len(qs), min(rate, 1)))
		})
	}
	return g.Wait()
}

// publishN publishes n jobs (distinct keys) whose data carries the publish time; rate 0 = as fast as possible.
func publishN(ctx context.Context, client *pubsub.Client, topic, kind, prefix string, n, rate int) error {
	p := client.Publisher(topic)
	defer p.Stop()
	p.PublishSettings.CountThreshold = 500
	p.PublishSettings.DelayThreshold = 5 * time.Millisecond
	results := make([]*pubsub.PublishResult, 0, n)
	start := time.Now()
	for i := range n {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
		}
		results = append(results, p.Publish(ctx, benchMessage(kind, fmt.Sprintf("%s-%d", prefix, i))))
	}
	return awaitPublished(ctx, results)
}

// benchMessage is one job of kind under key whose data carries its publish time.
func benchMessage(kind, key string) *pubsub.Message {
	return &pubsub.Message{Data: fmt.Appendf(nil, `{"sent":%d}`, time.Now().UnixNano()),
		Attributes: map[string]string{job.AttrKind: kind, job.AttrKey: key}}
}

// awaitPublished waits for every publish and returns the first failure.
func awaitPublished(ctx context.Context, results []*pubsub.PublishResult) error {
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			return err
		}
	}
	return nil
}

// sentOf reads the publish time the bench wrote into a payload ({"sent":N}). Every mode calls it once
// per message; a reflective json.Unmarshal made it ~5 µs of each mode's CPU per job, so the exact
// shape the bench writes is read by hand and anything else falls back to encoding/json.
func sentOf(data []byte) int64 {
	if rest, ok := bytes.CutPrefix(data, []byte(`{"sent":`)); ok {
		if digits, ok := bytes.CutSuffix(rest, []byte("}")); ok {
			if n, err := strconv.ParseInt(string(digits), 10, 64); err == nil {
				return n
			}
		}
	}
	var v struct {
		Sent int64 `json:"sent"`
	}
	_ = json.Unmarshal(data, &v)
	return v.Sent
}

func rawConsumer(client *pubsub.Client, qs []queue.Queue) consumer {
	return func(ctx context.Context, done func(int64)) error {
		return receiveAll(ctx, client, qs, func(_ context.Context, _ queue.Queue, m *pubsub.Message) {
			// The raw loop still parses what it received, as any consumer would.
			sent := sentOf(m.Data)
			m.Ack()
			done(sent)
		})
	}
}

// receiveAll runs one Receive per queue, with the queues' share of the streams and flow control, as
// the worker does, until ctx ends or one fails.
func receiveAll(ctx context.Context, client *pubsub.Client, qs []queue.Queue, f func(context.Context, queue.Queue, *pubsub.Message)) error {
	var g errgroup.Group
	for _, q := range qs {
		s := client.Subscriber(q.Subscription)
		s.ReceiveSettings.NumGoroutines = q.Streams
		s.ReceiveSettings.MaxOutstandingMessages = q.Concurrency
		g.Go(func() error { return s.Receive(ctx, func(ctx context.Context, m *pubsub.Message) { f(ctx, q, m) }) })
	}
	return g.Wait()
}

// rawClaimConsumer is the reference point between the two: the raw loop plus one batched
// claim per message (the same Batcher as pubq, no completion, no decoding, no handler), then the ack.
func rawClaimConsumer(ctx context.Context, client *pubsub.Client, qs []queue.Queue, o options) (consumer, func(), error) {
	st, err := store.Open(ctx, store.Config{URL: os.Getenv("PUBQ_DATABASE_URL"), MaxConns: 32})
	if err != nil {
		return nil, nil, err
	}
	if _, err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, nil, err
	}
	b, err := store.NewBatcher(st, store.BatcherConfig{Owner: "bench-raw-claim", MaxFlushes: o.flushes, MaxDelay: o.delay})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	cleanup := func() { b.Close(); st.Close() }
	return func(ctx context.Context, done func(int64)) error {
		return receiveAll(ctx, client, qs, func(ctx context.Context, q queue.Queue, m *pubsub.Message) {
			sent := sentOf(m.Data)
			b.Enter()
			r, err := b.Claim(ctx, store.ClaimRequest{Key: m.Attributes[job.AttrKey], Queue: q.Name, Kind: m.Attributes[job.AttrKind], Payload: m.Data, EnqueuedAt: m.PublishTime})
			b.Leave()
			if err != nil {
				m.Nack()
				return
			}
			m.Ack()
			b.Done(r.Record, true) // as the worker does, so the claim records go as they would
			done(sent)
		})
	}, cleanup, nil
}

func pubqConsumer(ctx context.Context, client *pubsub.Client, qcfg *queue.Config, traced bool, o options) (consumer, func(), error) {
	var tp trace.TracerProvider = noop.NewTracerProvider()
	var sdk *sdktrace.TracerProvider
	if traced {
		// What telemetry.Setup builds for the binaries (sampler, batch span processor sizes).
		sdk = sdktrace.NewTracerProvider(telemetry.TracerProviderOptions(sdktrace.AlwaysSample(), discard{})...)
		tp = sdk
	}
	// The Pub/Sub client and otelpgx use the global provider; set it before store.Open, where otelpgx
	// takes the provider that is global then (it was the previous mode's no-op one).
	setGlobalTracing(tp)
	st, err := store.Open(ctx, store.Config{URL: os.Getenv("PUBQ_DATABASE_URL"), MaxConns: 32, Trace: traced})
	if err != nil {
		setGlobalTracing(noop.NewTracerProvider())
		if sdk != nil {
			_ = sdk.Shutdown(context.Background())
		}
		return nil, nil, err
	}
	if _, err := st.Migrate(ctx); err != nil {
		st.Close()
		setGlobalTracing(noop.NewTracerProvider())
		if sdk != nil {
			_ = sdk.Shutdown(context.Background())
		}
		return nil, nil, err
	}
	mux := worker.NewMux()
	for _, q := range qcfg.Queues {
		mux.HandleFunc(q.Kinds[0], func(context.Context, *job.Job) error { return nil })
	}
	// The worker's metrics, recorded as in the binary (whose reader serves Prometheus on a scrape; a
	// manual reader costs the hot path the same).
	metrics, err := telemetry.NewMetrics(sdkmetric.NewMeterProvider(telemetry.MeterProviderOptions(resource.Empty(), sdkmetric.NewManualReader())...))
	if err != nil {
		st.Close()
		setGlobalTracing(noop.NewTracerProvider())
		if sdk != nil {
			_ = sdk.Shutdown(context.Background())
		}
		return nil, nil, err
	}
	cleanup := func() {
		if sdk != nil {
			_ = sdk.Shutdown(context.Background())
		}
		setGlobalTracing(noop.NewTracerProvider())
		st.Close()
	}
	return func(ctx context.Context, done func(int64)) error {
		w, err := worker.New(client, st, mux, &worker.Config{Queues: qcfg, TracerProvider: tp, Metrics: metrics,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ShutdownTimeout: 5 * time.Second,
			BatchFlushes: o.flushes, BatchDelay: o.delay,
			OnDone: func(j *job.Job, acked bool) {
				if acked && j != nil {
					done(sentOf(j.Payload))
				}
			}})
		if err != nil {
			return err
		}
		defer func() {
			f, r, d := w.BatchStats()
			fmt.Fprintf(os.Stderr, "  batcher: %d round trips, %.1f requests each, %.1f ms each\n", f, float64(r)/float64(max(f, 1)), d.Seconds()*1000/float64(max(f, 1)))
		}()
		return w.Run(ctx)
	}, cleanup, nil
}

type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }
