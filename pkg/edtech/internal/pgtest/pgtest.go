package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/schema"
)

var counter atomic.Int64

func adminDSN() string {
	if v := os.Getenv("PUBQ_TEST_DATABASE_URL"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres"
}

// Postgres returns the DSN of a fresh empty database, dropped when tb finishes.
func Postgres(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminDSN())
	if err != nil {
		tb.Fatalf("pgtest: connecting: %v", err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("edtech_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, counter.Add(1))
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		tb.Fatalf("pgtest: creating database: %v", err)
	}
	tb.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), adminDSN())
		if err != nil {
			tb.Errorf("pgtest: connecting for cleanup: %v", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: dropping database: %v", err)
		}
	})
	return withDatabase(adminDSN(), name)
}

// withDatabase points a URL or key=value DSN at another database.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name
}

// Pool returns a pool on a fresh database with the edtech schema applied.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	dsn := Postgres(tb)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		tb.Fatalf("pgtest: pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := schema.Apply(context.Background(), pool); err != nil {
		tb.Fatalf("pgtest: applying schema: %v", err)
	}
	return pool
}
