// Command worker runs pubq jobs: it receives the configured queues from Pub/Sub, runs each job's handler
// exactly once per key, and relays the outbox (retries, delayed jobs, dead letters).
//
//	worker [run]      receive and run jobs until SIGTERM/SIGINT (graceful: running jobs finish)
//	worker bootstrap  create the queues' topics and subscriptions (idempotent)
//	worker migrate    apply the database migrations
//
// Configuration comes from the environment; see README.md ("Configuration").
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/pubq/pubq/pkg/admin"
	"github.com/pubq/pubq/pkg/demo"
	"github.com/pubq/pubq/pkg/gctune"
	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
	"github.com/pubq/pubq/pkg/worker"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := telemetry.NewLogger(os.Stderr, telemetry.LoggerOptions{Level: slog.LevelInfo, GCPProject: telemetry.LogProject(ctx, os.Getenv)})
	slog.SetDefault(log)
	cmd := "run"
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	var err error
	switch cmd {
	case "run":
		log.Info("garbage collector", "gc", gctune.Apply())
		err = run(ctx, log)
	case "bootstrap":
		err = bootstrap(ctx, log)
	case "migrate":
		err = migrate(ctx, log)
	case "-h", "--help", "help":
		fmt.Println("usage: worker [run|bootstrap|migrate]; configuration from PUBQ_* environment variables (see README)")
		return
	default:
		err = usageError{fmt.Errorf("unknown command %q (want run, bootstrap or migrate)", cmd)}
	}
	if err != nil {
		log.Error("worker failed", "command", cmd, "error", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

// env holds the configuration read from the environment.
type env struct {
	project  string
	queues   *queue.Config
	db       store.Config
	only     []string
	lease    time.Duration
	shutdown time.Duration
	maxExt   time.Duration
	addr     string
	noJitter bool
	migrate  bool
	// recvTracing keeps the Pub/Sub client's own tracing on the receive side (PUBQ_PUBSUB_RECEIVE_TRACING,
	// default true): subscribe, process, ack and modack spans per message.
	recvTracing bool
	prune       time.Duration
	rescue      time.Duration // how long after its lease expired a job with no live worker is rescued
}

func readEnv() (*env, error) {
	e := &env{project: os.Getenv("PUBQ_PROJECT"), addr: ":9090"}
	if e.project == "" {
		return nil, usageError{errors.New("PUBQ_PROJECT is required (the GCP project; any id with the emulator)")}
	}
	path := os.Getenv("PUBQ_QUEUES")
	if path == "" {
		path = "queues.yaml"
	}
	var err error
	if e.queues, err = queue.Load(path); err != nil {
		return nil, usageError{fmt.Errorf("PUBQ_QUEUES: %w", err)}
	}
	// Booleans read as the producer reads them (strconv.ParseBool), so one env file means the same to
	// both; a value that is neither is a usage error, not a silent false.
	var boolErr error
	boolean := func(name string, def bool) bool {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil && boolErr == nil {
			boolErr = usageError{fmt.Errorf("%s: %q is not true or false", name, v)}
		}
		return b
	}
	e.db = store.Config{URL: os.Getenv("PUBQ_DATABASE_URL"), CloudSQLInstance: os.Getenv("PUBQ_CLOUDSQL_INSTANCE"),
		User: os.Getenv("PUBQ_DATABASE_USER"), Database: os.Getenv("PUBQ_DATABASE_NAME"), IAMAuth: true,
		PrivateIP: boolean("PUBQ_CLOUDSQL_PRIVATE_IP", false), Trace: boolean("PUBQ_TRACE_SQL", true)}
	if e.db.URL == "" && e.db.CloudSQLInstance == "" {
		return nil, usageError{errors.New("set PUBQ_DATABASE_URL, or PUBQ_CLOUDSQL_INSTANCE with PUBQ_DATABASE_USER and PUBQ_DATABASE_NAME")}
	}
	if v := os.Getenv("PUBQ_WORKER_QUEUES"); v != "" {
		e.only = strings.Split(v, ",")
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"PUBQ_LEASE", &e.lease}, {"PUBQ_SHUTDOWN_TIMEOUT", &e.shutdown}, {"PUBQ_MAX_EXTENSION", &e.maxExt}, {"PUBQ_PRUNE_EVERY", &e.prune}} {
		if v := os.Getenv(d.name); v != "" {
			if *d.dst, err = time.ParseDuration(v); err != nil || *d.dst <= 0 {
				return nil, usageError{fmt.Errorf("%s: %q is not a positive duration", d.name, v)}
			}
		}
	}
	if e.prune == 0 {
		e.prune = 10 * time.Minute
	}
	e.rescue = time.Minute
	if v := os.Getenv("PUBQ_RESCUE_AFTER"); v != "" {
		if e.rescue, err = time.ParseDuration(v); err != nil || e.rescue <= 0 {
			return nil, usageError{fmt.Errorf("PUBQ_RESCUE_AFTER: %q is not a positive duration", v)}
		}
	}
	// Enough connections for every queue's concurrent handlers: transactional handlers hold one each.
	e.db.MaxConns = 64
	if v := os.Getenv("PUBQ_DB_MAX_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			return nil, usageError{fmt.Errorf("PUBQ_DB_MAX_CONNS: %q must be a number ≥ 2", v)}
		}
		e.db.MaxConns = int32(n)
	}
	if v := os.Getenv("PORT"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
			return nil, usageError{fmt.Errorf("PORT: %q is not a port number", v)}
		}
		e.addr = ":" + v
	}
	e.noJitter = boolean("PUBQ_NO_JITTER", false)
	e.migrate = boolean("PUBQ_MIGRATE", false)
	e.recvTracing = boolean("PUBQ_PUBSUB_RECEIVE_TRACING", true)
	if boolErr != nil {
		return nil, boolErr
	}
	return e, nil
}

