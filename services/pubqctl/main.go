package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/traceview"
)

// Exit codes (documented in doc.go and in the usage text).
const (
	exitOK       = 0
	exitFailed   = 1 // the operation failed (database, Pub/Sub, a partial bulk action)
	exitUsage    = 2 // bad flags or arguments, missing or invalid configuration, no actor
	exitNotFound = 3 // no job has the key (trace: the backend has no trace of it)
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is pubqctl without the process: tests call it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return (&cli{ctx: ctx, getenv: os.Getenv, stdout: stdout, stderr: stderr, tty: isTerminal(stderr)}).run(args)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// cli is one invocation.
type cli struct {
	ctx            context.Context
	getenv         func(string) string
	stdout, stderr io.Writer
	tty            bool // stderr is a terminal: progress bars are drawn there

	json       bool
	queuesPath string
	st         *store.Store
}

// usageError is a mistake in how pubqctl was called or configured: exit 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// notFoundError reports keys that name no job after the rest of the work was done: exit 3.
type notFoundError struct{ keys []string }

func (e notFoundError) Error() string {
	return "pubq: no job has the key(s) " + strings.Join(quoteAll(e.keys), ", ")
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

type command struct {
	name, args, help string
	run              func(c *cli, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"job", "<key> [--payload]", "show a job: state, every attempt with its error, next retry, trace id", (*cli).cmdJob},
		{"jobs", "[--state S] [--queue Q] [--kind K] [--since T] [--until T] [--limit N] [--cursor C]", "list jobs, newest first", (*cli).cmdJobs},
		{"stats", "[--window 1h]", "per queue: counts by state, stuck jobs, successes, failures and deaths in the window, oldest waiting job", (*cli).cmdStats},
		{"retry", "<key>", "run a scheduled job (a retry or a delayed job) now", (*cli).cmdRetry},
		{"cancel", "<key>", "cancel a scheduled job's next run", (*cli).cmdCancel},
		{"replay", "(<key>... | --queue Q [--kind K] [--since T] [--until T] | --all) [--dry-run]", "run dead jobs again from attempt 1 with their stored payload", (*cli).cmdReplay},
		{"purge", "(<key>... | [--state S] --queue Q [--kind K] [--since T] [--until T] | --all) [--dry-run]", "delete finished jobs (succeeded, dead, cancelled) and their attempts", (*cli).cmdPurge},
		{"trace", "(<key> | --id TRACE-ID) [--jaeger URL | --cloud-trace-project P]", "print a job's traces (or one trace) as waterfalls, from Jaeger or Cloud Trace", (*cli).cmdTrace},
		{"dashboard", "[--addr :8090]", "serve the web dashboard", (*cli).cmdDashboard},
		{"merge", "(--survivor ID --duplicate ID | --file PAIRS.csv) [--dry-run] [--enqueue] [--verify pair|full|off]", "merge duplicate student accounts, each pair in its own transaction (or enqueue account.merge jobs)", (*cli).cmdMerge},
		{"seed", "--students N [--duplicate-rate 0.02] [--related 10] [--seed 1] [--pairs FILE] [--append]", "generate synthetic students with planted duplicates (benchmark data)", (*cli).cmdSeed},
		{"migrate", "", "apply pubq's database migrations", (*cli).cmdMigrate},
	}
}

const envHelp = `Environment:
  PUBQ_DATABASE_URL        PostgreSQL URL (or PUBQ_CLOUDSQL_INSTANCE with PUBQ_DATABASE_USER and
                           PUBQ_DATABASE_NAME, IAM authentication; PUBQ_CLOUDSQL_PRIVATE_IP=true)
  PUBQ_QUEUES              queue config file (default queues.yaml; --queues overrides)
  PUBQ_ACTOR               who you are; required for retry, cancel, replay, purge, merge and seed (recorded in pubq.audit)
  PUBQ_JAEGER_URL          Jaeger query API for trace (default http://127.0.0.1:16686; --jaeger overrides)
  PUBQ_DASHBOARD_TOKENS    dashboard: comma-separated login tokens, each "name:secret" or "secret" (16+ bytes; a name is letters, digits, . _ -; a bare secret has no ":")
  PUBQ_CLOUD_TRACE_PROJECT trace reads Cloud Trace in this project instead of Jaeger (credentials from the
                           environment), and the dashboard links there

Times (--since, --until): 2026-11-25, 2026-11-25T14:00 (UTC), RFC 3339, or an age: 90m, 2h, 7d.

Exit codes: 0 ok (an action that found nothing to do is ok and says so), 1 the operation failed,
2 usage or configuration error (also: an action without PUBQ_ACTOR), 3 no job has the key (or, for
trace, the backend has no trace of it).
`

func (c *cli) usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: pubqctl <command> [flags] [args]   (every command takes --json and --queues FILE)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-9s %s\n            %s\n", cmd.name, cmd.args, cmd.help)
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, envHelp)
}

