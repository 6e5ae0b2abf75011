package worker

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/job"
)

// Handler runs jobs of one kind. Its error decides the outcome: nil succeeds; job.Snooze,
// job.RetryAfter, job.Permanent and job.Cancel choose explicitly; any other error retries with backoff.
// Handlers with external side effects should pass j.Key (stable across attempts) to the external API
// as its idempotency key.
type Handler interface {
	Work(ctx context.Context, j *job.Job) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, j *job.Job) error

// Work calls f.
func (f HandlerFunc) Work(ctx context.Context, j *job.Job) error { return f(ctx, j) }

// TxHandler runs a job inside a database transaction that commits together with the job's completion:
// its writes happen exactly once. If it returns an error, or the lease is lost, the transaction rolls back.
type TxHandler interface {
	WorkTx(ctx context.Context, tx pgx.Tx, j *job.Job) error
}

// TxHandlerFunc adapts a function to TxHandler.
type TxHandlerFunc func(ctx context.Context, tx pgx.Tx, j *job.Job) error

// WorkTx calls f.
func (f TxHandlerFunc) WorkTx(ctx context.Context, tx pgx.Tx, j *job.Job) error { return f(ctx, tx, j) }

// Middleware wraps a handler; it sees every job of every kind (transactional ones included).
type Middleware func(Handler) Handler

type txKey struct{}

// Tx returns the job's transaction inside a TxHandler's middleware chain (nil for plain handlers).
func Tx(ctx context.Context) pgx.Tx {
	tx, _ := ctx.Value(txKey{}).(pgx.Tx)
	return tx
}

// Mux routes jobs to handlers by kind.
type Mux struct {
	handlers map[string]Handler
	tx       map[string]bool
	mw       []Middleware
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{handlers: map[string]Handler{}, tx: map[string]bool{}} }

// Handle registers h for kind. It panics on an invalid or duplicate kind, like http.ServeMux.
func (m *Mux) Handle(kind string, h Handler) {
	if err := job.ValidateKind(kind); err != nil {
		panic(fmt.Sprintf("pubq: Mux.Handle: %v", err))
	}
	if _, dup := m.handlers[kind]; dup {
		panic(fmt.Sprintf("pubq: Mux.Handle: kind %q registered twice", kind))
	}
	m.handlers[kind] = h
}

// HandleFunc registers f for kind.
func (m *Mux) HandleFunc(kind string, f func(ctx context.Context, j *job.Job) error) {
	m.Handle(kind, HandlerFunc(f))
}

// HandleTx registers a transactional handler for kind.
func (m *Mux) HandleTx(kind string, h TxHandler) {
	m.Handle(kind, HandlerFunc(func(ctx context.Context, j *job.Job) error {
		tx := Tx(ctx)
		if tx == nil {
			return job.Permanent(fmt.Errorf("pubq: %s is transactional but ran without a transaction", kind))
		}
		return h.WorkTx(ctx, tx, j)
	}))
	m.tx[kind] = true
}

// Use appends middleware; the first added is the outermost.
func (m *Mux) Use(mw ...Middleware) { m.mw = append(m.mw, mw...) }

// Kinds returns the registered kinds, sorted.
func (m *Mux) Kinds() []string {
	out := make([]string, 0, len(m.handlers))
	for k := range m.handlers {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// lookup returns kind's handler wrapped in the middleware, and whether it is transactional.
func (m *Mux) lookup(kind string) (Handler, bool, bool) {
	h, ok := m.handlers[kind]
	if !ok {
		return nil, false, false
	}
	for i := len(m.mw) - 1; i >= 0; i-- {
		h = m.mw[i](h)
	}
	return h, m.tx[kind], true
}
