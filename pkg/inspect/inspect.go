package inspect

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// Errors returned by the Inspector; test with errors.Is.
var (
	// ErrNotFound: no job has that key (it never existed, or it was purged or pruned).
	ErrNotFound = store.ErrNotFound
	// ErrNoActor: actions record who did them and refuse to run anonymously.
	ErrNoActor = errors.New("pubq: an actor (who is acting) is required for operator actions")
	// ErrInvalidFilter: a filter field or cursor is malformed.
	ErrInvalidFilter = errors.New("pubq: invalid filter")
	// ErrUnboundedFilter: a bulk action was asked without keys, a queue, a kind or a time window and
	// without Filter.All, which would act on every job.
	ErrUnboundedFilter = errors.New("pubq: refusing to act on every job: name keys, a queue, a kind or a time window, or set All")
)

// Job states, as stored in pubq.jobs.
const (
	StatePending   = "pending"
	StateScheduled = "scheduled"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateDead      = "dead"
	StateCancelled = "cancelled"
	// StateStuck is not stored: it selects running jobs whose lease has expired (their worker is
	// gone and no one has taken them over yet).
	StateStuck = "stuck"
)

// States lists the stored states in lifecycle order.
var States = []string{StatePending, StateScheduled, StateRunning, StateSucceeded, StateDead, StateCancelled}

func finishedState(s string) bool {
	return s == StateSucceeded || s == StateDead || s == StateCancelled
}

// indexedState reports whether jobs in state s are in the partial indexes over indexed_state
// (migration 0006): every state but the hot path's running and succeeded.
func indexedState(s string) bool {
	return s == StatePending || s == StateScheduled || s == StateDead || s == StateCancelled
}

func validState(s string) bool {
	for _, v := range States {
		if v == s {
			return true
		}
	}
	return s == StateStuck
}

// Inspector reads and changes job state for operators. Safe for concurrent use.
type Inspector struct {
	pool   *pgxpool.Pool
	cfg    *queue.Config
	tracer trace.Tracer
}

// New returns an Inspector over pool. cfg gives each queue's topics: Replay and RetryNow publish to
// them, and Stats lists every configured queue even when it has no jobs. cfg may be nil for read-only
// use; actions that must publish then fail with an error naming the missing queue.
func New(pool *pgxpool.Pool, cfg *queue.Config) *Inspector {
	return &Inspector{pool: pool, cfg: cfg, tracer: otel.GetTracerProvider().Tracer(telemetry.ScopeName)}
}

// Queues returns the configured queue names, sorted.
func (i *Inspector) Queues() []string {
	if i.cfg == nil {
		return nil
	}
	out := make([]string, len(i.cfg.Queues))
	for n, q := range i.cfg.Queues {
		out[n] = q.Name
	}
	return out
}

