package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/pubq/pubq/pkg/api"
	"github.com/pubq/pubq/pkg/dashboard"
	"github.com/pubq/pubq/pkg/gctune"
	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/schedule"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv))
}

// run returns the exit code: 0 after a clean shutdown, 1 when the producer fails, 2 for bad configuration.
func run(ctx context.Context, args []string, getenv func(string) string) int {
	logProject := telemetry.LogProject(ctx, getenv)
	log := telemetry.NewLogger(os.Stderr, telemetry.LoggerOptions{GCPProject: logProject})
	cfg, err := loadConfig(args, getenv)
	if err != nil {
		log.Error("producer: invalid configuration", "error", err)
		return 2
	}
	log = telemetry.NewLogger(os.Stderr, telemetry.LoggerOptions{Level: cfg.logLevel, GCPProject: logProject})
	slog.SetDefault(log)
	log.Info("garbage collector", "gc", gctune.Apply())
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("producer failed", "error", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// serve runs the producer until ctx is done, then shuts down in order: stop taking requests and let
// those in flight finish, publish what they committed, stop the relay, flush telemetry.
func serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	if cfg.insecure {
		log.Warn("AUTHENTICATION IS OFF (PUBQ_INSECURE_NO_AUTH=true): anyone who reaches this port can enqueue jobs. " +
			"For local development only; set PUBQ_API_TOKENS anywhere else.")
	}
	for _, n := range cfg.weakTokens {
		log.Warn(fmt.Sprintf("PUBQ_API_TOKENS: token %d of %d is shorter than %d bytes; use long random tokens outside local development",
			n, len(cfg.tokens), api.MinTokenBytes))
	}
	prov, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "pubq-producer", ServiceVersion: version, Logger: log})
	if err != nil {
		return usageError{err} // a bad OTEL_* variable
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := prov.Shutdown(fctx); err != nil {
			log.Warn("flushing telemetry failed", "error", err)
		}
	}()
	metrics, err := telemetry.NewMetrics(prov.MeterProvider())
	if err != nil {
		return err
	}

	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	st, err := store.Open(octx, cfg.db)
	cancel()
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.migrate {
		applied, err := st.Migrate(ctx)
		if err != nil {
			return err
		}
		log.Info("migrations applied", "versions", applied)
	}

	// With PUBSUB_EMULATOR_HOST set the client talks to the emulator by itself. Its own tracing writes
	// googclient_traceparent, which carries the job's trace to the worker.
	psc, err := pubsub.NewClientWithConfig(ctx, cfg.project, &pubsub.ClientConfig{EnableOpenTelemetryTracing: true})
	if err != nil {
		return fmt.Errorf("pubq: pubsub client: %w", err)
	}
	defer psc.Close()

	pc, err := publish.New(st, &publish.Config{Queues: cfg.queues, Metrics: metrics, TracerProvider: prov.TracerProvider()})
	if err != nil {
		return err
	}
	relay, err := publish.NewRelay(psc, st, &publish.RelayConfig{Logger: log, Metrics: metrics})
	if err != nil {
		return err
	}
	var sched *schedule.Scheduler
	if cfg.schedules && len(cfg.queues.Schedules) > 0 {
		if sched, err = schedule.New(pc, cfg.queues.Schedules, &schedule.Config{Logger: log}); err != nil {
			return usageError{err}
		}
	}

	var draining atomic.Bool
	apiHandler, err := api.New(pc, &api.Config{
		Tokens:         cfg.tokens,
		Insecure:       cfg.insecure,
		Logger:         log,
		TracerProvider: prov.TracerProvider(),
		MeterProvider:  prov.MeterProvider(),
		ServerName:     serverName(cfg.addr),
		Ready: func(ctx context.Context) error {
			if draining.Load() {
				return errors.New("shutting down")
			}
			return st.Pool().Ping(ctx)
		},
	})
	if err != nil {
		return usageError{err}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", prov.MetricsHandler())
	mux.Handle("/", apiHandler)
	if len(cfg.dashboardTokens) > 0 {
		// On-call's dashboard; the trace link goes to Jaeger locally, Cloud Trace in production.
		traceURL := dashboard.CloudTraceURL(cfg.project)
		if cfg.jaegerURL != "" || os.Getenv("PUBSUB_EMULATOR_HOST") != "" {
			traceURL = dashboard.JaegerTraceURL(cmp.Or(cfg.jaegerURL, "http://127.0.0.1:16686"))
		}
		dcfg := &dashboard.Config{Tokens: cfg.dashboardTokens, BasePath: "/ui", TraceURL: traceURL, Logger: log}
		if err := dcfg.Validate(); err != nil {
			return usageError{fmt.Errorf("PUBQ_DASHBOARD_TOKENS: %w", err)}
		}
		mux.Handle("/ui/", dashboard.New(inspect.New(st.Pool(), cfg.queues), dcfg))
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("pubq: listening on %s: %w", cfg.addr, err)
	}

	// Background work has its own context: it stops after the HTTP server has drained, not at the signal.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var wg sync.WaitGroup
	wg.Go(func() { _ = relay.Run(bg) })
	schedCtx, stopSched := context.WithCancel(bg)
	defer stopSched()
	if sched != nil {
		wg.Go(func() { _ = sched.Run(schedCtx) })
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("producer listening", "addr", ln.Addr().String(), "project", cfg.project, "version", version,
		"queues", len(cfg.queues.Queues), "schedules", sched != nil, "auth", !cfg.insecure)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: draining requests", "timeout", cfg.shutdown.String())
	case err := <-served:
		runErr = fmt.Errorf("pubq: http server: %w", err)
	}
	draining.Store(true)
	stopSched()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("requests still running at the shutdown timeout; closing their connections", "error", err)
		_ = srv.Close()
	}
	cancel()
	// Publish what the last requests committed now rather than leaving it to another replica's relay.
	fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := flushOutbox(fctx, relay, st); err != nil {
		log.Warn("final relay pass incomplete; the outbox keeps the rows for the next relay", "error", err)
	}
	cancel()
	stopBG()
	wg.Wait()
	log.Info("producer stopped")
	return runErr
}

// flushOutbox publishes every due outbox row, waiting out rows the background relay holds right now
// (cancelling it mid-publish would push them back by a retry delay). Rows whose publish fails are
// rescheduled by the relay and so stop being due: the loop ends.
func flushOutbox(ctx context.Context, relay *publish.Relay, st *store.Store) error {
	for {
		if _, err := relay.RelayOnce(ctx); err != nil {
			return err
		}
		due, _, err := st.OutboxStats(ctx)
		if err != nil {
			return err
		}
		if due == 0 {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// serverName names the producer in its HTTP telemetry: its listen port under a fixed host name (the
// request's Host header is the client's to choose).
func serverName(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		port = "8080"
	}
	return net.JoinHostPort("pubq-producer", port)
}
