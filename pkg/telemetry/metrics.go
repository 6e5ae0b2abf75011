package telemetry

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of pubq's tracers and meters.
const ScopeName = "github.com/pubq/pubq/pkg/telemetry"

// Metric attribute (Prometheus label) keys.
const (
	MetricKeyQueue   = "queue"
	MetricKeyKind    = "kind"
	MetricKeyReason  = "reason"
	MetricKeyOutcome = "outcome"
)

// durationBuckets (seconds) span a fast handler (5 ms) to a job that waited an hour in a backlog.
var durationBuckets = []float64{
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
}

// Metrics records pubq's job metrics. Create one per process with NewMetrics and share it; a nil
// *Metrics is valid and records nothing, so code paths can take it as an optional dependency.
type Metrics struct {
	enqueued, started, succeeded, failed, retried metric.Int64Counter
	snoozed, abandoned                            metric.Int64Counter
	deadLettered, duplicates, rescued             metric.Int64Counter
	leaseRenewed, leaseLost                       metric.Int64Counter
	inFlight                                      metric.Int64ObservableUpDownCounter
	queueWait, duration                           metric.Float64Histogram
	backlog                                       metric.Int64ObservableGauge
	oldestAge                                     metric.Float64ObservableGauge

	meter metric.Meter
	// labelKey → metric.MeasurementOption of its attribute set, built once: the hot path neither
	// rebuilds the set nor boxes a new option.
	sets sync.Map
	// queue → *atomic.Int64 of attempts running now, observed on collection: two SDK updates per
	// attempt saved.
	running sync.Map

	mu     sync.Mutex
	outbox metric.Registration
}

// labelKey identifies a cached attribute set; extraKey is "" (queue+kind), MetricKeyQueue (queue
// only), or the key of a third label whose value is extra.
type labelKey struct{ queue, kind, extraKey, extra string }

// NewMetrics creates the instruments on mp (the global MeterProvider when mp is nil). See the package
// documentation for the names they get in Prometheus.
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := &Metrics{meter: mp.Meter(ScopeName)}
	var err error
	counter := func(dst *metric.Int64Counter, name, desc, unit string) {
		if err == nil {
			*dst, err = m.meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		}
	}
	counter(&m.enqueued, "pubq.jobs.enqueued", "Jobs accepted for publishing.", "{job}")
	counter(&m.started, "pubq.jobs.started", "Job attempts started by a worker.", "{job}")
	counter(&m.succeeded, "pubq.jobs.succeeded", "Job attempts that succeeded.", "{job}")
	counter(&m.failed, "pubq.jobs.failed", "Job attempts whose handler failed (a retry, a dead letter or the job's cancellation is recorded next).", "{job}")
	counter(&m.snoozed, "pubq.jobs.snoozed", "Job attempts that asked to run again later without using an attempt.", "{job}")
	counter(&m.abandoned, "pubq.jobs.abandoned", "Job attempts ended without an outcome of their own: taken over, stopped at shutdown, or their completion could not be recorded (the redelivery decides).", "{job}")
	counter(&m.retried, "pubq.jobs.retried", "Retries scheduled after a failed attempt.", "{job}")
	counter(&m.deadLettered, "pubq.jobs.dead_lettered", "Jobs dead-lettered, by reason.", "{job}")
	counter(&m.duplicates, "pubq.jobs.duplicate_skipped", "Jobs not run or not created again because their key was already done or running (worker), or already enqueued (producer).", "{job}")
	counter(&m.rescued, "pubq.jobs.rescued", "Jobs whose lease had expired that the rescuer took over (a redelivery taking one over shows as a lost lease on its old holder).", "{job}")
	counter(&m.leaseRenewed, "pubq.leases.renewed", "Job lease renewals.", "{lease}")
	counter(&m.leaseLost, "pubq.leases.lost", "Job leases lost to another worker or to expiry.", "{lease}")
	if err == nil {
		m.inFlight, err = m.meter.Int64ObservableUpDownCounter("pubq.jobs.in_flight",
			metric.WithDescription("Job attempts running now."), metric.WithUnit("{job}"),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				m.running.Range(func(q, n any) bool {
					o.Observe(n.(*atomic.Int64).Load(), m.queueOnly(q.(string)).(metric.ObserveOption))
					return true
				})
				return nil
			}))
	}
	if err == nil {
		m.queueWait, err = m.meter.Float64Histogram("pubq.job.queue_wait",
			metric.WithDescription("Time from enqueue (publish) to the start of an attempt."),
			metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...))
	}
	if err == nil {
		m.duration, err = m.meter.Float64Histogram("pubq.job.duration",
			metric.WithDescription("Handler time of one attempt, by outcome (succeeded, failed)."),
			metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...))
	}
	if err == nil {
		m.backlog, err = m.meter.Int64ObservableGauge("pubq.outbox.backlog",
			metric.WithDescription("Outbox rows not yet published."), metric.WithUnit("{message}"))
	}
	if err == nil {
		m.oldestAge, err = m.meter.Float64ObservableGauge("pubq.outbox.oldest_age",
			metric.WithDescription("Age of the oldest unpublished outbox row (0 when empty)."), metric.WithUnit("s"))
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: creating metrics: %w", err)
	}
	return m, nil
}

