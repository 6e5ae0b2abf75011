package schema_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pubq/pubq/pkg/edtech/schema"
	"github.com/pubq/pubq/pkg/testenv"
)

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestMigrationsAreNumberedFromOne(t *testing.T) {
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 {
		t.Fatalf("got %d migrations, want at least 2", len(ms))
	}
	for i, m := range ms {
		if m.Version != i+1 || m.Name == "" || m.SQL == "" {
			t.Errorf("migration %d = %+v", i, m)
		}
	}
}

func TestMigrationListIsChecked(t *testing.T) {
	sql := &fstest.MapFile{Data: []byte("SELECT 1")}
	for name, fsys := range map[string]fstest.MapFS{
		"no number":  {"init.sql": sql},
		"no name":    {"0001.sql": sql},
		"zero":       {"0000_zero.sql": sql},
		"gap":        {"0001_a.sql": sql, "0003_c.sql": sql},
		"duplicate":  {"0001_a.sql": sql, "0001_b.sql": sql},
		"not at one": {"0002_b.sql": sql},
	} {
		if _, err := schema.ReadMigrations(fsys); !errors.Is(err, schema.ErrBadMigration) {
			t.Errorf("%s: %v", name, err)
		}
	}
	ms, err := schema.ReadMigrations(fstest.MapFS{"0002_b.sql": sql, "0001_a.sql": sql})
	if err != nil || len(ms) != 2 || ms[0].Name != "a" || ms[1].Version != 2 {
		t.Fatalf("valid list: %+v %v", ms, err)
	}
}

func TestApplyIsIdempotent(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	first, err := schema.ApplyVersions(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := schema.Migrations()
	if len(first) != len(ms) {
		t.Fatalf("first apply applied %v, want all %d", first, len(ms))
	}
	second, err := schema.ApplyVersions(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 0 {
		t.Fatalf("second apply applied %v, want nothing", second)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM edtech_schema_migrations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(ms) {
		t.Fatalf("%d versions recorded, want %d", n, len(ms))
	}
}

func TestApplyConcurrently(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	const n = 6
	var wg sync.WaitGroup
	results := make([][]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = schema.ApplyVersions(ctx, pool)
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("apply %d: %v", i, errs[i])
		}
		total += len(results[i])
	}
	ms, _ := schema.Migrations()
	if total != len(ms) {
		t.Fatalf("applied %d migrations in all across %d callers, want each of %d exactly once", total, n, len(ms))
	}
}

// The reference schema must keep its traps: at least 12 tables hang off students.
func TestReferenceSchemaShape(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	if err := schema.Apply(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var n int
	err := pool.QueryRow(ctx, `
		WITH RECURSIVE dep(rel) AS (
			SELECT 'students'::regclass
			UNION
			SELECT c.conrelid FROM pg_constraint c JOIN dep ON c.confrelid = dep.rel
			WHERE c.contype = 'f')
		SELECT count(*) FROM dep WHERE rel <> 'students'::regclass`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n < 12 {
		t.Fatalf("%d tables depend on students, want at least 12", n)
	}
	var multi int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND cardinality(conkey) > 1`).Scan(&multi); err != nil {
		t.Fatal(err)
	}
	if multi == 0 {
		t.Fatal("no multi-column FK in the reference schema")
	}
}

func TestApplyFailsOnBrokenDatabase(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	// A table in the way makes migration 1 fail; nothing must be recorded.
	if _, err := pool.Exec(ctx, "CREATE TABLE students (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := schema.Apply(ctx, pool); err == nil {
		t.Fatal("Apply succeeded over a conflicting table")
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('edtech_schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatal("the failed Apply left its version table behind")
	}
}
