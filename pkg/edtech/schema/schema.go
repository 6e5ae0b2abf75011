package schema

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// VersionTable records the applied migrations.
const VersionTable = "edtech_schema_migrations"

// lockKey is the pg_advisory_xact_lock key that serialises Apply across processes ("edtechsc").
const lockKey int64 = 0x6564746563687363

// ErrBadMigration reports an embedded migration whose name does not follow NNNN_name.sql or whose
// versions are not 1, 2, 3, ...
var ErrBadMigration = errors.New("schema: bad migration")

// Beginner starts a transaction; *pgxpool.Pool, *pgx.Conn and pgx.Tx (a savepoint) all qualify.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migration is one embedded SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("schema: reading migrations: %w", err)
	}
	return readMigrations(sub)
}

// readMigrations reads NNNN_name.sql files from fsys and checks they number 1, 2, 3, ...
func readMigrations(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("schema: reading migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || rest == "" || v <= 0 {
			return nil, fmt.Errorf("%w: %q is not NNNN_name.sql", ErrBadMigration, name)
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("schema: reading %s: %w", name, err)
		}
		ms = append(ms, Migration{Version: v, Name: rest, SQL: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("%w: version %d (%s) where %d was expected", ErrBadMigration, m.Version, m.Name, i+1)
		}
	}
	return ms, nil
}

// Apply applies every migration not yet recorded in edtech_schema_migrations, all in one
// transaction. Concurrent callers queue on an advisory lock, so exactly one applies each version and
// the others find it done.
func Apply(ctx context.Context, db Beginner) error {
	_, err := apply(ctx, db)
	return err
}

// apply is Apply that also returns the versions it applied (for tests).
func apply(ctx context.Context, db Beginner) ([]int, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("schema: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	// The lock comes first: CREATE TABLE IF NOT EXISTS is itself racy between two sessions.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey); err != nil {
		return nil, fmt.Errorf("schema: taking the migration lock: %w", err)
	}
	table := pgx.Identifier{VersionTable}.Sanitize()
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("schema: creating %s: %w", VersionTable, err)
	}
	rows, err := tx.Query(ctx, `SELECT version FROM `+table)
	if err != nil {
		return nil, fmt.Errorf("schema: reading %s: %w", VersionTable, err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("schema: reading %s: %w", VersionTable, err)
	}
	have := make(map[int]bool, len(done))
	for _, v := range done {
		have[int(v)] = true
	}

	var applied []int
	for _, m := range ms {
		if have[m.Version] {
			continue
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return nil, fmt.Errorf("schema: applying %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+table+` (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			return nil, fmt.Errorf("schema: recording %04d_%s: %w", m.Version, m.Name, err)
		}
		applied = append(applied, m.Version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("schema: commit: %w", err)
	}
	return applied, nil
}
