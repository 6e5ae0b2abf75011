package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pubq/pubq/pkg/pubqtest"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/testenv"
)

// When renewals fail (the database is unreachable), a handler must stop once its lease may have run
// out: a redelivery can take the job over from then on, and the two must not run side by side.
func TestFailedRenewalsStopHandlersAtLeaseEnd(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	st.Close() // every renewal now fails
	const lease = 3 * time.Second
	m, counter := pubqtest.Metrics(t)
	k := newLeaseKeeper(st, lease, m, slog.New(slog.NewTextHandler(io.Discard, nil)))

	oldCtx, oldCancel := context.WithCancelCause(ctx)
	defer oldCancel(nil)
	newCtx, newCancel := context.WithCancelCause(ctx)
	defer newCancel(nil)
	old, fresh := store.Lease{Key: "old", Fence: 1}, store.Lease{Key: "fresh", Fence: 1}
	k.add(old, "q", oldCancel, time.Now().Add(-lease+time.Second/2)) // runs out within the next renewal period
	k.add(fresh, "q", newCancel, time.Now())

	k.renew(ctx)
	if got := context.Cause(oldCtx); !errors.Is(got, ErrLeaseLost) {
		t.Errorf("a run whose lease is about to lapse unrenewed: cause %v, want ErrLeaseLost", got)
	}
	if got := context.Cause(newCtx); got != nil {
		t.Errorf("a run with most of its lease left was cancelled: %v", got)
	}
	// Every later failed renewal finds the same run again (it ends only when its handler returns).
	k.renew(ctx)
	k.renew(ctx)
	if lost := counter("pubq.leases.lost"); lost != 1 {
		t.Errorf("pubq.leases.lost = %d after three failed renewals of one run, want 1", lost)
	}
}

// Only a fenced answer hands a job over (its claim record may then go); failed renewals do not.
func TestLeaseTaken(t *testing.T) {
	for _, c := range []struct {
		cause, herr error
		want        bool
	}{
		{ErrLeaseLost, nil, true},                           // a renewal found the fence moved on
		{nil, fmt.Errorf("commit: %w", ErrLeaseLost), true}, // a transactional completion was fenced off
		{errLeaseUnconfirmed, nil, false},                   // renewals failed: maybe still ours
		{errLeaseUnconfirmed, errLeaseUnconfirmed, false},   // the handler returned its context's cause
		{errShutdown, nil, false},
		{nil, errors.New("boom"), false},
	} {
		if got := leaseTaken(c.cause, c.herr); got != c.want {
			t.Errorf("leaseTaken(%v, %v) = %v, want %v", c.cause, c.herr, got, c.want)
		}
	}
}

// A renewal that finds the row no longer running under the lease is a takeover only if the run was
// not settling it itself: a renewal racing the run's own completion must not count a lost lease, nor
// cancel anything; a renewal finding the fence moved on under a run still working does both.
func TestRenewalRacingOwnCompletionIsNoLostLease(t *testing.T) {
	ctx := context.Background()
	st := pubqtest.Store(t)
	b, err := store.NewBatcher(st, store.BatcherConfig{Owner: "w", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	claim := func(key string) store.Lease {
		b.Enter()
		defer b.Leave()
		r, err := b.Claim(ctx, store.ClaimRequest{Key: key, Queue: "q", Kind: "demo.record", MaxAttempts: 3, Payload: []byte(`{}`)})
		if err != nil || r.Status != store.Claimed {
			t.Fatalf("claiming %s: %+v, %v", key, r, err)
		}
		return store.Lease{Key: key, Fence: r.Fence}
	}
	m, counter := pubqtest.Metrics(t)
	k := newLeaseKeeper(st, time.Minute, m, slog.New(slog.NewTextHandler(io.Discard, nil)))

	own, taken, failed := claim("settled-here"), claim("taken-over"), claim("statement-failed")
	ownCtx, ownCancel := context.WithCancelCause(ctx)
	defer ownCancel(nil)
	takenCtx, takenCancel := context.WithCancelCause(ctx)
	defer takenCancel(nil)
	k.add(own, "q", ownCancel, time.Now())
	k.add(taken, "q", takenCancel, time.Now())
	k.add(failed, "q", func(error) {}, time.Now())

	// The run's own completion lands before the renewal's statement reads the row.
	k.settling(own)
	if ok, err := st.Complete(ctx, []store.Lease{own}); err != nil || !ok[0] {
		t.Fatalf("completing: %v %v", ok, err)
	}
	// Another worker's claim moved the fence on under a working run, and under one whose own statement
	// is on its way (and will fail without an answer).
	k.settling(failed)
	if _, err := st.Pool().Exec(ctx, `UPDATE pubq.jobs SET fence = fence + 1 WHERE key = ANY($1)`, []string{taken.Key, failed.Key}); err != nil {
		t.Fatal(err)
	}
	k.renew(ctx)
	if got := context.Cause(ownCtx); got != nil {
		t.Errorf("the settling run was cancelled: %v", got)
	}
	if got := context.Cause(takenCtx); !errors.Is(got, ErrLeaseLost) {
		t.Errorf("the taken-over run: cause %v, want ErrLeaseLost", got)
	}
	if lost := counter("pubq.leases.lost"); lost != 1 {
		t.Errorf("pubq.leases.lost = %d, want 1 (the takeover only)", lost)
	}
	// The settled run ends with its statement landed; the other's failed, so the renewal's finding stands.
	k.remove(own, true)
	k.remove(failed, false)
	k.remove(taken, false)
	if lost := counter("pubq.leases.lost"); lost != 2 {
		t.Errorf("pubq.leases.lost = %d after the runs ended, want 2 (the takeover seen while a statement failed counts)", lost)
	}
}
