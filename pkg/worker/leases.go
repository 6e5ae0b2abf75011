package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// ErrLeaseLost is the cause of a handler context cancelled because another worker took the job over.
var ErrLeaseLost = store.ErrLeaseLost

// leaseKeeper renews the leases of all running jobs of the process in one statement every Lease/3 and
// cancels the handlers of those it lost.
type leaseKeeper struct {
	st      *store.Store
	lease   time.Duration
	metrics *telemetry.Metrics
	log     *slog.Logger

	mu      sync.Mutex
	running map[store.Lease]leaseEntry
}

type leaseEntry struct {
	queue  string
	cancel context.CancelCauseFunc
}

func newLeaseKeeper(st *store.Store, lease time.Duration, m *telemetry.Metrics, log *slog.Logger) *leaseKeeper {
	return &leaseKeeper{st: st, lease: lease, metrics: m, log: log, running: map[store.Lease]leaseEntry{}}
}

func (k *leaseKeeper) add(l store.Lease, queue string, cancel context.CancelCauseFunc) {
	k.mu.Lock()
	k.running[l] = leaseEntry{queue: queue, cancel: cancel}
	k.mu.Unlock()
}

func (k *leaseKeeper) remove(l store.Lease) {
	k.mu.Lock()
	delete(k.running, l)
	k.mu.Unlock()
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
	lost, err := k.st.RenewLeases(rctx, leases, k.lease)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			// The leases may still expire; a takeover's fence then stops this worker's commit.
			k.log.Warn("renewing leases failed", "error", err, "jobs", len(leases))
		}
		return
	}
	lostSet := map[string]bool{}
	for _, key := range lost {
		lostSet[key] = true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, l := range leases {
		e, ok := k.running[l]
		if !ok {
			continue // finished meanwhile
		}
		if lostSet[l.Key] {
			k.metrics.LeaseLost(ctx, e.queue)
			e.cancel(ErrLeaseLost)
			continue
		}
		k.metrics.LeaseRenewed(ctx, e.queue)
	}
}
