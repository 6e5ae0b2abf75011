package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var postgresServer lazy[string]

// Postgres returns the URL of a fresh, empty database created for this test
// and dropped (WITH (FORCE)) when it ends. The database lives on the server at
// $PUBQ_TEST_DATABASE_URL, or else on a throwaway cluster started once for
// this test binary. Safe with t.Parallel.
func Postgres(tb testing.TB) string {
	tb.Helper()
	base := postgresServer.get(tb, func() (string, error) {
		if u := os.Getenv("PUBQ_TEST_DATABASE_URL"); u != "" {
			return u, nil
		}
		s, u, err := startPostgres()
		if err != nil {
			return "", err
		}
		register(s)
		return u, nil
	})
	name := "pubq_" + slug(tb.Name(), '_', 40) + randomSuffix(10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, err := createDatabase(ctx, base, name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := dropDatabase(ctx, base, name); err != nil {
			tb.Error(err)
		}
	})
	return dsn
}

// databaseURL returns base with its database replaced by name.
func databaseURL(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return "", fmt.Errorf("testenv: %q is not a postgres:// URL (PUBQ_TEST_DATABASE_URL must be one)", redact(base))
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// redact hides a URL's password in error messages.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}

// createDatabase creates database name on the server at base and returns its URL.
func createDatabase(ctx context.Context, base, name string) (string, error) {
	dsn, err := databaseURL(base, name)
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", fmt.Errorf("testenv: connecting to %s to create a test database: %w", redact(base), err)
	}
	defer conn.Close(context.Background())
	for attempt := 1; ; attempt++ {
		_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		// 55006: someone else is connected to template1; it passes quickly.
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || attempt == 10 {
			break
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("testenv: creating database %s: %w", name, ctx.Err())
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
	if err != nil {
		return "", fmt.Errorf("testenv: creating database %s on %s: %w", name, redact(base), err)
	}
	return dsn, nil
}

func dropDatabase(ctx context.Context, base, name string) error {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return fmt.Errorf("testenv: connecting to %s to drop database %s: %w", redact(base), name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("testenv: dropping database %s: %w", name, err)
	}
	return nil
}

// startPostgres runs infra/postgres.sh in the foreground (initdb, then the
// server) on a free port, retrying with another port if one was taken before
// the server bound it. It returns the server's URL (database postgres).
func startPostgres(extraEnv ...string) (*server, string, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, "", err
	}
	dir, err := tempDir()
	if err != nil {
		return nil, "", err
	}
	runDir := filepath.Join(dir, "pg-run")
	script := filepath.Join(root, "infra", "postgres.sh")
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		env := append(os.Environ(), "PUBQ_RUN_DIR="+runDir, "PG_PORT="+strconv.Itoa(port))
		env = append(env, extraEnv...)
		logPath := filepath.Join(dir, fmt.Sprintf("postgres-%d.log", attempt))
		// SIGINT is PostgreSQL's fast shutdown.
		s, err := startServer("PostgreSQL", logPath, syscall.SIGINT, env, "bash", script, "run")
		if err != nil {
			return nil, "", err
		}
		err = s.waitReady(startTimeout(), func(log []byte) (bool, error) {
			return bytes.Contains(log, []byte("database system is ready to accept connections")) && dialable(port), nil
		})
		if err == nil {
			return s, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), nil
		}
		if log, _ := os.ReadFile(logPath); !bytes.Contains(log, []byte("Address already in use")) {
			return nil, "", err
		}
		lastErr = err
	}
	return nil, "", lastErr
}

// removeClusterDir deletes the cluster that infra/postgres.sh put in runDir,
// which is elsewhere when runDir was not reachable by the postgres user.
func removeClusterDir(runDir string) {
	if b, err := os.ReadFile(filepath.Join(runDir, "pg.dir")); err == nil {
		if d := strings.TrimSpace(string(b)); d != "" {
			os.RemoveAll(d)
		}
	}
}
