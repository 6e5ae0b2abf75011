// Package schedule fires the queue configuration's cron schedules. Every producer replica runs a
// Scheduler; each tick becomes one job whose idempotency key is the schedule's name and the tick's time,
// so however many replicas fire it, the tick exists once.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/robfig/cron/v3"

	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/telemetry"
)

// Enqueuer is what the scheduler needs from a publish.Client.
type Enqueuer interface {
	Enqueue(ctx context.Context, r publish.Request) (publish.Result, error)
}

// Config configures a Scheduler.
type Config struct {
	// CatchUp fires the most recent tick missed within this window at start (e.g. the producer was
	// being deployed at 02:00). Default 1h; negative disables.
	CatchUp time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Sleep waits until t or ctx is done. Default: a timer. Tests inject a fake.
	Sleep func(ctx context.Context, d time.Duration)
	// RetryFor is how long a tick whose enqueue fails is retried before it is given up. Default 5m;
	// the other schedules wait meanwhile.
	RetryFor time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Scheduler fires schedules.
type Scheduler struct {
	enq   Enqueuer
	cfg   Config
	items []item
}

type item struct {
	s     queue.Schedule
	sched cron.Schedule
}

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// New parses the schedules.
func New(enq Enqueuer, schedules []queue.Schedule, cfg *Config) (*Scheduler, error) {
	if enq == nil {
		return nil, errors.New("pubq: schedule: enqueuer is required")
	}
	s := &Scheduler{enq: enq}
	if cfg != nil {
		s.cfg = *cfg
	}
	if s.cfg.CatchUp == 0 {
		s.cfg.CatchUp = time.Hour
	}
	if s.cfg.Now == nil {
		s.cfg.Now = time.Now
	}
	if s.cfg.RetryFor < 0 {
		return nil, errors.New("pubq: schedule: RetryFor must not be negative")
	}
	if s.cfg.RetryFor == 0 {
		s.cfg.RetryFor = 5 * time.Minute
	}
	if s.cfg.Sleep == nil {
		s.cfg.Sleep = func(ctx context.Context, d time.Duration) {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}
	if s.cfg.Logger == nil {
		s.cfg.Logger = slog.Default()
	}
	for _, sc := range schedules {
		p, err := parser.Parse(sc.Cron)
		if err != nil {
			return nil, fmt.Errorf("pubq: schedule %q: cron %q: %w", sc.Name, sc.Cron, err)
		}
		s.items = append(s.items, item{s: sc, sched: p})
	}
	return s, nil
}

// Key is the idempotency key of a schedule's tick.
func Key(name string, tick time.Time) string {
	return "schedule:" + name + ":" + tick.UTC().Format(time.RFC3339)
}

// Fire enqueues the tick's job; a tick fired before (by any replica) is a duplicate.
func (s *Scheduler) Fire(ctx context.Context, sc queue.Schedule, tick time.Time) (publish.Result, error) {
	return s.enq.Enqueue(ctx, publish.Request{Kind: sc.Kind, Key: Key(sc.Name, tick), Payload: sc.Payload})
}

// Run fires every schedule at its ticks until ctx is done.
func (s *Scheduler) Run(ctx context.Context) error {
	if len(s.items) == 0 {
		<-ctx.Done()
		return nil
	}
	now := s.cfg.Now().UTC()
	last := make([]time.Time, len(s.items))
	for i, it := range s.items {
		if s.cfg.CatchUp > 0 {
			if prev := previous(it.sched, now, s.cfg.CatchUp); !prev.IsZero() {
				s.fire(ctx, it.s, prev)
			}
		}
		last[i] = now
	}
	for ctx.Err() == nil {
		next, idx := time.Time{}, -1
		for i, it := range s.items {
			t := it.sched.Next(last[i])
			if idx < 0 || t.Before(next) {
				next, idx = t, i
			}
		}
		if d := next.Sub(s.cfg.Now()); d > 0 {
			s.cfg.Sleep(ctx, d)
			if ctx.Err() != nil {
				break
			}
			if s.cfg.Now().Before(next) {
				continue // woke early (clock moved): recompute
			}
		}
		s.fire(ctx, s.items[idx].s, next)
		last[idx] = next
	}
	return nil
}

// fire enqueues a tick, retrying failures (a database blip at 02:00 must not cost the night's job)
// with jittered backoff for up to RetryFor. Retrying is safe: the tick's key makes it one job.
func (s *Scheduler) fire(ctx context.Context, sc queue.Schedule, tick time.Time) {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(time.Second), backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(0))
	deadline := s.cfg.Now().Add(s.cfg.RetryFor)
	// The lines name the tick's job (and carry the trace of ctx's span, if any).
	tj := telemetry.Job{Kind: sc.Kind, Key: Key(sc.Name, tick)}
	lctx := telemetry.WithJob(ctx, tj)
	for attempt := 1; ; attempt++ {
		r, err := s.Fire(ctx, sc, tick)
		if err == nil {
			tj.Queue, tj.ID = r.Queue, r.ID
			s.cfg.Logger.InfoContext(telemetry.WithJob(ctx, tj), "schedule tick", "schedule", sc.Name, "tick", tick, "duplicate", r.Duplicate)
			return
		}
		if ctx.Err() != nil {
			return
		}
		wait := b.NextBackOff()
		if !s.cfg.Now().Add(wait).Before(deadline) {
			s.cfg.Logger.ErrorContext(lctx, "schedule tick failed; giving up on it", "schedule", sc.Name, "tick", tick, "attempts", attempt, "error", err)
			return
		}
		s.cfg.Logger.WarnContext(lctx, "schedule tick failed; retrying", "schedule", sc.Name, "tick", tick, "attempt", attempt, "in", wait, "error", err)
		s.cfg.Sleep(ctx, wait)
	}
}

// previous returns the latest tick in (now-window, now], or zero.
func previous(sc cron.Schedule, now time.Time, window time.Duration) time.Time {
	var prev time.Time
	for t := sc.Next(now.Add(-window)); !t.After(now); t = sc.Next(t) {
		prev = t
	}
	return prev
}
