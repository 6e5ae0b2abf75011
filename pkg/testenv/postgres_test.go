package testenv

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting to %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func dbNameOf(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func databaseExists(t *testing.T, conn *pgx.Conn, name string) bool {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func TestPostgresGivesFreshDatabasesDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	var names []string
	var open *pgx.Conn
	t.Run("inner", func(t *testing.T) {
		a, b := Postgres(t), Postgres(t)
		if a == b {
			t.Fatalf("two Postgres() calls returned the same database %s", a)
		}
		ca, cb := connect(t, a), connect(t, b)
		ctx := context.Background()
		for _, c := range []*pgx.Conn{ca, cb} {
			var tables int
			err := c.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").Scan(&tables)
			if err != nil {
				t.Fatal(err)
			}
			if tables != 0 {
				t.Errorf("%s has %d tables, want an empty database", c.Config().Database, tables)
			}
		}
		if _, err := ca.Exec(ctx, "CREATE TABLE jobs (id int)"); err != nil {
			t.Fatal(err)
		}
		if _, err := cb.Exec(ctx, "SELECT * FROM jobs"); err == nil {
			t.Error("a table created in one test database is visible in the other")
		}
		names = []string{dbNameOf(t, a), dbNameOf(t, b)}
		// Still connected when the cleanup drops the database: WITH (FORCE)
		// must end the session rather than fail.
		var err error
		if open, err = pgx.Connect(ctx, a); err != nil {
			t.Fatal(err)
		}
	})
	if open != nil {
		defer open.Close(context.Background())
	}
	if t.Failed() {
		return
	}
	admin := connect(t, Postgres(t))
	for _, name := range names {
		if !strings.HasPrefix(name, "pubq_testpostgresgivesfreshdatabasesdro") {
			t.Errorf("database name %q does not carry the test name", name)
		}
		if databaseExists(t, admin, name) {
			t.Errorf("database %s still exists after its test ended", name)
		}
	}
}

func TestPostgresParallel(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range 6 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			dsn := Postgres(t)
			mu.Lock()
			if seen[dsn] {
				t.Errorf("database %s handed out twice", dsn)
			}
			seen[dsn] = true
			mu.Unlock()
			c := connect(t, dsn)
			if _, err := c.Exec(context.Background(), "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCreateDatabaseFailures(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, bad := range []string{"host=localhost dbname=x", "mysql://root@127.0.0.1/x", "postgres:///nohost"} {
		if _, err := createDatabase(ctx, bad, "pubq_x"); err == nil || !strings.Contains(err.Error(), "PUBQ_TEST_DATABASE_URL must be one") {
			t.Errorf("createDatabase(%q) = %v, want a URL error", bad, err)
		}
	}
	port := FreePort(t)
	base := fmt.Sprintf("postgres://pubq:s3cret@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", port)
	_, err := createDatabase(ctx, base, "pubq_x")
	if err == nil || !strings.Contains(err.Error(), "testenv: connecting to") {
		t.Errorf("createDatabase on a closed port = %v, want a connection error", err)
	}
	if err != nil && strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the error leaks the password: %v", err)
	}
	if err := dropDatabase(ctx, base, "pubq_x"); err == nil || !strings.Contains(err.Error(), "to drop database pubq_x") {
		t.Errorf("dropDatabase on a closed port = %v, want a connection error", err)
	}
}

func TestCreateDatabaseTwiceFails(t *testing.T) {
	t.Parallel()
	dsn := Postgres(t)
	base, err := databaseURL(dsn, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := createDatabase(ctx, base, dbNameOf(t, dsn)); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("creating an existing database = %v, want an 'already exists' error", err)
	}
}

func TestStartPostgresNotInstalled(t *testing.T) {
	t.Parallel()
	_, _, err := startPostgres("PG_BIN=/nonexistent/pg15/bin")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/pg15/bin/initdb not found") {
		t.Errorf("err = %v, want it to name the missing initdb", err)
	}
}