// Attempt is one execution of a job.
type Attempt struct {
	Number      int       `json:"number"`
	Fence       int64     `json:"fence"`
	Worker      string    `json:"worker,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	Outcome     string    `json:"outcome"` // retry, snooze, dead, cancelled (recorded); running, succeeded, lost (current)
	Error       string    `json:"error,omitempty"`
	TraceParent string    `json:"trace_parent,omitempty"`
	TraceID     string    `json:"trace_id,omitempty"`
}

// AuditEntry is one operator action on a job.
type AuditEntry struct {
	At     time.Time       `json:"at"`
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Detail json.RawMessage `json:"detail,omitempty"`
}

// JobInfo is everything known about one job.
type JobInfo struct {
	Key         string    `json:"key"`
	ID          string    `json:"id"`
	Queue       string    `json:"queue"`
	Kind        string    `json:"kind"`
	State       string    `json:"state"`
	Stuck       bool      `json:"stuck,omitempty"` // running, but the lease has expired
	Attempt     int       `json:"attempt"`         // attempts started since the job was enqueued or last replayed
	MaxAttempts int       `json:"max_attempts,omitempty"`
	Fence       int64     `json:"fence"`
	RunAt       time.Time `json:"run_at"`
	NextRetry   time.Time `json:"next_retry,omitzero"` // when a scheduled job runs next
	LeaseOwner  string    `json:"lease_owner,omitempty"`
	LeaseUntil  time.Time `json:"lease_until,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	DeadReason  string    `json:"dead_reason,omitempty"`
	TraceParent string    `json:"trace_parent,omitempty"`
	TraceID     string    `json:"trace_id,omitempty"` // of the latest attempt (or the enqueue)
	EnqueuedAt  time.Time `json:"enqueued_at"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	// Attempts are oldest first; attempts from before a replay are kept, so numbers can repeat
	// (the fence orders them).
	Attempts []Attempt    `json:"attempts"`
	History  []AuditEntry `json:"history,omitempty"`
	// Payload is set only when asked for (it may hold personal data).
	Payload json.RawMessage `json:"payload,omitempty"`
	// Now is the database's clock when this was read, to tell ages without trusting the reader's clock.
	Now time.Time `json:"now"`
}

// TraceID returns the trace id of a W3C traceparent, or "" if it is not one.
func TraceID(traceparent string) string {
	if sc := telemetry.SpanContextFromTraceParent(traceparent, ""); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

// lostPrefix is how store.Rescue marks an attempt whose worker vanished.
const lostPrefix = store.LostErrorPrefix

// Job returns the job with key, or ErrNotFound. The payload is read only when withPayload is true.
func (i *Inspector) Job(ctx context.Context, key string, withPayload bool) (*JobInfo, error) {
	var out *JobInfo
	// One snapshot: the job, its attempts and its history agree with each other.
	err := pgx.BeginTxFunc(ctx, i.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		j, err := readJob(ctx, tx, key, withPayload)
		if err != nil {
			return err
		}
		if j.Attempts, err = readAttempts(ctx, tx, key); err != nil {
			return err
		}
		if j.History, err = readHistory(ctx, tx, key, j.CreatedAt); err != nil {
			return err
		}
		j.Attempts = append(j.Attempts, currentAttempt(j)...)
		out = j
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("pubq: inspecting job %q: %w", key, err)
	}
	return out, nil
}

func readJob(ctx context.Context, q pgx.Tx, key string, withPayload bool) (*JobInfo, error) {
	var j JobInfo
	var owner, lastErr, reason, tp *string
	var leaseUntil, started, finished *time.Time
	var payload []byte
	err := q.QueryRow(ctx, `SELECT key, id, queue, kind, state, attempt, max_attempts, fence, run_at, lease_owner, lease_until,
			coalesce(state = 'running' AND lease_until < now(), false), CASE WHEN $2 THEN payload END,
			last_error, dead_reason, trace_parent, enqueued_at, created_at, started_at, finished_at, now()
		FROM pubq.jobs WHERE key = $1`, key, withPayload).Scan(
		&j.Key, &j.ID, &j.Queue, &j.Kind, &j.State, &j.Attempt, &j.MaxAttempts, &j.Fence, &j.RunAt, &owner, &leaseUntil,
		&j.Stuck, &payload, &lastErr, &reason, &tp, &j.EnqueuedAt, &j.CreatedAt, &started, &finished, &j.Now)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	j.LeaseOwner, j.LastError, j.DeadReason, j.TraceParent = str(owner), str(lastErr), str(reason), str(tp)
	j.LeaseUntil, j.StartedAt, j.FinishedAt = tm(leaseUntil), tm(started), tm(finished)
	j.TraceID = TraceID(j.TraceParent)
	if j.State == StateScheduled {
		j.NextRetry = j.RunAt
	}
	if withPayload && payload != nil {
		j.Payload = rawJSON(payload)
	}
	return &j, nil
}

func readAttempts(ctx context.Context, q pgx.Tx, key string) ([]Attempt, error) {
	rows, err := q.Query(ctx, `SELECT attempt, fence, coalesce(worker, ''), started_at, finished_at, outcome,
			coalesce(error, ''), coalesce(trace_parent, '')
		FROM pubq.attempts WHERE job_key = $1 ORDER BY fence`, key)
	if err != nil {
		return nil, err
	}
	out := []Attempt{}
	var a Attempt
	var started *time.Time
	_, err = pgx.ForEachRow(rows, []any{&a.Number, &a.Fence, &a.Worker, &started, &a.FinishedAt, &a.Outcome, &a.Error, &a.TraceParent}, func() error {
		a.StartedAt = tm(started)
		a.TraceID = TraceID(a.TraceParent)
		out = append(out, a)
		return nil
	})
	return out, err
}

// readHistory reads the operator actions on key since the job was created: a key purged and used again
// names a new job, whose history is not the old one's.
func readHistory(ctx context.Context, q pgx.Tx, key string, since time.Time) ([]AuditEntry, error) {
	rows, err := q.Query(ctx, `SELECT at, actor, action, detail FROM pubq.audit WHERE job_key = $1 AND at >= $2 ORDER BY at, id`, key, since)
	if err != nil {
		return nil, err
	}
	var out []AuditEntry
	var e AuditEntry
	var detail []byte
	_, err = pgx.ForEachRow(rows, []any{&e.At, &e.Actor, &e.Action, &detail}, func() error {
		e.Detail = json.RawMessage(append([]byte(nil), detail...))
		out = append(out, e)
		return nil
	})
	return out, err
}

// currentAttempt is the attempt pubq.attempts does not hold: the running or succeeded one, the final
// one of a job finished without an attempt record, or one whose worker was lost and that no
// attempt record describes.
func currentAttempt(j *JobInfo) []Attempt {
	if j.Attempt == 0 {
		return nil // nothing ran since the enqueue or the replay
	}
	cur := Attempt{Number: j.Attempt, Fence: j.Fence, Worker: j.LeaseOwner, StartedAt: j.StartedAt,
		TraceParent: j.TraceParent, TraceID: j.TraceID}
	switch j.State {
	case StateRunning:
		cur.Outcome = StateRunning
		if j.Stuck {
			cur.Outcome = "running (lease expired)"
		}
		return []Attempt{cur}
	case StateSucceeded:
		cur.Outcome, cur.FinishedAt = StateSucceeded, j.FinishedAt
		return []Attempt{cur}
	}
	for _, a := range j.Attempts {
		if a.Fence == j.Fence || (a.Number == j.Attempt && a.Outcome == "lost") {
			return nil // recorded by the worker that ran it, or by store.Rescue for a lost one
		}
	}
	lost := strings.HasPrefix(j.LastError, lostPrefix)
	switch {
	case j.State == StateDead || j.State == StateCancelled:
		cur.Outcome, cur.FinishedAt, cur.Error = j.State, j.FinishedAt, j.LastError
		if lost {
			cur.Outcome = "lost (" + j.State + ")"
		}
	case lost && (j.State == StateScheduled || j.State == StatePending):
		cur.Outcome, cur.Error = "lost", j.LastError
	default:
		return nil
	}
	return []Attempt{cur}
}

// Filter selects jobs. Zero fields do not filter.
type Filter struct {
	// Keys selects these jobs only (at most 1000); the other fields still narrow them.
	Keys  []string `json:"keys,omitempty"`
	Queue string   `json:"queue,omitempty"`
	Kind  string   `json:"kind,omitempty"`
	// State is one of States, or StateStuck.
	State string `json:"state,omitempty"`
	// Since and Until bound the job's time: finished_at for finished jobs, created_at for the others
	// (for an empty State, whichever applies to each job). Since is inclusive, Until exclusive.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// All lets a bulk action run with no narrowing field; without it such an action fails with
	// ErrUnboundedFilter. Reads ignore it.
	All bool `json:"all,omitempty"`
	// Limit is the page size for List. Default 50, at most 1000.
	Limit int `json:"-"`
	// Cursor is Page.Next of the previous page; empty for the first page.
	Cursor string `json:"-"`
}

const maxKeys = 1000

func (f *Filter) validate() error {
	if f.State != "" && !validState(f.State) {
		return fmt.Errorf("%w: state %q is not one of %s or %s", ErrInvalidFilter, f.State, strings.Join(States, ", "), StateStuck)
	}
	if f.Queue != "" && strings.TrimSpace(f.Queue) == "" || f.Kind != "" && strings.TrimSpace(f.Kind) == "" {
		return fmt.Errorf("%w: queue and kind must not be blank", ErrInvalidFilter)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return fmt.Errorf("%w: until (%s) must be after since (%s)", ErrInvalidFilter, f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339))
	}
	if len(f.Keys) > maxKeys {
		return fmt.Errorf("%w: %d keys; at most %d at once", ErrInvalidFilter, len(f.Keys), maxKeys)
	}
	if f.Limit < 0 || f.Limit > 1000 {
		return fmt.Errorf("%w: limit %d must be 1..1000", ErrInvalidFilter, f.Limit)
	}
	return nil
}

// bounded reports whether the filter narrows the jobs at all.
func (f *Filter) bounded() bool {
	return len(f.Keys) > 0 || f.Queue != "" || f.Kind != "" || !f.Since.IsZero() || !f.Until.IsZero()
}

// timeExpr is the column the time window and the ordering use: finished_at for finished jobs,
// created_at for the others. For the indexed states it is indexed_at, which holds just that, so the
// partial indexes over (indexed_state, [queue,] indexed_at, key) serve the query.
func (f *Filter) timeExpr() string {
	switch {
	case indexedState(f.State):
		return "j.indexed_at"
	case f.State == StateSucceeded:
		return "j.finished_at"
	case f.State != "":
		return "j.created_at"
	}
	return "coalesce(j.finished_at, j.created_at)"
}

// where builds the WHERE clause for f (without cursor), appending its arguments to args.
func (f *Filter) where(args *[]any) string {
	arg := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	conds := []string{"true"}
	if len(f.Keys) > 0 {
		conds = append(conds, "j.key = ANY("+arg(f.Keys)+"::text[])")
	}
	if f.Queue != "" {
		conds = append(conds, "j.queue = "+arg(f.Queue))
	}
	if f.Kind != "" {
		conds = append(conds, "j.kind = "+arg(f.Kind))
	}
	switch f.State {
	case "":
	case StateStuck:
		conds = append(conds, "j.key IN ("+store.ClaimedKeysSQL+") AND j.state = 'running' AND j.lease_until < now()")
	case StateRunning:
		// No index tells running jobs from succeeded ones (migration 0006); pubq.claims lists them.
		conds = append(conds, "j.key IN ("+store.ClaimedKeysSQL+") AND j.state = 'running'")
	case StateSucceeded:
		conds = append(conds, "j.state = 'succeeded'")
	default:
		conds = append(conds, "j.indexed_state IS NOT NULL AND j.indexed_state = "+arg(f.State))
	}
	t := f.timeExpr()
	if !f.Since.IsZero() {
		conds = append(conds, t+" >= "+arg(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, t+" < "+arg(f.Until))
	}
	return strings.Join(conds, " AND ")
}

// JobSummary is one row of a listing.
type JobSummary struct {
	Key         string    `json:"key"`
	ID          string    `json:"id"`
	Queue       string    `json:"queue"`
	Kind        string    `json:"kind"`
	State       string    `json:"state"`
	Stuck       bool      `json:"stuck,omitempty"`
	Attempt     int       `json:"attempt"`
	MaxAttempts int       `json:"max_attempts,omitempty"`
	At          time.Time `json:"at"` // the filter's time: finished_at for finished jobs, created_at for the others
	RunAt       time.Time `json:"run_at"`
	NextRetry   time.Time `json:"next_retry,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	DeadReason  string    `json:"dead_reason,omitempty"`
	TraceID     string    `json:"trace_id,omitempty"`
}

