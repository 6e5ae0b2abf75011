package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	cloudtrace "cloud.google.com/go/trace/apiv1"
	"github.com/schollz/progressbar/v3"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pubq/pubq/pkg/dashboard"
	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/traceview"
)

func oneKey(args []string, what string) (string, error) {
	if len(args) != 1 || args[0] == "" {
		return "", usagef("%s takes exactly one job key (got %d arguments)", what, len(args))
	}
	return args[0], nil
}

func (c *cli) cmdJob(args []string) error {
	fs := c.flags("job")
	payload := fs.Bool("payload", false, "include the payload (it may hold personal data)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	key, err := oneKey(pos, "job")
	if err != nil {
		return err
	}
	insp, err := c.inspector()
	if err != nil {
		return err
	}
	j, err := insp.Job(c.ctx, key, *payload)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(j)
	}
	printJob(c.stdout, j)
	return nil
}

func printJob(out io.Writer, j *inspect.JobInfo) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	state := j.State
	if j.Stuck {
		state += " (STUCK: lease expired " + ago(j.LeaseUntil, j.Now) + ")"
	}
	if j.DeadReason != "" {
		state += " (" + j.DeadReason + ")"
	}
	attempt := fmt.Sprint(j.Attempt)
	if j.MaxAttempts > 0 {
		attempt += fmt.Sprintf(" of %d", j.MaxAttempts)
	}
	fmt.Fprintf(w, "Key\t%s\n", j.Key)
	fmt.Fprintf(w, "ID\t%s\n", j.ID)
	fmt.Fprintf(w, "Queue / kind\t%s / %s\n", j.Queue, j.Kind)
	fmt.Fprintf(w, "State\t%s\n", state)
	fmt.Fprintf(w, "Attempt\t%s (fence %d)\n", attempt, j.Fence)
	if !j.NextRetry.IsZero() {
		fmt.Fprintf(w, "Next retry\t%s (%s)\n", ts(j.NextRetry), ago(j.NextRetry, j.Now))
	}
	if j.LeaseOwner != "" {
		fmt.Fprintf(w, "Lease\t%s until %s (%s)\n", j.LeaseOwner, ts(j.LeaseUntil), ago(j.LeaseUntil, j.Now))
	}
	fmt.Fprintf(w, "Enqueued\t%s (%s)\n", ts(j.EnqueuedAt), ago(j.EnqueuedAt, j.Now))
	if !j.FinishedAt.IsZero() {
		fmt.Fprintf(w, "Finished\t%s (%s)\n", ts(j.FinishedAt), ago(j.FinishedAt, j.Now))
	}
	if j.TraceID != "" {
		fmt.Fprintf(w, "Trace\t%s (pubqctl trace %s)\n", j.TraceID, shellQuote(j.Key))
	}
	w.Flush()
	if j.LastError != "" {
		fmt.Fprintf(out, "\nLast error:\n%s\n", indent(j.LastError))
	}
	fmt.Fprintln(out, "\nAttempts:")
	if len(j.Attempts) == 0 {
		fmt.Fprintln(out, "  none yet")
	} else {
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "  #\tOUTCOME\tSTARTED\tFINISHED\tWORKER\tTRACE\tERROR")
		for _, a := range j.Attempts {
			fmt.Fprintf(w, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Number, a.Outcome, ts(a.StartedAt), ts(a.FinishedAt), dash(a.Worker),
				dash(a.TraceID), dash(oneLine(a.Error, 80)))
		}
		w.Flush()
	}
	if len(j.History) > 0 {
		fmt.Fprintln(out, "\nOperator history:")
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		for _, h := range j.History {
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", ts(h.At), h.Actor, h.Action, oneLine(string(h.Detail), 120))
		}
		w.Flush()
	}
	if j.Payload != nil {
		fmt.Fprintf(out, "\nPayload:\n%s\n", indent(string(j.Payload)))
	}
}

