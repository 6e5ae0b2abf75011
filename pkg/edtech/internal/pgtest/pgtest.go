package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/schema"
	"github.com/pubq/pubq/pkg/testenv"
)

// Pool returns a pool on a fresh database (testenv.Postgres) with the edtech schema applied,
// closed when tb finishes.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), testenv.Postgres(tb))
	if err != nil {
		tb.Fatalf("pgtest: pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := schema.Apply(context.Background(), pool); err != nil {
		tb.Fatalf("pgtest: applying the edtech schema: %v", err)
	}
	return pool
}

// MergeCommit runs merge.Merge in its own transaction and commits it; a merge error is returned, a
// database error fails tb.
func MergeCommit(tb testing.TB, pool *pgxpool.Pool, survivor, duplicate int64, opts merge.Options) (*merge.Report, error) {
	tb.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	rep, err := merge.Merge(ctx, tx, survivor, duplicate, opts)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
	return rep, nil
}
