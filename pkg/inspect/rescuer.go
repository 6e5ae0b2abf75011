package inspect

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// RescuerConfig configures a Rescuer. Zero fields take the documented defaults.
type RescuerConfig struct {
	// Every is the time between passes. Default 30s.
	Every time.Duration
	// Grace is how long past its lease a running job is left to a redelivery (Pub/Sub redelivers an
	// unacked message, and the worker's claim takes an expired lease over) before the rescuer
	// reschedules it. Default 1m.
	Grace time.Duration
	// Limit is the most jobs one pass rescues per transaction; a pass repeats until fewer come back.
	// Default 500.
	Limit int
	// ReconcileEvery is how often Run records running jobs that no pubq.claims row lists (see
	// store.ReconcileClaims; it reads the whole jobs table). Run also does it first. Default 1h.
	ReconcileEvery time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Metrics, if set, counts rescued jobs by queue (pubq_jobs_rescued_total).
	Metrics *telemetry.Metrics
	// OnRescue, if set, is called with the jobs of every non-empty pass (for tests).
	OnRescue func([]store.Rescued)
}

// Rescuer reschedules stuck jobs: running jobs whose worker died and whose message no redelivery took
// over (its ack deadline was extended past the lease, or it was acked by a buggy consumer). Rescues are
// fenced in the store, so any number of rescuers may run against one database.
type Rescuer struct {
	st      *store.Store
	cfg     RescuerConfig
	targets map[string]store.RescueTarget
}

// NewRescuer returns a rescuer over st for the queues of qc.
func NewRescuer(st *store.Store, qc *queue.Config, cfg *RescuerConfig) (*Rescuer, error) {
	if st == nil || qc == nil {
		return nil, errors.New("pubq: rescuer: store and queue config are required")
	}
	c := RescuerConfig{}
	if cfg != nil {
		c = *cfg
	}
	switch {
	case c.Every < 0:
		return nil, errors.New("pubq: rescuer: Every must not be negative")
	case c.Grace < 0:
		return nil, errors.New("pubq: rescuer: Grace must not be negative")
	case c.Limit < 0:
		return nil, errors.New("pubq: rescuer: Limit must not be negative")
	case c.ReconcileEvery < 0:
		return nil, errors.New("pubq: rescuer: ReconcileEvery must not be negative")
	}
	if c.ReconcileEvery == 0 {
		c.ReconcileEvery = time.Hour
	}
	if c.Every == 0 {
		c.Every = 30 * time.Second
	}
	if c.Grace == 0 {
		c.Grace = time.Minute
	}
	if c.Limit == 0 {
		c.Limit = 500
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &Rescuer{st: st, cfg: c, targets: RescueTargets(qc)}, nil
}

// RescueTargets maps each queue of qc to its topics and the wire attributes of a job's next delivery.
func RescueTargets(qc *queue.Config) map[string]store.RescueTarget {
	out := make(map[string]store.RescueTarget, len(qc.Queues))
	for _, q := range qc.Queues {
		out[q.Name] = store.RescueTarget{Topic: q.Topic, DeadLetterTopic: q.DeadLetterTopic, Attributes: rescueAttributes}
	}
	return out
}

// rescueAttributes is the wire envelope (job.Encode's attribute names) of a rescued job's delivery.
func rescueAttributes(key, id, kind string, attempt int, enqueuedAt time.Time) map[string]string {
	j := &job.Job{ID: id, Key: key, Kind: kind, EnqueuedAt: enqueuedAt, Attempt: attempt, Payload: []byte("{}")}
	// Encode validates the payload too; the real payload is the message data, the envelope is all we need.
	_, attrs, err := j.Encode()
	if err != nil {
		// A stored key or kind that no longer validates: still deliver, the worker dead-letters it.
		attrs = map[string]string{job.AttrKind: kind, job.AttrKey: key, job.AttrVersion: "1"}
	}
	return attrs
}

// RescueOnce sweeps the claim records of jobs no longer running, then runs passes until one rescues
// fewer than Limit jobs, and returns every job rescued.
func (r *Rescuer) RescueOnce(ctx context.Context) ([]store.Rescued, error) {
	if err := r.st.SweepClaims(ctx); err != nil {
		return nil, err
	}
	var all []store.Rescued
	for {
		got, err := r.st.Rescue(ctx, r.cfg.Grace, r.cfg.Limit, r.targets)
		if err != nil {
			return all, err
		}
		all = append(all, got...)
		if len(got) > 0 && r.cfg.OnRescue != nil {
			r.cfg.OnRescue(got)
		}
		for _, j := range got {
			r.cfg.Metrics.Rescued(ctx, j.Queue, j.Kind, 1)
			if j.Dead { // its last attempt was lost: dead-lettered as a worker's exhausted job is
				r.cfg.Metrics.DeadLettered(ctx, j.Queue, j.Kind, job.ReasonExhausted)
			}
			// The line names the job (and the lost attempt) and carries the job's trace; no payload is logged.
			lctx := telemetry.WithJob(telemetry.ContextWithTraceParent(ctx, j.TraceParent),
				telemetry.Job{Queue: j.Queue, Kind: j.Kind, Key: j.Key, ID: j.ID, Attempt: j.Attempt})
			r.cfg.Logger.WarnContext(lctx, "rescued stuck job (its worker was lost)", "dead_lettered", j.Dead)
		}
		if len(got) < r.cfg.Limit {
			return all, nil
		}
	}
}

// Reconcile records running jobs that no claim record lists, so that RescueOnce can see them.
func (r *Rescuer) Reconcile(ctx context.Context) error {
	n, err := r.st.ReconcileClaims(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		r.cfg.Logger.WarnContext(ctx, "running jobs had no claim record (claimed by a binary older than migration 0006); recorded",
			"jobs", n)
	}
	return nil
}

// Run rescues every Every until ctx is done, and reconciles claim records first and every ReconcileEvery. A
// failed pass is logged and retried at the next tick.
func (r *Rescuer) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Every)
	defer t.Stop()
	var reconciled time.Time
	for {
		if time.Since(reconciled) >= r.cfg.ReconcileEvery {
			if err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
				r.cfg.Logger.ErrorContext(ctx, "reconciling claim records failed; trying again next tick", "error", err)
			} else {
				reconciled = time.Now()
			}
		}
		if _, err := r.RescueOnce(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.ErrorContext(ctx, "rescuing stuck jobs failed; trying again next tick", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