// filterFlags registers the selection flags shared by jobs, replay and purge.
func filterFlags(c *cli, name string, withState bool) (*inspect.Filter, func() error, *flag.FlagSet) {
	fs := c.flags(name)
	f := &inspect.Filter{}
	var since, until string
	fs.StringVar(&f.Queue, "queue", "", "only jobs of this queue")
	fs.StringVar(&f.Kind, "kind", "", "only jobs of this kind")
	if withState {
		fs.StringVar(&f.State, "state", "", "only jobs in this state: "+strings.Join(append(inspect.States, inspect.StateStuck), ", "))
	}
	fs.StringVar(&since, "since", "", "only jobs at or after this time (finished_at for finished jobs, else created_at)")
	fs.StringVar(&until, "until", "", "only jobs before this time")
	finish := func() error {
		now := time.Now()
		var err error
		if f.Since, err = inspect.ParseTime(since, now); err != nil {
			return usagef("--since: %w", err)
		}
		if f.Until, err = inspect.ParseTime(until, now); err != nil {
			return usagef("--until: %w", err)
		}
		return nil
	}
	return f, finish, fs
}

func (c *cli) cmdJobs(args []string) error {
	f, finish, fs := filterFlags(c, "jobs", true)
	fs.IntVar(&f.Limit, "limit", 50, "jobs per page (1..1000)")
	fs.StringVar(&f.Cursor, "cursor", "", "the next-page cursor a previous listing printed")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("jobs takes no arguments (got %q); filter with --state, --queue, --kind, --since, --until", pos[0])
	}
	if err := finish(); err != nil {
		return err
	}
	insp, err := c.inspector()
	if err != nil {
		return err
	}
	page, err := insp.List(c.ctx, *f)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(page)
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KEY\tQUEUE\tKIND\tSTATE\tATTEMPT\tAT\tNEXT RUN\tERROR")
	for _, j := range page.Jobs {
		state := j.State
		if j.Stuck {
			state += "/stuck"
		}
		errText := j.LastError
		if j.DeadReason != "" {
			errText = j.DeadReason + ": " + errText
		}
		next := "-"
		if !j.NextRetry.IsZero() {
			next = ts(j.NextRetry)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", j.Key, j.Queue, j.Kind, state, j.Attempt, ts(j.At), next, dash(oneLine(errText, 60)))
	}
	w.Flush()
	if len(page.Jobs) == 0 {
		fmt.Fprintln(c.stderr, "no jobs match")
	}
	if page.Next != "" {
		fmt.Fprintf(c.stderr, "more: add --cursor %s\n", page.Next)
	}
	return nil
}

func (c *cli) cmdStats(args []string) error {
	fs := c.flags("stats")
	window := fs.Duration("window", time.Hour, "window for the succeeded, failed and died counts")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("stats takes no arguments")
	}
	if *window <= 0 {
		return usagef("--window must be positive")
	}
	insp, err := c.inspector()
	if err != nil {
		return err
	}
	st, err := insp.Stats(c.ctx, *window)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(st)
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "QUEUE\tPENDING\tSCHEDULED\tRUNNING\tSTUCK\tWAITING\tOLDEST WAIT\tSUCCEEDED/%s\tPER MIN\tFAILED\tDIED\tDEAD (ALL)\t\n", human(*window))
	row := func(q inspect.QueueStats) {
		name := q.Queue
		if !q.Configured && q.Queue != "total" {
			name += " (unconfigured)"
		}
		oldest := "-"
		if q.OldestWaitingKey != "" {
			oldest = human(q.OldestWaiting)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%.1f\t%d\t%d\t%d\t\n", name, q.Counts[inspect.StatePending], q.Counts[inspect.StateScheduled],
			q.Counts[inspect.StateRunning], q.Stuck, q.Due, oldest, q.Succeeded, q.Throughput*60, q.Failed, q.Died, q.Counts[inspect.StateDead])
	}
	for _, q := range st.Queues {
		row(q)
	}
	row(st.Total())
	w.Flush()
	fmt.Fprintf(c.stdout, "\noutbox: %d due", st.OutboxDue)
	if st.OutboxDue > 0 {
		fmt.Fprintf(c.stdout, ", oldest %s", human(st.OutboxOldest))
	}
	fmt.Fprintln(c.stdout)
	if tot := st.Total(); tot.Stuck > 0 {
		fmt.Fprintf(c.stderr, "%d stuck job(s): pubqctl jobs --state stuck\n", tot.Stuck)
	}
	return nil
}

