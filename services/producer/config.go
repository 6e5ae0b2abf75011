package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pubq/pubq/pkg/api"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
)

// config is everything the producer reads from its flags and environment, validated.
type config struct {
	project    string
	queues     *queue.Config
	db         store.Config
	tokens     []string
	weakTokens []int // 1-based positions of tokens shorter than api.MinTokenBytes: warned about
	insecure   bool
	addr       string
	migrate    bool
	schedules  bool
	shutdown   time.Duration
	logLevel   slog.Level
	// dashboard: tokens ("name:secret") for the on-call dashboard under /ui/; none: not mounted.
	dashboardTokens []string
	// traceURL is the trace viewer the dashboard links to: "jaeger:<base URL>" or "cloudtrace".
	jaegerURL string
}

// usageError is a configuration mistake: the process exits 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// loadConfig reads args (without the program name) and the environment through getenv. Every mistake
// is reported at once, each naming its variable or flag.
func loadConfig(args []string, getenv func(string) string) (*config, error) {
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", "", "listen address (default :$PORT, else :8080)")
	if err := fs.Parse(args); err != nil {
		return nil, usageError{fmt.Errorf("flags: %w", err)}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("flags: unexpected argument %q", fs.Arg(0))}
	}

	c := &config{addr: *addr}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	boolean := func(name string, def bool) bool {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("%s=%q is not true or false", name, v)
			return def
		}
		return b
	}

	if c.project = strings.TrimSpace(getenv("PUBQ_PROJECT")); c.project == "" {
		bad("PUBQ_PROJECT is required (the GCP project id; any id with the Pub/Sub emulator)")
	}

	path := getenv("PUBQ_QUEUES")
	if path == "" {
		path = "queues.yaml"
	}
	if q, err := queue.Load(path); err != nil {
		bad("PUBQ_QUEUES: %w", err)
	} else {
		c.queues = q
	}

	c.db = store.Config{
		URL:              getenv("PUBQ_DATABASE_URL"),
		CloudSQLInstance: getenv("PUBQ_CLOUDSQL_INSTANCE"),
		User:             getenv("PUBQ_DATABASE_USER"),
		Database:         getenv("PUBQ_DATABASE_NAME"),
		IAMAuth:          true, // Cloud SQL: the service account is the database user; no password exists
		PrivateIP:        boolean("PUBQ_CLOUDSQL_PRIVATE_IP", false),
		Trace:            boolean("PUBQ_TRACE_SQL", true),
	}
	switch {
	case c.db.URL != "" && c.db.CloudSQLInstance != "":
		bad("set PUBQ_DATABASE_URL or PUBQ_CLOUDSQL_INSTANCE, not both")
	case c.db.URL == "" && c.db.CloudSQLInstance == "":
		bad("PUBQ_DATABASE_URL is required (or PUBQ_CLOUDSQL_INSTANCE with PUBQ_DATABASE_USER and PUBQ_DATABASE_NAME)")
	case c.db.CloudSQLInstance != "":
		if strings.Count(c.db.CloudSQLInstance, ":") != 2 {
			bad("PUBQ_CLOUDSQL_INSTANCE=%q is not project:region:instance", c.db.CloudSQLInstance)
		}
		if c.db.User == "" {
			bad("PUBQ_DATABASE_USER is required with PUBQ_CLOUDSQL_INSTANCE (the IAM user, SA@PROJECT.iam)")
		}
		if c.db.Database == "" {
			bad("PUBQ_DATABASE_NAME is required with PUBQ_CLOUDSQL_INSTANCE")
		}
	}

	for _, t := range strings.Split(getenv("PUBQ_API_TOKENS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			c.tokens = append(c.tokens, t)
		}
	}
	c.insecure = boolean("PUBQ_INSECURE_NO_AUTH", false)
	switch {
	case c.insecure && len(c.tokens) > 0:
		bad("set PUBQ_API_TOKENS or PUBQ_INSECURE_NO_AUTH=true, not both")
	case !c.insecure && len(c.tokens) == 0:
		bad("PUBQ_API_TOKENS is required (comma-separated bearer tokens); PUBQ_INSECURE_NO_AUTH=true turns auth off for local development only")
	}
	for i, t := range c.tokens {
		// Never echo a token, not even a bad one.
		if strings.ContainsAny(t, " \t\r\n") {
			bad("PUBQ_API_TOKENS: token %d of %d contains whitespace", i+1, len(c.tokens))
		} else if len(t) < api.MinTokenBytes {
			c.weakTokens = append(c.weakTokens, i+1)
		}
	}

	if c.addr == "" {
		c.addr = ":8080"
		if p := strings.TrimSpace(getenv("PORT")); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				bad("PORT=%q is not a port number", p)
			} else {
				c.addr = ":" + p
			}
		}
	} else if _, port, err := net.SplitHostPort(c.addr); err != nil || port == "" {
		bad("--addr=%q is not host:port or :port", c.addr)
	}

	c.migrate = boolean("PUBQ_MIGRATE", false)
	c.schedules = boolean("PUBQ_SCHEDULES", true)
	c.shutdown = 10 * time.Second
	if v := strings.TrimSpace(getenv("PUBQ_SHUTDOWN_TIMEOUT")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad("PUBQ_SHUTDOWN_TIMEOUT=%q is not a positive duration like 10s", v)
		} else {
			c.shutdown = d
		}
	}
	if v := strings.TrimSpace(getenv("PUBQ_LOG_LEVEL")); v != "" {
		if err := c.logLevel.UnmarshalText([]byte(v)); err != nil {
			bad("PUBQ_LOG_LEVEL=%q is not debug, info, warn or error", v)
		}
	}
	for _, t := range strings.Split(getenv("PUBQ_DASHBOARD_TOKENS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			c.dashboardTokens = append(c.dashboardTokens, t)
		}
	}
	c.jaegerURL = strings.TrimSpace(getenv("PUBQ_JAEGER_URL"))

	if len(errs) > 0 {
		return nil, usageError{errors.Join(errs...)}
	}
	return c, nil
}
