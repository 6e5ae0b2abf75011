package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/retry"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// Config configures a Worker. Zero fields take the documented defaults.
type Config struct {
	// Queues is the parsed queue configuration. Required.
	Queues *queue.Config
	// Only names the queues to receive; default: every queue that has at least one registered kind.
	Only []string
	// Owner identifies this process in leases. Default: hostname-pid-random.
	Owner string
	// Lease is how long a claim holds a job; renewed every Lease/3 while the handler runs. Default 30s.
	Lease time.Duration
	// ShutdownTimeout is how long in-flight jobs may run after shutdown begins. Default 30s.
	ShutdownTimeout time.Duration
	// MaxExtension caps how long the Pub/Sub client extends a message's ack deadline. Default 60m (the
	// client's); tests shorten it to force redelivery while a job still runs.
	MaxExtension time.Duration
	// BusyPoll caps how long a duplicate delivery waits before asking again about a job another
	// delivery holds. Default 5s.
	BusyPoll time.Duration
	// BatchDelay is the longest a claim or completion waits for companions. Default 1ms.
	BatchDelay time.Duration
	// BatchFlushes is how many claim/completion round trips may be in flight at once. Default 2.
	BatchFlushes int
	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
	// Metrics records job metrics. Default: none.
	Metrics *telemetry.Metrics
	// TracerProvider makes the handler spans. Default: otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Rand is the random source for retry jitter. Default: time-seeded.
	Rand rand.Source
	// NoJitter turns jitter off (randomization 0) — only to measure what jitter buys.
	NoJitter bool
	// OnDone, if set, is called after each delivery is acked or nacked, with the job (nil if the
	// message did not decode) and whether it was acked. For benchmarks and tests; keep it cheap.
	OnDone func(j *job.Job, acked bool)
}