func (c *cli) cmdRetry(args []string) error {
	return c.single("retry", args, func(insp *inspect.Inspector, actor, key string) (*inspect.ActionResult, error) {
		return insp.RetryNow(c.ctx, actor, key)
	})
}

func (c *cli) cmdCancel(args []string) error {
	return c.single("cancel", args, func(insp *inspect.Inspector, actor, key string) (*inspect.ActionResult, error) {
		return insp.CancelRetry(c.ctx, actor, key)
	})
}

func (c *cli) single(name string, args []string, act func(*inspect.Inspector, string, string) (*inspect.ActionResult, error)) error {
	fs := c.flags(name)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	key, err := oneKey(pos, name)
	if err != nil {
		return err
	}
	actor, err := c.actor()
	if err != nil {
		return err
	}
	insp, err := c.inspector()
	if err != nil {
		return err
	}
	res, err := act(insp, actor, key)
	if err != nil {
		return err
	}
	return c.printResult(res)
}

func (c *cli) cmdReplay(args []string) error { return c.bulk("replay", args) }

func (c *cli) cmdPurge(args []string) error { return c.bulk("purge", args) }

func (c *cli) bulk(name string, args []string) error {
	f, finish, fs := filterFlags(c, name, name == "purge")
	fs.BoolVar(&f.All, "all", false, "act on every matching job even with no other selection")
	dry := fs.Bool("dry-run", false, "show what would be done; change nothing")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	f.Keys = pos
	switch {
	case len(f.Keys) == 0 && !f.All && f.Queue == "" && f.Kind == "" && f.Since.IsZero() && f.Until.IsZero():
		return usagef("%s needs job keys, a selection (--queue, --kind, --since, --until), or --all", name)
	case len(f.Keys) > 0 && f.All:
		return usagef("%s: give keys or --all, not both", name)
	}
	actor, err := c.actor()
	if err != nil {
		return err
	}
	insp, err := c.inspector()
	if err != nil {
		return err
	}
	var bar *progressbar.ProgressBar
	progress := func(done, total int) {
		// Only a bulk action over a filter, on a terminal, with human output, gets a bar.
		if !c.tty || c.json || len(f.Keys) > 0 || total == 0 {
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(c.stderr), progressbar.OptionSetDescription(name),
				progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish(),
				progressbar.OptionThrottle(100*time.Millisecond))
		}
		bar.ChangeMax(total)
		_ = bar.Set(done)
	}
	var res *inspect.ActionResult
	if name == "replay" {
		res, err = insp.ReplayProgress(c.ctx, actor, *f, *dry, progress)
	} else {
		res, err = insp.PurgeProgress(c.ctx, actor, *f, *dry, progress)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	if res != nil && (err == nil || res.Matched > 0) {
		if perr := c.printResult(res); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return err
	}
	if res.Failed > 0 {
		// Printed above with each job's reason; the exit code says it too (1: the operation failed),
		// and wins over keys that name no job (3).
		return fmt.Errorf("%d of %d job(s) could not be %s", res.Failed, res.Matched, map[string]string{"replay": "replayed", "purge": "purged"}[name])
	}
	var missing []string
	for _, j := range res.Jobs {
		if j.From == "" {
			missing = append(missing, j.Key)
		}
	}
	if len(missing) > 0 {
		return notFoundError{missing}
	}
	return nil
}