// Page is one page of a listing, newest first.
type Page struct {
	Jobs []JobSummary `json:"jobs"`
	// Next is the cursor of the following page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// List returns one page of jobs matching f, newest first. Pages are keyset-paginated on (time, key),
// so paging stays fast and stable while jobs are added.
func (i *Inspector) List(ctx context.Context, f Filter) (*Page, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit == 0 {
		limit = 50
	}
	var args []any
	where := f.where(&args)
	t := f.timeExpr()
	if f.Cursor != "" {
		ct, ck, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, err
		}
		args = append(args, ct, ck)
		where += fmt.Sprintf(" AND (%s, j.key) < ($%d, $%d)", t, len(args)-1, len(args))
	}
	args = append(args, limit+1)
	sql := fmt.Sprintf(`SELECT j.key, j.id, j.queue, j.kind, j.state, coalesce(j.state = 'running' AND j.lease_until < now(), false),
			j.attempt, j.max_attempts, %[1]s, j.run_at, coalesce(j.last_error, ''), coalesce(j.dead_reason, ''), coalesce(j.trace_parent, '')
		FROM pubq.jobs j WHERE %[2]s ORDER BY %[1]s DESC, j.key DESC LIMIT $%[3]d`, t, where, len(args))
	rows, err := i.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("pubq: listing jobs: %w", err)
	}
	page := &Page{Jobs: []JobSummary{}}
	var s JobSummary
	var tp string
	_, err = pgx.ForEachRow(rows, []any{&s.Key, &s.ID, &s.Queue, &s.Kind, &s.State, &s.Stuck, &s.Attempt, &s.MaxAttempts,
		&s.At, &s.RunAt, &s.LastError, &s.DeadReason, &tp}, func() error {
		s.TraceID = TraceID(tp)
		s.NextRetry = time.Time{}
		if s.State == StateScheduled {
			s.NextRetry = s.RunAt
		}
		page.Jobs = append(page.Jobs, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pubq: listing jobs: %w", err)
	}
	if len(page.Jobs) > limit {
		page.Jobs = page.Jobs[:limit]
		last := page.Jobs[limit-1]
		page.Next = encodeCursor(last.At, last.Key)
	}
	return page, nil
}

// A cursor is the (time, key) of the last row of a page, opaque to callers.
func encodeCursor(t time.Time, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(t.UTC().Format(time.RFC3339Nano) + "\x00" + key))
}

func decodeCursor(c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: malformed cursor", ErrInvalidFilter)
	}
	ts, key, ok := strings.Cut(string(b), "\x00")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil {
		return time.Time{}, "", fmt.Errorf("%w: malformed cursor", ErrInvalidFilter)
	}
	return t, key, nil
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func tm(p *time.Time) time.Time {
	if p == nil {
		return time.Time{}
	}
	return *p
}

// rawJSON returns p as JSON: itself when valid, else as a JSON string (a payload is always JSON
// when pubq stored it, but this is the on-call path and must not break on a bad row).
func rawJSON(p []byte) json.RawMessage {
	if json.Valid(p) {
		return json.RawMessage(p)
	}
	b, _ := json.Marshal(string(p))
	return b
}