func (m *Metrics) attrs(k labelKey) metric.MeasurementOption {
	if o, ok := m.sets.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	kvs := []attribute.KeyValue{attribute.String(MetricKeyQueue, k.queue)}
	if k.extraKey != MetricKeyQueue {
		kvs = append(kvs, attribute.String(MetricKeyKind, k.kind))
		if k.extraKey != "" {
			kvs = append(kvs, attribute.String(k.extraKey, k.extra))
		}
	}
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	m.sets.Store(k, o)
	return o
}

func (m *Metrics) queueKind(queue, kind string) metric.MeasurementOption {
	return m.attrs(labelKey{queue: queue, kind: kind})
}

func (m *Metrics) queueOnly(queue string) metric.MeasurementOption {
	return m.attrs(labelKey{queue: queue, extraKey: MetricKeyQueue})
}

func (m *Metrics) with(queue, kind, key, value string) metric.MeasurementOption {
	return m.attrs(labelKey{queue, kind, key, value})
}

// Enqueued counts n jobs accepted for publishing (pubq_jobs_enqueued_total).
func (m *Metrics) Enqueued(ctx context.Context, queue, kind string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.enqueued.Add(ctx, int64(n), m.queueKind(queue, kind))
}

// Started counts an attempt that a worker began (pubq_jobs_started_total).
func (m *Metrics) Started(ctx context.Context, queue, kind string) {
	if m == nil {
		return
	}
	m.started.Add(ctx, 1, m.queueKind(queue, kind))
}

// Succeeded counts a successful attempt and records its handler time d
// (pubq_jobs_succeeded_total, pubq_job_duration_seconds{outcome="succeeded"}).
func (m *Metrics) Succeeded(ctx context.Context, queue, kind string, d time.Duration) {
	if m != nil {
		m.ended(ctx, m.succeeded, queue, kind, "succeeded", d)
	}
}

// Failed counts an attempt whose handler failed and records its handler time d
// (pubq_jobs_failed_total, pubq_job_duration_seconds{outcome="failed"}).
func (m *Metrics) Failed(ctx context.Context, queue, kind string, d time.Duration) {
	if m != nil {
		m.ended(ctx, m.failed, queue, kind, "failed", d)
	}
}

// Snoozed counts an attempt that asked to run later without using an attempt, and records its handler
// time d (pubq_jobs_snoozed_total, pubq_job_duration_seconds{outcome="snoozed"}).
func (m *Metrics) Snoozed(ctx context.Context, queue, kind string, d time.Duration) {
	if m != nil {
		m.ended(ctx, m.snoozed, queue, kind, "snoozed", d)
	}
}

// Abandoned counts an attempt that ended without an outcome of its own (its job taken over, stopped
// at shutdown, or its completion not recorded), and records its time d (pubq_jobs_abandoned_total,
// pubq_job_duration_seconds{outcome="abandoned"}). Every started attempt ends in exactly one of
// Succeeded, Failed, Snoozed and Abandoned.
func (m *Metrics) Abandoned(ctx context.Context, queue, kind string, d time.Duration) {
	if m != nil {
		m.ended(ctx, m.abandoned, queue, kind, "abandoned", d)
	}
}

// ended counts an attempt's end in counter and records its time d under outcome.
func (m *Metrics) ended(ctx context.Context, counter metric.Int64Counter, queue, kind, outcome string, d time.Duration) {
	counter.Add(ctx, 1, m.queueKind(queue, kind))
	m.duration.Record(ctx, d.Seconds(), m.with(queue, kind, MetricKeyOutcome, outcome))
}

// Retried counts a retry scheduled after a failed attempt (pubq_jobs_retried_total).
func (m *Metrics) Retried(ctx context.Context, queue, kind string) {
	if m == nil {
		return
	}
	m.retried.Add(ctx, 1, m.queueKind(queue, kind))
}

// DeadLettered counts a job given up on; reason is a short fixed word (job.ReasonExhausted,
// ReasonPermanent, ReasonUndecodable, ReasonUnknownKind) — never an error message, which would explode the label's cardinality
// (pubq_jobs_dead_lettered_total).
func (m *Metrics) DeadLettered(ctx context.Context, queue, kind, reason string) {
	if m == nil {
		return
	}
	m.deadLettered.Add(ctx, 1, m.with(queue, kind, MetricKeyReason, reason))
}

// DuplicateSkipped counts a delivery skipped because its key was already done or running, or an
// enqueue answered with the existing job of its key (pubq_jobs_duplicate_skipped_total).
func (m *Metrics) DuplicateSkipped(ctx context.Context, queue, kind string) {
	if m == nil {
		return
	}
	m.duplicates.Add(ctx, 1, m.queueKind(queue, kind))
}

