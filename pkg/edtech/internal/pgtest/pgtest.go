package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

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