func (c *cli) run(args []string) int {
	defer func() {
		if c.st != nil {
			c.st.Close()
		}
	}()
	if len(args) == 0 {
		c.usage(c.stderr)
		return exitUsage
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" || name == "-help" {
		c.usage(c.stdout)
		return exitOK
	}
	for _, cmd := range commands {
		if cmd.name == name {
			err := cmd.run(c, args[1:])
			return c.exit(err)
		}
	}
	fmt.Fprintf(c.stderr, "pubqctl: unknown command %q\n\n", name)
	c.usage(c.stderr)
	return exitUsage
}

// exit prints err and maps it to an exit code.
func (c *cli) exit(err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintln(c.stderr, "pubqctl:", err)
	var ue usageError
	var nf notFoundError
	switch {
	case errors.As(err, &ue), errors.Is(err, inspect.ErrNoActor), errors.Is(err, inspect.ErrInvalidFilter), errors.Is(err, inspect.ErrUnboundedFilter):
		return exitUsage
	case errors.As(err, &nf), errors.Is(err, inspect.ErrNotFound), errors.Is(err, traceview.ErrNotFound):
		return exitNotFound
	}
	return exitFailed
}

// flags returns a FlagSet with the common flags.
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("pubqctl "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.BoolVar(&c.json, "json", false, "print JSON instead of tables")
	fs.StringVar(&c.queuesPath, "queues", "", "queue config file (default $PUBQ_QUEUES, else queues.yaml)")
	return fs
}

// parse parses flags anywhere among the arguments ("job KEY --json" and "job --json KEY" both work);
// everything after "--" is an argument, for keys that start with a dash.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

func (c *cli) queues() (*queue.Config, error) {
	path := c.queuesPath
	if path == "" {
		path = c.getenv("PUBQ_QUEUES")
	}
	if path == "" {
		path = "queues.yaml"
	}
	qc, err := queue.Load(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("queue config (--queues or PUBQ_QUEUES): %w", err)}
	}
	return qc, nil
}

func (c *cli) storeConfig() (store.Config, error) {
	cfg := store.Config{
		URL:              strings.TrimSpace(c.getenv("PUBQ_DATABASE_URL")),
		CloudSQLInstance: strings.TrimSpace(c.getenv("PUBQ_CLOUDSQL_INSTANCE")),
		User:             strings.TrimSpace(c.getenv("PUBQ_DATABASE_USER")),
		Database:         strings.TrimSpace(c.getenv("PUBQ_DATABASE_NAME")),
		IAMAuth:          true,
		MaxConns:         4,
	}
	if v := strings.TrimSpace(c.getenv("PUBQ_CLOUDSQL_PRIVATE_IP")); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return cfg, usagef("PUBQ_CLOUDSQL_PRIVATE_IP=%q is not true or false", v)
		}
		cfg.PrivateIP = b
	}
	if cfg.URL == "" && cfg.CloudSQLInstance == "" {
		return cfg, usagef("PUBQ_DATABASE_URL is required (or PUBQ_CLOUDSQL_INSTANCE with PUBQ_DATABASE_USER and PUBQ_DATABASE_NAME)")
	}
	return cfg, nil
}

// open connects to the database once per invocation.
func (c *cli) open() (*store.Store, error) {
	if c.st != nil {
		return c.st, nil
	}
	cfg, err := c.storeConfig()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	st, err := store.Open(c.ctx, cfg)
	if err != nil {
		return nil, err
	}
	c.st = st
	return st, nil
}

// inspector opens the database and loads the queue config.
func (c *cli) inspector() (*inspect.Inspector, error) {
	qc, err := c.queues()
	if err != nil {
		return nil, err
	}
	st, err := c.open()
	if err != nil {
		return nil, err
	}
	return inspect.New(st.Pool(), qc), nil
}

// actor is who runs an action, from PUBQ_ACTOR; actions refuse to run without one.
func (c *cli) actor() (string, error) {
	a := strings.TrimSpace(c.getenv("PUBQ_ACTOR"))
	if a == "" {
		return "", usagef("PUBQ_ACTOR is required for actions: set it to your name or email (it is recorded in pubq.audit)")
	}
	return a, nil
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