func (c *Config) withDefaults() (*Config, error) {
	out := *c
	if out.Queues == nil {
		return nil, errors.New("pubq: worker: Config.Queues is required")
	}
	if out.Owner == "" {
		host, _ := os.Hostname()
		out.Owner = host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(rand.Uint64()%1e6, 10)
	}
	if out.Lease == 0 {
		out.Lease = 30 * time.Second
	}
	if out.Lease < time.Second {
		return nil, errors.New("pubq: worker: Config.Lease must be at least 1s")
	}
	if out.ShutdownTimeout == 0 {
		out.ShutdownTimeout = 30 * time.Second
	}
	if out.BusyPoll == 0 {
		out.BusyPoll = 5 * time.Second
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.TracerProvider == nil {
		out.TracerProvider = otel.GetTracerProvider()
	}
	if out.Rand == nil {
		out.Rand = rand.NewPCG(uint64(time.Now().UnixNano()), 0xda3e39cb94b95bdb)
	}
	// Every queue×kind policy draws from this one source, concurrently.
	if _, ok := out.Rand.(*retry.LockedSource); !ok {
		out.Rand = retry.NewLockedSource(out.Rand)
	}
	for _, name := range out.Only {
		if _, ok := out.Queues.Queue(name); !ok {
			return nil, fmt.Errorf("pubq: worker: Config.Only: no queue named %q", name)
		}
	}
	return &out, nil
}

// Worker receives queues and runs their jobs.
type Worker struct {
	client *pubsub.Client
	store  *store.Store
	mux    *Mux
	cfg    *Config
	log    *slog.Logger
	tracer trace.Tracer
	// untraced: the provider is the no-op one, so handler spans are skipped (their options and
	// context cost allocations on every job and record nothing).
	untraced bool
	leases   *leaseKeeper
	queues   []*runQueue

	stopping    chan struct{}   // closed when shutdown begins: no new job starts
	hardStopCtx context.Context // done when ShutdownTimeout is over: running jobs are cancelled
	hardStop    context.CancelFunc
	runOnce     sync.Once
}

// handlerChain is a kind's handler inside the runtime's middleware (logging, timeout, recover) and the
// Mux's own, and whether it runs in a transaction.
type handlerChain struct {
	h    Handler
	tx   bool
	span string // the job span's name, built once: "pubq job <kind>"
}

type runQueue struct {
	q        *queue.Queue
	policies map[string]*retry.Policy // per kind
	chains   map[string]handlerChain  // per kind: the handler wrapped in middleware, built once
	pool     *pgxpool.Pool            // this queue's own connections for transactional handlers
	// batcher groups this queue's claims and completions: a queue's own, so a flood's big batches on
	// one queue never hold another queue's claims back.
	batcher *store.Batcher
	limiter *rate.Limiter // queue's max_rate; nil: unlimited
}

// New returns a worker that receives through client, keeps job state in st and runs mux's handlers.
func New(client *pubsub.Client, st *store.Store, mux *Mux, cfg *Config) (*Worker, error) {
	if client == nil || st == nil || mux == nil || cfg == nil {
		return nil, errors.New("pubq: worker: client, store, mux and config are required")
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	w := &Worker{
		client: client, store: st, mux: mux, cfg: c, log: c.Logger,
		tracer:   c.TracerProvider.Tracer(telemetry.ScopeName),
		stopping: make(chan struct{}),
	}
	_, w.untraced = c.TracerProvider.(noop.TracerProvider)
	w.hardStopCtx, w.hardStop = context.WithCancel(context.Background())
	w.leases = newLeaseKeeper(st, c.Lease, c.Metrics, c.Logger)
	only := map[string]bool{}
	for _, n := range c.Only {
		only[n] = true
	}
	for i := range c.Queues.Queues {
		q := &c.Queues.Queues[i]
		if len(only) > 0 && !only[q.Name] {
			continue
		}
		rq := &runQueue{q: q, policies: map[string]*retry.Policy{}, chains: map[string]handlerChain{}}
		if q.MaxRate > 0 {
			rq.limiter = rate.NewLimiter(rate.Limit(q.MaxRate), max(1, int(q.MaxRate/10)))
		}
		if rq.batcher, err = store.NewBatcher(st, store.BatcherConfig{Owner: c.Owner, Lease: c.Lease, MaxDelay: c.BatchDelay, MaxFlushes: c.BatchFlushes}); err != nil {
			return nil, err
		}
		served, needsTx := false, false
		for _, kind := range q.Kinds {
			if h, isTx, ok := mux.lookup(kind); ok {
				served = true
				needsTx = needsTx || isTx
				rq.chains[kind] = handlerChain{h: Logging(c.Logger)(Timeout(q.TimeoutFor)(Recover(h))), tx: isTx, span: "pubq job " + kind}
			}
			b := q.BackoffFor(kind)
			r := b.Randomization
			if c.NoJitter {
				r = 0
			}
			p, err := retry.New(b.Initial, b.Multiplier, b.Max, r, b.MaxAttempts, c.Rand)
			if err != nil {
				return nil, fmt.Errorf("pubq: worker: queue %q kind %q: %w", q.Name, kind, err)
			}
			rq.policies[kind] = p
		}
		if !served && !only[q.Name] {
			continue
		}
		if needsTx {
			if rq.pool, err = st.Partition(context.Background(), int32(q.DBConns)); err != nil {
				w.closePools()
				return nil, err
			}
		}
		w.queues = append(w.queues, rq)
	}
	if len(w.queues) == 0 {
		return nil, errors.New("pubq: worker: no queue to receive: register a handler for a configured kind")
	}
	return w, nil
}

func (w *Worker) closePools() {
	for _, rq := range w.queues {
		if rq.pool != nil {
			rq.pool.Close()
		}
	}
}

// BatchStats reports the claim/completion batcher's round trips and the requests they carried.
func (w *Worker) BatchStats() (flushes, requests int64, busy time.Duration) {
	for _, rq := range w.queues {
		f, r, d := rq.batcher.Stats()
		flushes, requests, busy = flushes+f, requests+r, busy+d
	}
	return flushes, requests, busy
}

// Queues returns the names of the queues this worker receives.
func (w *Worker) Queues() []string {
	out := make([]string, len(w.queues))
	for i, rq := range w.queues {
		out[i] = rq.q.Name
	}
	return out
}

// Run receives until ctx is done, then shuts down gracefully: it stops pulling, lets running jobs finish
// for up to ShutdownTimeout, cancels those still running (their messages are nacked, never acked), and
// returns. A Worker runs once.
func (w *Worker) Run(ctx context.Context) error {
	err := errors.New("pubq: worker: Run called twice")
	w.runOnce.Do(func() { err = w.run(ctx) })
	return err
}

func (w *Worker) run(ctx context.Context) error {
	recvCtx, stopRecv := context.WithCancel(context.Background())
	defer stopRecv()
	leaseCtx, stopLeases := context.WithCancel(context.Background())
	leasesDone := make(chan struct{})
	go func() {
		defer close(leasesDone)
		w.leases.run(leaseCtx)
	}()

	g, gctx := errgroup.WithContext(recvCtx)
	for _, rq := range w.queues {
		sub := w.client.Subscriber(rq.q.Subscription)
		sub.ReceiveSettings.MaxOutstandingMessages = rq.q.Concurrency
		sub.ReceiveSettings.NumGoroutines = rq.q.Streams
		if w.cfg.MaxExtension != 0 {
			sub.ReceiveSettings.MaxExtension = w.cfg.MaxExtension
		}
		// Extend held messages by the queue's own ack deadline at a time (the client's default stream
		// deadline is 60s): if this process dies, its messages come back after ack_deadline, not a minute.
		sub.ReceiveSettings.MaxDurationPerAckExtension = rq.q.AckDeadline
		// Wait for running callbacks (they honour ShutdownTimeout through hardStop) with no timeout of the
		// client's own: a timed client shutdown cancels the pull streams first, which stops the client's
		// sender, so every ack and nack made after shutdown began was dropped (jobs finished during a
		// drain came back as duplicates; released ones waited out their ack deadline). Untimed, the
		// client sends them before Receive returns. run bounds the wait itself.
		sub.ReceiveSettings.ShutdownOptions = &pubsub.ShutdownOptions{
			Timeout: -1, Behavior: pubsub.ShutdownBehaviorWaitForProcessing,
		}
		g.Go(func() error {
			err := sub.Receive(gctx, func(mctx context.Context, m *pubsub.Message) { w.process(mctx, rq, m) })
			if err != nil {
				return fmt.Errorf("pubq: receiving queue %q: %w", rq.q.Name, err)
			}
			return nil
		})
	}
	w.log.Info("worker started", "owner", w.cfg.Owner, "queues", w.Queues())

	var runErr error
	recvDone := make(chan error, 1)
	go func() { recvDone <- g.Wait() }()
	select {
	case <-ctx.Done():
	case <-gctx.Done():
		// One queue's receive failed: the others stop too, and their running jobs get the same
		// ShutdownTimeout as on a signal (without it, one handler that waits for its context would
		// keep the process up, receiving nothing, forever).
	case runErr = <-recvDone:
		recvDone = nil
	}
	// Shutdown: no new job starts; running ones get ShutdownTimeout.
	close(w.stopping)
	stopRecv()
	w.log.Info("worker shutting down", "timeout", w.cfg.ShutdownTimeout)
	timer := time.AfterFunc(w.cfg.ShutdownTimeout, func() {
		w.hardStop()
		w.leases.cancelAll(errShutdown) // running handlers see their context done
	})
	abandoned := false
	if recvDone != nil {
		// A handler that ignores its cancelled context would hold Receive forever: past the grace,
		// stop waiting (its message is never acked).
		grace := time.NewTimer(w.cfg.ShutdownTimeout + 5*time.Second)
		select {
		case err := <-recvDone:
			if err != nil && runErr == nil {
				runErr = err
			}
		case <-grace.C:
			abandoned = true
			w.log.Warn("worker: receiving did not stop within the shutdown timeout and grace; abandoning handlers that ignore cancellation")
		}
		grace.Stop()
	}
	timer.Stop()
	w.hardStop()
	w.leases.cancelAll(errShutdown)
	for _, rq := range w.queues {
		rq.batcher.Close()
	}
	stopLeases()
	<-leasesDone
	if abandoned {
		// Closing a pool waits for its connections, and an abandoned transactional handler holds one.
		go w.closePools()
	} else {
		w.closePools()
	}
	w.log.Info("worker stopped")
	return runErr
}