// QueueWait records the time from the publish of an attempt's message to its start
// (pubq_job_queue_wait_seconds).
func (m *Metrics) QueueWait(ctx context.Context, queue, kind string, d time.Duration) {
	if m == nil {
		return
	}
	if d < 0 { // clock skew between producer and worker
		d = 0
	}
	m.queueWait.Record(ctx, d.Seconds(), m.queueKind(queue, kind))
}

// InFlight adds delta (+1 at start, -1 at the end) to the attempts running now, labelled by queue
// only (pubq_jobs_in_flight).
func (m *Metrics) InFlight(ctx context.Context, queue string, delta int64) {
	if m == nil {
		return
	}
	n, ok := m.running.Load(queue)
	if !ok {
		n, _ = m.running.LoadOrStore(queue, new(atomic.Int64))
	}
	n.(*atomic.Int64).Add(delta)
}

// LeaseRenewed counts a lease renewal (pubq_leases_renewed_total).
func (m *Metrics) LeaseRenewed(ctx context.Context, queue string) {
	if m == nil {
		return
	}
	m.leaseRenewed.Add(ctx, 1, m.queueOnly(queue))
}

// LeaseLost counts a lease lost while its attempt ran (pubq_leases_lost_total). The worker counts an
// attempt once, however many ways it finds out.
func (m *Metrics) LeaseLost(ctx context.Context, queue string) {
	if m == nil {
		return
	}
	m.leaseLost.Add(ctx, 1, m.queueOnly(queue))
}

// Rescued counts n jobs of queue and kind the rescuer took over after their lease expired
// (pubq_jobs_rescued_total).
func (m *Metrics) Rescued(ctx context.Context, queue, kind string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.rescued.Add(ctx, int64(n), m.queueKind(queue, kind))
}

// OutboxObserveTimeout bounds ObserveOutbox's fn on each collection.
const OutboxObserveTimeout = 2 * time.Second

// ObserveOutbox registers fn as the source of the pubq_outbox_backlog and
// pubq_outbox_oldest_age_seconds gauges; fn runs on every collection (each /metrics scrape), so it
// should be one cheap query. It gets OutboxObserveTimeout: the exporter gives it no deadline of the
// scrape's and holds its collection lock meanwhile, so a stalled database would otherwise hang every
// later scrape. When fn fails nothing is observed for that scrape and the error goes to the
// OpenTelemetry error handler (logged by Setup's logger). A second call replaces the first.
func (m *Metrics) ObserveOutbox(fn func(ctx context.Context) (backlog int64, oldest time.Duration, err error)) error {
	if m == nil {
		return nil
	}
	if fn == nil {
		return fmt.Errorf("telemetry: ObserveOutbox: fn is nil")
	}
	reg, err := m.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, OutboxObserveTimeout)
		defer cancel()
		backlog, oldest, err := fn(ctx)
		if err != nil {
			return fmt.Errorf("telemetry: observing outbox: %w", err)
		}
		o.ObserveInt64(m.backlog, backlog)
		o.ObserveFloat64(m.oldestAge, oldest.Seconds())
		return nil
	}, m.backlog, m.oldestAge)
	if err != nil {
		return fmt.Errorf("telemetry: registering outbox gauges: %w", err)
	}
	m.mu.Lock()
	prev := m.outbox
	m.outbox = reg
	m.mu.Unlock()
	if prev != nil {
		if err := prev.Unregister(); err != nil {
			return fmt.Errorf("telemetry: replacing outbox callback: %w", err)
		}
	}
	return nil
}

// commitCounts holds metric updates until a transaction's outcome is known.
type commitCounts struct {
	mu      sync.Mutex
	pending []func()
}

type commitCountsKey struct{}

// CountOnCommit returns a context under which CountAfterCommit holds its updates until settle is
// called with whether the transaction committed: the counts of a rolled-back transaction (a worker's
// failed attempt that enqueued follow-up jobs) are dropped, and a retried attempt is not counted twice.
// The worker settles its transactional handlers' contexts; callers of publish.EnqueueTx may use it too.
func CountOnCommit(ctx context.Context) (_ context.Context, settle func(committed bool)) {
	c := &commitCounts{}
	return context.WithValue(ctx, commitCountsKey{}, c), func(committed bool) {
		c.mu.Lock()
		pending := c.pending
		c.pending = nil
		c.mu.Unlock()
		if committed {
			for _, f := range pending {
				f()
			}
		}
	}
}

// CountAfterCommit runs update now, or, under a CountOnCommit context, once its transaction commits.
func CountAfterCommit(ctx context.Context, update func()) {
	c, _ := ctx.Value(commitCountsKey{}).(*commitCounts)
	if c == nil {
		update()
		return
	}
	c.mu.Lock()
	c.pending = append(c.pending, update)
	c.mu.Unlock()
}