func newPubSub(ctx context.Context, project string) (*pubsub.Client, error) {
	// The client's own tracing carries the trace across Pub/Sub (googclient_traceparent).
	return pubsub.NewClientWithConfig(ctx, project, &pubsub.ClientConfig{EnableOpenTelemetryTracing: true})
}

func bootstrap(ctx context.Context, log *slog.Logger) error {
	e, err := readEnvNoDB()
	if err != nil {
		return err
	}
	client, err := newPubSub(ctx, e.project)
	if err != nil {
		return err
	}
	defer client.Close()
	actions, err := admin.Bootstrap(ctx, client, e.project, e.queues)
	for _, a := range actions {
		log.Info("bootstrap", "kind", a.Kind, "resource", a.Resource, "result", a.Did)
	}
	return err
}

// readEnvNoDB reads what bootstrap needs: it touches Pub/Sub only.
func readEnvNoDB() (*env, error) {
	if os.Getenv("PUBQ_DATABASE_URL") == "" && os.Getenv("PUBQ_CLOUDSQL_INSTANCE") == "" {
		os.Setenv("PUBQ_DATABASE_URL", "unused")
	}
	return readEnv()
}

func migrate(ctx context.Context, log *slog.Logger) error {
	e, err := readEnv()
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, e.db)
	if err != nil {
		return err
	}
	defer st.Close()
	applied, err := applyMigrations(ctx, st)
	if err != nil {
		return err
	}
	log.Info("migrations applied", "versions", applied)
	return nil
}

// applyMigrations applies pubq's schema, the demo table and the platform jobs' schema.
func applyMigrations(ctx context.Context, st *store.Store) ([]int, error) {
	applied, err := st.Migrate(ctx)
	if err != nil {
		return nil, err
	}
	if err := demo.Migrate(ctx, st.Pool()); err != nil {
		return nil, err
	}
	return applied, migratePlatform(ctx, st)
}

func run(ctx context.Context, log *slog.Logger) error {
	e, err := readEnv()
	if err != nil {
		return err
	}
	prov, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "pubq-worker", ServiceVersion: version, Logger: log})
	if err != nil {
		return usageError{err}
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = prov.Shutdown(sctx)
	}()
	metrics, err := telemetry.NewMetrics(prov.MeterProvider())
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, e.db)
	if err != nil {
		return err
	}
	// Closing the pool waits for every connection, and a handler abandoned at shutdown may hold one.
	defer closeWithin(st.Close, 5*time.Second)
	if e.migrate {
		if _, err := applyMigrations(ctx, st); err != nil {
			return err
		}
	}
	client, err := newPubSub(ctx, e.project)
	if err != nil {
		return err
	}
	defer client.Close()
	// Without the client's receive-side tracing, a separate untraced client receives; the handler span
	// then continues the publisher's create span (googclient_traceparent) itself. The relay keeps the
	// traced client, so retries and dead letters still publish with their create spans.
	recv := client
	if !e.recvTracing {
		if recv, err = pubsub.NewClient(ctx, e.project); err != nil {
			return err
		}
		defer recv.Close()
	}

	mux := worker.NewMux()
	demo.Register(mux)
	if err := registerPlatformJobs(mux, st, platform{queues: e.queues, metrics: metrics, tracer: prov.TracerProvider(),
		log: log, getenv: os.Getenv}); err != nil {
		return err
	}

	w, err := worker.New(recv, st, mux, &worker.Config{Queues: e.queues, Only: e.only, Lease: e.lease,
		ShutdownTimeout: e.shutdown, MaxExtension: e.maxExt, Logger: log, Metrics: metrics,
		TracerProvider: prov.TracerProvider(), NoJitter: e.noJitter})
	if err != nil {
		return usageError{err}
	}
	relay, err := publish.NewRelay(client, st, &publish.RelayConfig{Logger: log, Metrics: metrics})
	if err != nil {
		return err
	}
	rescuer, err := inspect.NewRescuer(st, e.queues, &inspect.RescuerConfig{Every: min(e.rescue/2, 30*time.Second), Grace: e.rescue,
		Logger: log, Metrics: metrics})
	if err != nil {
		return err
	}

	// Listening first: a worker without /healthz and /metrics would look dead to its platform and
	// blind to on-call, so a port it cannot bind is fatal.
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		return fmt.Errorf("ops server: %w", err)
	}
	srv := &http.Server{Handler: opsHandler(prov.MetricsHandler(), st), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("ops server failed", "addr", e.addr, "error", err)
		}
	}()
	// The relay and pruner outlive the receive loop a little: a retry written by the last jobs is still
	// published before the process exits.
	bg, stopBG := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		_ = relay.Run(bg)
	}()
	go worker.RunPruner(bg, st, e.queues, e.prune, log)
	// Jobs whose worker died after Pub/Sub stopped redelivering them are put back by any live worker.
	go func() { _ = rescuer.Run(bg) }()

	err = w.Run(ctx)
	flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, _ = relay.RelayOnce(flush)
	cancel()
	stopBG()
	<-relayDone
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return err
}

// closeWithin runs closeFn and waits for it at most d (the process is exiting either way).
func closeWithin(closeFn func(), d time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		closeFn()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func opsHandler(metrics http.Handler, st *store.Store) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := st.Pool().Ping(ctx); err != nil {
			http.Error(w, "database unreachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
