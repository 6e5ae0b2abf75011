package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// Request is one job to enqueue.
type Request struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key"`
	Payload json.RawMessage `json:"payload"`
	// RunAt delays the job until then; RunIn is the same relative to now. Zero: run now.
	RunAt time.Time     `json:"run_at,omitzero"`
	RunIn time.Duration `json:"-"`
	// Attributes are extra Pub/Sub attributes for the message (names must not start with pubq_ or goog).
	Attributes map[string]string `json:"attributes,omitempty"`
}

// Result is the answer to one Request.
type Result struct {
	ID        string    `json:"id"`
	Key       string    `json:"key"`
	Kind      string    `json:"kind"`
	Queue     string    `json:"queue"`
	State     string    `json:"state"`
	Duplicate bool      `json:"duplicate"` // the key was already enqueued with the same payload
	RunAt     time.Time `json:"run_at,omitzero"`
}

// Errors a caller can test for with errors.Is; *job.DecodeError says which field is invalid.
var (
	ErrUnknownKind = queue.ErrUnknownKind
	ErrKeyConflict = store.ErrKeyConflict
	ErrInvalid     = job.ErrInvalid
	ErrTooMany     = errors.New("pubq: too many jobs in one batch")
)

// MaxBatch is the most jobs one EnqueueMany accepts.
const MaxBatch = 1000

// MaxAttributes is the most extra attributes a job may carry. Pub/Sub allows 100 a message; pubq needs
// the rest on the job's fullest message, its dead letter: the envelope (6), the previous attempt's span
// (1), the Pub/Sub client's trace context (2) and the dead-letter attributes (5).
const MaxAttributes = 86

// Config configures a Client.
type Config struct {
	// Queues routes kinds to queues. Required.
	Queues *queue.Config
	// Metrics counts enqueued jobs. Default: none.
	Metrics *telemetry.Metrics
	// TracerProvider makes enqueue spans. Default: otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Now is the clock for enqueue times. Default: time.Now.
	Now func() time.Time
	// NewID makes job ids. Default: UUIDv7 (time-ordered).
	NewID func() string
}

// Client enqueues jobs. Safe for concurrent use.
type Client struct {
	st     *store.Store
	cfg    Config
	tracer trace.Tracer
}

// New returns a Client writing through st.
func New(st *store.Store, cfg *Config) (*Client, error) {
	if st == nil || cfg == nil || cfg.Queues == nil {
		return nil, errors.New("pubq: publish: store and Config.Queues are required")
	}
	c := &Client{st: st, cfg: *cfg}
	if c.cfg.TracerProvider == nil {
		c.cfg.TracerProvider = otel.GetTracerProvider()
	}
	if c.cfg.Now == nil {
		c.cfg.Now = time.Now
	}
	if c.cfg.NewID == nil {
		c.cfg.NewID = func() string { return uuid.Must(uuid.NewV7()).String() }
	}
	c.tracer = c.cfg.TracerProvider.Tracer(telemetry.ScopeName)
	return c, nil
}