// printResult prints what an action did: a summary line and, for up to 50 jobs, a table.
func (c *cli) printResult(res *inspect.ActionResult) error {
	if c.json {
		return c.printJSON(res)
	}
	fmt.Fprintln(c.stdout, res.Summary())
	if len(res.Jobs) == 0 || (len(res.Jobs) == 1 && res.Matched == 1 && !res.Jobs[0].Changed) {
		return nil
	}
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KEY\tQUEUE\tKIND\tFROM\tTO\tNOTE")
	for i, j := range res.Jobs {
		if i == 50 {
			fmt.Fprintf(w, "… and %d more (use --json for all)\n", len(res.Jobs)-50)
			break
		}
		to := dash(j.To)
		if j.Changed && j.To == "" {
			to = "(deleted)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", j.Key, dash(j.Queue), dash(j.Kind), dash(j.From), to, dash(j.Reason))
	}
	return w.Flush()
}

func (c *cli) cmdTrace(args []string) error {
	fs := c.flags("trace")
	jaeger := fs.String("jaeger", "", "Jaeger query API base URL (default $PUBQ_JAEGER_URL, else http://127.0.0.1:16686)")
	project := fs.String("cloud-trace-project", "", "read from Cloud Trace in this project instead of Jaeger (default $PUBQ_CLOUD_TRACE_PROJECT)")
	byID := fs.Bool("id", false, "the argument is a trace id, not a job key (no database needed)")
	lookback := fs.Duration("lookback", 48*time.Hour, "how far back the job's spans are searched for")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] == "" {
		return usagef("trace takes exactly one job key, or one trace id with --id (got %d arguments)", len(pos))
	}
	arg := pos[0]
	src, where, closeSrc, err := c.traceSource(*jaeger, *project)
	if err != nil {
		return err
	}
	defer closeSrc()
	var traces []*traceview.Trace
	if *byID {
		if traces, err = traceview.Fetch(c.ctx, src, arg); err != nil {
			return fmt.Errorf("pubq: fetching trace %s from %s: %w", arg, where, err)
		}
	} else if traces, err = c.jobTraces(src, where, arg, *lookback); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(traces)
	}
	return traceview.Render(c.stdout, traces, traceview.RenderOptions{})
}

