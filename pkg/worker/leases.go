package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// ErrLeaseLost is the cause of a handler context cancelled because another worker took the job over.
// When renewals fail (the database is unreachable) and the lease may lapse, the cause wraps it
// (errors.Is matches): the job may then still be running under this worker's lease.
var ErrLeaseLost = store.ErrLeaseLost

// errLeaseUnconfirmed is the cause when renewals failed: nothing proved another holder, so the job
// still counts as running under this lease (its claim record must stay for the rescuer).
var errLeaseUnconfirmed = fmt.Errorf("%w: renewals failed before the lease could lapse", ErrLeaseLost)

// leaseKeeper renews the leases of all running jobs of the process in one statement every Lease/3 and
// cancels the handlers of those it lost.
type leaseKeeper struct {
	st      *store.Store
	lease   time.Duration
	metrics *telemetry.Metrics
	log     *slog.Logger

	mu      sync.Mutex
	running map[store.Lease]*leaseEntry
	byKey   map[string]*leaseEntry
}

type leaseEntry struct {
	queue  string
	cancel context.CancelCauseFunc
	done   chan struct{} // made when a duplicate waits here; closed when the run ends
	// until is when the lease runs out as far as this process knows: the claim or the last renewal that
	// succeeded, plus Lease (both measured from before the statement, so it errs early).
	until time.Time
	lost  bool // counted in pubq_leases_lost_total: once per run, however many ways it found out
	// settling: the run's own fenced statement (completion, failure, release) is on its way; a renewal
	// that then finds the row no longer running under the lease may have seen that statement rather
	// than a takeover, and the statement's answer says which it was. sawLost: such a renewal came; if
	// the statement then failed (no answer), the renewal's finding stands and remove counts it.
	settling, sawLost bool
}

func newLeaseKeeper(st *store.Store, lease time.Duration, m *telemetry.Metrics, log *slog.Logger) *leaseKeeper {
	return &leaseKeeper{st: st, lease: lease, metrics: m, log: log, running: map[store.Lease]*leaseEntry{}, byKey: map[string]*leaseEntry{}}
}

// add registers a run whose lease was claimed at claimedAt (taken before the claim was sent).
func (k *leaseKeeper) add(l store.Lease, queue string, cancel context.CancelCauseFunc, claimedAt time.Time) {
	e := &leaseEntry{queue: queue, cancel: cancel, until: claimedAt.Add(k.lease)}
	k.mu.Lock()
	k.running[l] = e
	k.byKey[l.Key] = e
	k.mu.Unlock()
}

// remove ends a run and wakes the duplicates of its key waiting in this process. settled: the run's own
// fenced statement landed (its outcome recorded, or the job released) or proved a takeover.
func (k *leaseKeeper) remove(l store.Lease, settled bool) {
	k.mu.Lock()
	e := k.running[l]
	if e != nil && e.sawLost && !settled {
		k.countLostLocked(context.Background(), e)
	}
	delete(k.running, l)
	if k.byKey[l.Key] == e {
		delete(k.byKey, l.Key)
	}
	k.mu.Unlock()
	if e != nil && e.done != nil {
		close(e.done)
	}
}

// lost counts l's run (of queue) as one whose lease was lost: a fenced statement of its own (completion,
// failure) found the job taken over. A run the keeper already counted is not counted again; one not
// registered (its failure recorded before the handler ran) is counted as it is.
func (k *leaseKeeper) lost(ctx context.Context, l store.Lease, queue string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.running[l]; ok {
		k.countLostLocked(ctx, e)
		return
	}
	k.metrics.LeaseLost(ctx, queue)
}

func (k *leaseKeeper) countLostLocked(ctx context.Context, e *leaseEntry) {
	if !e.lost {
		e.lost = true
		k.metrics.LeaseLost(ctx, e.queue)
	}
}

// settling marks l's run as sending its own fenced statement: renewals leave its outcome to it.
func (k *leaseKeeper) settling(l store.Lease) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.running[l]; ok {
		e.settling = true
	}
}

// cancelAll cancels every running handler with cause (the hard stop at the end of ShutdownTimeout).
func (k *leaseKeeper) cancelAll(cause error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range k.running {
		e.cancel(cause)
	}
}

// finished returns a channel closed when this process's current run of key ends, or nil (never ready)
// when the key does not run here.
func (k *leaseKeeper) finished(key string) <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.byKey[key]
	if !ok {
		return nil
	}
	if e.done == nil {
		e.done = make(chan struct{})
	}
	return e.done
}

func (k *leaseKeeper) run(ctx context.Context) {
	t := time.NewTicker(k.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.renew(ctx)
		}
	}
}

func (k *leaseKeeper) renew(ctx context.Context) {
	k.mu.Lock()
	leases := make([]store.Lease, 0, len(k.running))
	for l := range k.running {
		leases = append(leases, l)
	}
	k.mu.Unlock()
	if len(leases) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, k.lease/3)
	defer cancel()
	start := time.Now()
	lost, err := k.st.RenewLeases(rctx, leases, k.lease)
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return // stopping
		}
		k.log.Warn("renewing leases failed", "error", err, "jobs", len(leases))
		k.expire(ctx, leases)
		return
	}
	lostSet := make(map[store.Lease]bool, len(lost))
	for _, l := range lost {
		lostSet[l] = true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, l := range leases {
		e, ok := k.running[l]
		if !ok {
			continue // finished meanwhile
		}
		if lostSet[l] {
			if e.settling {
				e.sawLost = true
				continue
			}
			k.countLostLocked(ctx, e)
			e.cancel(ErrLeaseLost)
			continue
		}
		e.until = start.Add(k.lease)
		k.metrics.LeaseRenewed(ctx, e.queue)
	}
}

// expire cancels, with errLeaseUnconfirmed, the runs among leases whose lease may run out before the next
// renewal can land: once it has, a redelivery may take the job over, and the handler must not go on
// beside it. (Fencing would still stop this run's completion; this stops its side effects.)
func (k *leaseKeeper) expire(ctx context.Context, leases []store.Lease) {
	deadline := time.Now().Add(k.lease / 3)
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, l := range leases {
		if e, ok := k.running[l]; ok && e.until.Before(deadline) {
			k.countLostLocked(ctx, e) // every failed renewal after the first finds it again
			e.cancel(errLeaseUnconfirmed)
		}
	}
}
