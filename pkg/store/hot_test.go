package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/testenv"
)

// hotUpdates runs fn in a transaction and returns the updates of pubq.jobs it made and how many of
// them were HOT, from the session's own statistics.
func hotUpdates(t *testing.T, s *Store, fn func(tx pgx.Tx)) (updates, hot int64) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// The view also counts the session's earlier transactions not yet flushed to the cumulative
	// statistics (PostgreSQL 15), so take the difference.
	read := func() (u, h int64) {
		if err := tx.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
			WHERE relid = 'pubq.jobs'::regclass`).Scan(&u, &h); err != nil {
			t.Fatal(err)
		}
		return u, h
	}
	u0, h0 := read()
	fn(tx)
	u1, h1 := read()
	updates, hot = u1-u0, h1-h0
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return updates, hot
}

// A completion must be a HOT update: no index may name a column it changes (migration 0006). An index
// on state or finished_at, or a table too full for the new row version, fails this test; either
// doubles Postgres's work per job on the hot path.
func TestCompletionsAreHOT(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 400 // several pages' worth, claimed in one batch as the worker does
	reqs := make([]ClaimRequest, n)
	for i := range reqs {
		reqs[i] = ClaimRequest{Key: fmt.Sprintf("hot-%04d", i), Queue: "default", Kind: "k", Payload: []byte(`{"pad":"0123456789abcdef0123456789abcdef"}`),
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	}
	leases := make([]Lease, n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	// The claim returns each key's fence (columns: key, attempt, fence, record), in no set order.
	rows, err := s.pool.Query(ctx, claimSQL, claimArgs(reqs, idx, "w", time.Minute)...)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for rows.Next() {
		var key string
		var attempt int
		var fence, record int64
		if err := rows.Scan(&key, &attempt, &fence, &record); err != nil {
			t.Fatal(err)
		}
		var i int
		if _, err := fmt.Sscanf(key, "hot-%04d", &i); err != nil {
			t.Fatal(err)
		}
		leases[i] = Lease{Key: key, Fence: fence}
		got++
	}
	if rows.Err() != nil || got != n {
		t.Fatalf("claimed %d of %d: %v", got, n, rows.Err())
	}
	// The worker's batched completion of all but the last job...
	upd, hot := hotUpdates(t, s, func(tx pgx.Tx) {
		keys, fences := leaseLiterals(leases[:n-1], idx[:n-1])
		tag, err := tx.Exec(ctx, completeSQL, keys, fences)
		if err != nil || tag.RowsAffected() != n-1 {
			t.Fatalf("complete: %v %v", tag, err)
		}
	})
	if upd != n-1 || hot != n-1 {
		t.Fatalf("batched completion: %d updates, %d HOT; want all %d HOT", upd, hot, n-1)
	}
	// ...and a transactional handler's.
	upd, hot = hotUpdates(t, s, func(tx pgx.Tx) {
		if err := CompleteTx(ctx, tx, leases[n-1]); err != nil {
			t.Fatal(err)
		}
	})
	if upd != 1 || hot != 1 {
		t.Fatalf("CompleteTx: %d updates, %d HOT", upd, hot)
	}
	// The claim round trip wrote one record of all n keys.
	var recs, keys int
	if err := s.pool.QueryRow(ctx, `SELECT count(*), sum(cardinality(keys)) FROM pubq.claims`).Scan(&recs, &keys); err != nil || recs != 1 || keys != n {
		t.Fatalf("claim records: %d rows, %d keys (%v); want 1 row of %d", recs, keys, err, n)
	}
}