// traceSource is Jaeger when --jaeger is given, else Cloud Trace when a project is (flag or
// PUBQ_CLOUD_TRACE_PROJECT), else Jaeger at PUBQ_JAEGER_URL or its local default.
// PUBQ_CLOUD_TRACE_ENDPOINT (host:port, plaintext, no credentials) points Cloud Trace at a fake, for tests.
func (c *cli) traceSource(jaeger, project string) (traceview.Source, string, func(), error) {
	if project == "" && jaeger == "" {
		project = c.getenv("PUBQ_CLOUD_TRACE_PROJECT")
	}
	if project != "" && jaeger != "" {
		return nil, "", nil, usagef("trace reads one backend: give --jaeger or --cloud-trace-project, not both")
	}
	if project != "" {
		var opts []option.ClientOption
		if ep := c.getenv("PUBQ_CLOUD_TRACE_ENDPOINT"); ep != "" {
			opts = append(opts, option.WithEndpoint(ep), option.WithoutAuthentication(),
				option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
		}
		client, err := cloudtrace.NewClient(c.ctx, opts...)
		if err != nil {
			return nil, "", nil, fmt.Errorf("pubq: Cloud Trace client (credentials from the environment): %w", err)
		}
		return traceview.NewCloudTrace(client, project), "Cloud Trace project " + project, func() { _ = client.Close() }, nil
	}
	if jaeger == "" {
		jaeger = c.getenv("PUBQ_JAEGER_URL")
	}
	if jaeger == "" {
		jaeger = "http://127.0.0.1:16686"
	}
	return traceview.NewJaeger(jaeger, nil), jaeger, func() {}, nil
}

// jobTraces searches the backend for the job's spans by key. If it finds none (the spans lack the key,
// or Jaeger's service list is empty), it fetches the trace ids the database recorded for the job's
// attempts, skipping those the backend no longer has. The database is needed only then.
func (c *cli) jobTraces(src traceview.Source, where, key string, lookback time.Duration) ([]*traceview.Trace, error) {
	traces, err := traceview.FetchJob(c.ctx, src, traceview.JobQuery{Key: key, Lookback: lookback})
	if err == nil {
		return traces, nil
	}
	if !errors.Is(err, traceview.ErrNotFound) {
		return nil, fmt.Errorf("pubq: fetching traces of %q from %s: %w", key, where, err)
	}
	st, err := c.open()
	if err != nil {
		return nil, fmt.Errorf("pubq: %s has no span of job %q (%w), and the database that records its trace ids is unavailable: %v", where, key, traceview.ErrNotFound, err)
	}
	j, err := inspect.New(st.Pool(), nil).Job(c.ctx, key, false)
	if err != nil {
		return nil, err
	}
	ids := traceIDsOf(j)
	for _, id := range ids {
		t, ferr := traceview.Fetch(c.ctx, src, id)
		if ferr != nil && !errors.Is(ferr, traceview.ErrNotFound) {
			return nil, fmt.Errorf("pubq: fetching trace %s of %q from %s: %w", id, key, where, ferr)
		}
		traces = append(traces, t...)
	}
	if len(traces) == 0 {
		return nil, fmt.Errorf("pubq: %s has no trace of job %q (trace ids in the database: %s): %w", where, key, strings.Join(ids, ", "), traceview.ErrNotFound)
	}
	return traces, nil
}

// traceIDsOf lists the trace ids the database recorded for a job, its attempts' first, without repeats.
func traceIDsOf(j *inspect.JobInfo) []string {
	var out []string
	seen := map[string]bool{}
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, a := range j.Attempts {
		add(a.TraceID)
	}
	add(j.TraceID)
	return out
}

func (c *cli) cmdDashboard(args []string) error {
	fs := c.flags("dashboard")
	addr := fs.String("addr", ":8090", "listen address")
	jaeger := fs.String("jaeger", "", "Jaeger UI base URL for trace links (default $PUBQ_JAEGER_URL, else http://127.0.0.1:16686)")
	project := fs.String("cloud-trace-project", "", "link traces to Cloud Trace in this project (default $PUBQ_CLOUD_TRACE_PROJECT)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("dashboard takes no arguments")
	}
	var tokens []string
	for _, t := range strings.Split(c.getenv("PUBQ_DASHBOARD_TOKENS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	cfg := &dashboard.Config{Tokens: tokens, Logger: slog.New(slog.NewTextHandler(c.stderr, nil))}
	if *project == "" {
		*project = c.getenv("PUBQ_CLOUD_TRACE_PROJECT")
	}
	if *jaeger == "" {
		*jaeger = c.getenv("PUBQ_JAEGER_URL")
	}
	switch {
	case *project != "":
		cfg.TraceURL = dashboard.CloudTraceURL(*project)
	case *jaeger != "":
		cfg.TraceURL = dashboard.JaegerTraceURL(*jaeger)
	}
	if err := cfg.Validate(); err != nil {
		return usagef("PUBQ_DASHBOARD_TOKENS: %w", err)
	}
	insp, err := c.inspector()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return usagef("--addr: %w", err)
	}
	srv := &http.Server{Handler: dashboard.New(insp, cfg), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(c.stderr, "pubq dashboard on http://%s/\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-c.ctx.Done():
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (c *cli) cmdMigrate(args []string) error {
	fs := c.flags("migrate")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("migrate takes no arguments")
	}
	st, err := c.open()
	if err != nil {
		return err
	}
	applied, err := st.Migrate(c.ctx)
	if c.json {
		if applied == nil {
			applied = []int{}
		}
		if perr := c.printJSON(map[string]any{"applied": applied}); perr != nil && err == nil {
			err = perr
		}
	} else if len(applied) == 0 && err == nil {
		fmt.Fprintln(c.stdout, "schema is up to date")
	} else {
		for _, v := range applied {
			fmt.Fprintf(c.stdout, "applied migration %d\n", v)
		}
	}
	return err
}