// Enqueue enqueues one job. The same key with the same kind and payload returns the first job
// (Duplicate true) and publishes nothing; with a different kind or payload it fails with ErrKeyConflict.
func (c *Client) Enqueue(ctx context.Context, r Request) (Result, error) {
	res, err := c.EnqueueMany(ctx, []Request{r})
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// EnqueueMany enqueues jobs atomically: all are accepted or none.
func (c *Client) EnqueueMany(ctx context.Context, rs []Request) ([]Result, error) {
	var out []Result
	err := pgx.BeginFunc(ctx, c.st.Pool(), func(tx pgx.Tx) error {
		var err error
		out, err = c.enqueue(ctx, tx, rs)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.count(ctx, out)
	return out, nil
}

// EnqueueTx enqueues jobs inside the caller's transaction: they exist (and are published by the relay)
// only if the caller commits. Use it to make a platform write and its follow-up job atomic.
// pubq_jobs_enqueued_total counts them when EnqueueTx returns, or, under a telemetry.CountOnCommit
// context (a worker's transactional handler has one), only once the transaction commits.
func (c *Client) EnqueueTx(ctx context.Context, tx pgx.Tx, rs ...Request) ([]Result, error) {
	// A savepoint keeps the caller's transaction usable if this enqueue fails.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("pubq: enqueue: %w", err)
	}
	out, err := c.enqueue(ctx, sp, rs)
	if err != nil {
		_ = sp.Rollback(ctx)
		return nil, err
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, fmt.Errorf("pubq: enqueue: %w", err)
	}
	telemetry.CountAfterCommit(ctx, func() { c.count(ctx, out) })
	return out, nil
}

func (c *Client) count(ctx context.Context, out []Result) {
	for _, r := range out {
		if r.Duplicate {
			c.cfg.Metrics.DuplicateSkipped(ctx, r.Queue, r.Kind) // the key exists: no new job
		} else {
			c.cfg.Metrics.Enqueued(ctx, r.Queue, r.Kind, 1)
		}
	}
}

// Prepare validates and routes a request without writing anything.
func (c *Client) Prepare(r Request) (*queue.Queue, error) {
	if err := job.ValidateKind(r.Kind); err != nil {
		return nil, err
	}
	q, err := c.cfg.Queues.Route(r.Kind)
	if err != nil {
		return nil, err
	}
	if err := job.ValidateNewKey(r.Key); err != nil {
		return nil, err
	}
	if len(r.Payload) == 0 {
		r.Payload = json.RawMessage("{}")
	}
	if err := job.ValidatePayload(r.Payload); err != nil {
		return nil, err
	}
	// Pub/Sub's limits, checked here: a message over them would be accepted now and fail in the relay.
	if len(r.Attributes) > MaxAttributes {
		return nil, &job.DecodeError{Field: "attributes", Reason: fmt.Sprintf("%d attributes exceed %d", len(r.Attributes), MaxAttributes)}
	}
	for k, v := range r.Attributes {
		switch {
		case strings.HasPrefix(k, "goog") || strings.HasPrefix(k, "pubq_"):
			return nil, &job.DecodeError{Field: "attributes", Reason: fmt.Sprintf("attribute %q uses a reserved prefix (pubq_, goog)", k)}
		case k == "" || len(k) > 256:
			return nil, &job.DecodeError{Field: "attributes", Reason: fmt.Sprintf("attribute name %q must be 1..256 bytes", job.Truncate(k, 40))}
		case len(v) > 1024:
			return nil, &job.DecodeError{Field: "attributes", Reason: fmt.Sprintf("attribute %q value of %d bytes exceeds 1024", k, len(v))}
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return nil, &job.DecodeError{Field: "attributes", Reason: fmt.Sprintf("attribute %q is not valid UTF-8", job.Truncate(k, 40))}
		}
	}
	return q, nil
}

func (c *Client) enqueue(ctx context.Context, q store.Querier, rs []Request) ([]Result, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	if len(rs) > MaxBatch {
		return nil, fmt.Errorf("%w: %d > %d", ErrTooMany, len(rs), MaxBatch)
	}
	ctx, span := c.tracer.Start(ctx, "pubq enqueue", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.Int("pubq.batch_size", len(rs))))
	defer span.End()
	if len(rs) == 1 {
		span.SetAttributes(telemetry.JobAttributes("", rs[0].Kind, rs[0].Key, "", 0)...)
	}
	now := c.cfg.Now()
	tp := telemetry.TraceParent(span.SpanContext())
	jobs := make([]store.NewJob, 0, len(rs))
	index := map[string]int{} // key → position in jobs: one job per key even within a batch
	pos := make([]int, len(rs))
	for i, r := range rs {
		q, err := c.Prepare(r)
		if err != nil {
			return nil, c.fail(span, fmt.Errorf("job %d (key %q): %w", i, r.Key, err))
		}
		if len(rs) == 1 {
			span.SetAttributes(telemetry.AttrJobQueue.String(q.Name))
		}
		// One form per payload, as the HTTP API stores it, so the same job sent through either path (or
		// re-serialised with other whitespace) hashes the same and is not a key conflict.
		if norm, err := job.NormalizePayload(r.Payload); err == nil { // Prepare checked it is JSON
			r.Payload = norm
		}
		runAt := r.RunAt
		if r.RunIn > 0 {
			runAt = now.Add(r.RunIn)
		}
		if at, seen := index[r.Key]; seen {
			prev := jobs[at]
			if prev.Kind != r.Kind || string(prev.Payload) != string(r.Payload) {
				return nil, c.fail(span, fmt.Errorf("job %d: %w", i, &job.DecodeError{Field: "key",
					Reason: fmt.Sprintf("%q appears twice in the batch with different kinds or payloads", r.Key)}))
			}
			pos[i] = at
			continue
		}
		id := c.cfg.NewID()
		j := &job.Job{ID: id, Kind: r.Kind, Key: r.Key, Payload: r.Payload, EnqueuedAt: now, Attributes: r.Attributes}
		// Prepare checked kind, key, payload and attributes; only the id is new.
		if err := job.ValidateID(id); err != nil {
			return nil, c.fail(span, fmt.Errorf("job %d (key %q): %w", i, r.Key, err))
		}
		data, attrs := j.Envelope()
		index[r.Key] = len(jobs)
		pos[i] = len(jobs)
		jobs = append(jobs, store.NewJob{Key: r.Key, ID: id, Queue: q.Name, Kind: r.Kind, Topic: q.Topic, Payload: data,
			Attributes: attrs, RunAt: runAt, MaxAttempts: q.BackoffFor(r.Kind).MaxAttempts, TraceParent: tp})
	}
	res, err := store.Enqueue(ctx, q, jobs)
	if err != nil {
		return nil, c.fail(span, err)
	}
	out := make([]Result, len(rs))
	for i, r := range rs {
		sr := res[pos[i]]
		out[i] = Result{ID: sr.ID, Key: r.Key, Kind: r.Kind, Queue: jobs[pos[i]].Queue, State: sr.State, Duplicate: sr.Duplicate}
		if i != pos[i] && !sr.Duplicate {
			out[i].Duplicate = true // the same key earlier in this batch
		}
		if sr.State == "scheduled" {
			out[i].RunAt = sr.RunAt // a duplicate answers with the first enqueue's time
		}
	}
	return out, nil
}

func (c *Client) fail(span trace.Span, err error) error {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	return err
}
