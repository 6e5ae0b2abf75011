package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"cloud.google.com/go/cloudsqlconn"
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pubq/pubq/pkg/telemetry"
)

// Errors returned by the store.
var (
	ErrLeaseLost   = errors.New("pubq: lease lost: another worker holds the job now")
	ErrKeyConflict = errors.New("pubq: idempotency key already used for a different job")
	ErrNotFound    = errors.New("pubq: job not found")
)

// Config says how to reach Postgres. Exactly one of URL or CloudSQLInstance is set.
type Config struct {
	// URL is a libpq DSN or URL (PUBQ_DATABASE_URL). Used for local development and tests.
	URL string
	// CloudSQLInstance is "project:region:instance"; the pool then dials through cloudsqlconn.
	CloudSQLInstance string
	// User and Database for Cloud SQL; with IAMAuth the user is "SA@PROJECT.iam" and needs no password.
	User, Database string
	// IAMAuth enables Cloud SQL IAM database authentication. Default false.
	IAMAuth bool
	// PrivateIP dials the instance's private IP. Default false (public IP through the connector).
	PrivateIP bool
	// MaxConns caps the pool. Default 16.
	MaxConns int32
	// Trace adds otelpgx spans for queries run under a recording span (pubq's own included; otelpgx
	// skips the rest, such as outbox polls), and a span per batched round trip of claims and
	// completions, linked both ways with the spans of the jobs it carried (when the sampler records the
	// round trip, a new root: always under the default parentbased_always_on). Default false.
	Trace bool
	// TracerProvider for those spans. Default: the global one when Open runs.
	TracerProvider trace.TracerProvider
}

// Validate reports a configuration mistake (Open checks the same), so a command can tell it from a
// failure to connect.
func (c *Config) Validate() error {
	switch {
	case c.URL == "" && c.CloudSQLInstance == "":
		return errors.New("pubq: store: set URL (PUBQ_DATABASE_URL) or CloudSQLInstance (PUBQ_CLOUDSQL_INSTANCE)")
	case c.URL != "" && c.CloudSQLInstance != "":
		return errors.New("pubq: store: set only one of URL and CloudSQLInstance")
	case c.CloudSQLInstance != "" && strings.Count(c.CloudSQLInstance, ":") != 2:
		return fmt.Errorf("pubq: store: CloudSQLInstance %q is not project:region:instance", c.CloudSQLInstance)
	case c.CloudSQLInstance != "" && (c.User == "" || c.Database == ""):
		return errors.New("pubq: store: CloudSQLInstance needs User and Database")
	case c.MaxConns < 0:
		return errors.New("pubq: store: MaxConns must not be negative")
	}
	return nil
}

// Store is pubq's handle on Postgres. Safe for concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	poolCfg   *pgxpool.Config // kept to open partitions with the same dialing
	dialer    *cloudsqlconn.Dialer
	tracer    trace.Tracer // nil unless Config.Trace
	closeOnce sync.Once
}

// Open connects and checks the connection. Call Migrate before first use of a new database.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var pc *pgxpool.Config
	var err error
	s := &Store{}
	if cfg.URL != "" {
		pc, err = pgxpool.ParseConfig(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("pubq: store: parsing database URL: %w", err)
		}
	} else {
		pc, err = pgxpool.ParseConfig(fmt.Sprintf("user=%s dbname=%s sslmode=disable", quoteDSN(cfg.User), quoteDSN(cfg.Database)))
		if err != nil {
			return nil, fmt.Errorf("pubq: store: cloud sql config: %w", err)
		}
		opts := []cloudsqlconn.Option{cloudsqlconn.WithLazyRefresh()}
		if cfg.IAMAuth {
			opts = append(opts, cloudsqlconn.WithIAMAuthN())
		}
		if cfg.PrivateIP {
			opts = append(opts, cloudsqlconn.WithDefaultDialOptions(cloudsqlconn.WithPrivateIP()))
		}
		s.dialer, err = cloudsqlconn.NewDialer(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("pubq: store: cloud sql dialer: %w", err)
		}
		inst := cfg.CloudSQLInstance
		// The connector encrypts and authenticates; pgx only sees a net.Conn.
		pc.ConnConfig.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return s.dialer.Dial(ctx, inst)
		}
	}
	pc.MaxConns = 16
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	if cfg.Trace {
		tp := cfg.TracerProvider
		if tp == nil {
			tp = otel.GetTracerProvider()
		}
		pc.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithTracerProvider(tp))
		if _, off := tp.(noop.TracerProvider); !off {
			s.tracer = tp.Tracer(telemetry.ScopeName)
		}
	}
	s.poolCfg = pc.Copy()
	s.pool, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("pubq: store: %w", err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("pubq: store: connecting to postgres: %w", err)
	}
	return s, nil
}

func quoteDSN(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Partition opens a separate pool of at most maxConns connections to the same database (same DSN or
// Cloud SQL dialer). The worker gives each queue's transactional handlers their own partition, so a flood
// on one queue cannot take the connections another queue's jobs need. The caller closes it.
func (s *Store) Partition(ctx context.Context, maxConns int32) (*pgxpool.Pool, error) {
	if maxConns < 1 {
		return nil, errors.New("pubq: store: a partition needs at least one connection")
	}
	pc := s.poolCfg.Copy()
	pc.MaxConns = maxConns
	pc.MinConns = 0
	p, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pubq: store: opening a partition: %w", err)
	}
	return p, nil
}

// Pool returns the connection pool, for handlers and callers that share it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool and the Cloud SQL dialer. Idempotent.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		if s.pool != nil {
			s.pool.Close()
		}
		if s.dialer != nil {
			_ = s.dialer.Close()
		}
	})
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("pubq: migration %q has no numeric prefix", name)
		}
		b, err := migrationFS.ReadFile("migrations/" + name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// migrationLock is the advisory lock key that serialises concurrent Migrate calls.
const migrationLock = 0x70756271 // "pubq"

// Migrate applies pending migrations, each in its own transaction; safe to call from many processes.
// It returns the versions applied.
func (s *Store) Migrate(ctx context.Context) ([]int, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	var applied []int
	for _, m := range ms {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS public.pubq_schema_migrations (
				version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
				return err
			}
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM public.pubq_schema_migrations WHERE version = $1)`, m.Version).Scan(&done); err != nil {
				return err
			}
			if done {
				return nil
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO public.pubq_schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return err
			}
			applied = append(applied, m.Version)
			return nil
		})
		if err != nil {
			return applied, fmt.Errorf("pubq: migration %s: %w", m.Name, err)
		}
	}
	return applied, nil
}

// Querier is what both a pool and a transaction provide.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var (
	_ Querier = (*pgxpool.Pool)(nil)
	_ Querier = (pgx.Tx)(nil)
)
