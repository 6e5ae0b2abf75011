package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/telemetry"
)

// BatcherConfig tunes how claims and completions are grouped into round trips.
type BatcherConfig struct {
	// Owner names the worker in lease_owner. Required.
	Owner string
	// Lease is how long a claim holds a job before another worker may take it over. Default 30s.
	Lease time.Duration
	// MaxBatch caps the requests in one round trip. Default 1000.
	MaxBatch int
	// MaxDelay is the longest a request waits for companions when some in-flight messages are not yet
	// waiting in the batcher. Default 1ms (measured best on the emulator benchmark; 200µs makes more,
	// smaller round trips, 2ms holds claims back).
	MaxDelay time.Duration
	// MaxFlushes is how many round trips may be in flight at once. Default 2: on a busy machine fewer,
	// larger round trips cost the database and the worker less CPU per job (8 gave 13k jobs/s where 2
	// gave 17k on the emulator benchmark), and the second slot keeps a round trip filling while one runs.
	MaxFlushes int
}

// Batcher groups claims and completions from concurrently received messages into one pipelined round
// trip. It flushes as soon as every active message is waiting in it (nothing more can join), when a
// batch is full, or after MaxDelay; while all flush slots are busy, requests keep accumulating (group
// commit). Callers bracket each message with Enter and Leave so the batcher knows how many can join.
type Batcher struct {
	s   *Store
	cfg BatcherConfig

	mu       sync.Mutex
	active   int
	open     *group   // accepting requests; nil when nothing is pending
	full     []*group // reached MaxBatch while every flush slot was busy, oldest first
	pending  int      // requests in open and full
	flushing int
	timer    *time.Timer
	closed   bool
	wg       sync.WaitGroup
	// Claim records: per record, its jobs not yet done and whether one was done unsettled; and the
	// settled records the next round trip deletes.
	unsettled map[int64]recordState
	settled   []int64

	flushes, requests, flushNanos atomic.Int64
}

// group is one round trip's requests and, once done is closed, their results. Requests wait on the
// group rather than on a channel each: one channel and a few slices per round trip instead of an
// allocation per request.
type group struct {
	claims  []ClaimRequest
	results []ClaimResult
	leases  []Lease
	lost    []bool  // per lease: the fence moved on, nothing was written
	forget  []int64 // settled claim records to delete
	err     error   // the whole round trip failed
	done    chan struct{}
	// Traced stores only: the sampled spans of the requests, and the round trip's span.
	links []trace.Link
	span  trace.SpanContext
}

func (g *group) size() int { return len(g.claims) + len(g.leases) }

// link records a request's span for the round trip's span to link to, if it is sampled.
func (g *group) link(sc trace.SpanContext) {
	if sc.IsSampled() {
		g.links = append(g.links, trace.Link{SpanContext: sc})
	}
}

type recordState struct {
	left int  // claimed jobs not yet done
	keep bool // a job was done without being settled: the rescuer's sweep deletes the record
}

// Stats reports how many round trips the batcher made, how many requests they carried, and the time
// spent in them (summed over concurrent flushes).
func (b *Batcher) Stats() (flushes, requests int64, busy time.Duration) {
	return b.flushes.Load(), b.requests.Load(), time.Duration(b.flushNanos.Load())
}

// ErrBatcherClosed is returned for requests made after Close.
var ErrBatcherClosed = errors.New("pubq: batcher closed")

// NewBatcher returns a batcher over s.
func NewBatcher(s *Store, cfg BatcherConfig) (*Batcher, error) {
	if cfg.Owner == "" {
		return nil, errors.New("pubq: batcher: Owner is required")
	}
	if cfg.Lease == 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Lease < time.Second {
		return nil, errors.New("pubq: batcher: Lease must be at least 1s")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = time.Millisecond
	}
	if cfg.MaxFlushes <= 0 {
		cfg.MaxFlushes = 2
	}
	return &Batcher{s: s, cfg: cfg, unsettled: map[int64]recordState{}}, nil
}

// Done says that the handling of a job claimed under record (ClaimResult.Record) ended. settled: its
// attempt's outcome is recorded (done, retried, dead-lettered), or a fenced statement showed the job
// is no longer running under this claim (taken over, rescued, released). Once every job of a record is
// done and settled, the next round trip deletes the record; if one was not settled (its outcome could
// not be recorded, so it may still be running), the record stays for the rescuer, which deletes
// records none of whose jobs runs.
func (b *Batcher) Done(record int64, settled bool) {
	if record == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.unsettled[record]
	if !ok {
		return
	}
	st.left--
	st.keep = st.keep || !settled
	if st.left > 0 {
		b.unsettled[record] = st
		return
	}
	delete(b.unsettled, record)
	if !st.keep {
		b.settled = append(b.settled, record)
	}
}

// Enter counts a message as in flight: it may still send a request.
func (b *Batcher) Enter() {
	b.mu.Lock()
	b.active++
	b.mu.Unlock()
}

// Leave ends Enter. The batcher may now be able to flush early.
func (b *Batcher) Leave() {
	b.mu.Lock()
	b.active--
	b.maybeFlushLocked()
	b.mu.Unlock()
}

// groupLocked returns the group a new request joins.
func (b *Batcher) groupLocked() *group {
	if b.open != nil && b.open.size() >= b.cfg.MaxBatch {
		b.full = append(b.full, b.open)
		b.open = nil
	}
	if b.open == nil {
		b.open = &group{done: make(chan struct{})}
	}
	b.pending++
	return b.open
}

// Claim claims one delivery.
func (b *Batcher) Claim(ctx context.Context, req ClaimRequest) (ClaimResult, error) {
	sc := b.requestSpan(ctx)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ClaimResult{}, ErrBatcherClosed
	}
	g := b.groupLocked()
	i := len(g.claims)
	g.claims = append(g.claims, req)
	g.link(sc)
	b.maybeFlushLocked()
	b.mu.Unlock()
	select {
	case <-g.done:
		linkRoundTrip(ctx, sc, g, claimLink)
		return g.results[i], g.err
	case <-ctx.Done():
		// The claim may still happen; its lease then expires and the job is taken over.
		return ClaimResult{}, ctx.Err()
	}
}

// Complete marks a claimed job succeeded. ErrLeaseLost: the fence moved on; nothing was written.
func (b *Batcher) Complete(ctx context.Context, l Lease) error {
	sc := b.requestSpan(ctx)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrBatcherClosed
	}
	g := b.groupLocked()
	i := len(g.leases)
	g.leases = append(g.leases, l)
	g.link(sc)
	b.maybeFlushLocked()
	b.mu.Unlock()
	select {
	case <-g.done:
		linkRoundTrip(ctx, sc, g, completionLink)
		if g.err != nil {
			return g.err
		}
		if g.lost[i] {
			return ErrLeaseLost
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// requestSpan is the span a request is made under, when the store is traced: untraced (or with a
// no-op tracer provider), the context is not searched (the Pub/Sub client's contexts are deep).
func (b *Batcher) requestSpan(ctx context.Context) trace.SpanContext {
	if b.s.tracer == nil {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(ctx)
}

// linkRoundTrip links a request's span to the round trip that carried it, whose span (with the
// round trip's SQL under it) links back to every request's span: a job's trace leads to its claim and
// completion queries, though they ran in a batch of their own.
func linkRoundTrip(ctx context.Context, sc trace.SpanContext, g *group, what []attribute.KeyValue) {
	if sc.IsSampled() && g.span.IsValid() {
		trace.SpanFromContext(ctx).AddLink(trace.Link{SpanContext: g.span, Attributes: what})
	}
}

// The links' attributes, shared read-only by every link (the SDK copies what it changes): one
// allocation less per request, twice per job.
var (
	claimLink      = []attribute.KeyValue{telemetry.AttrLink.String("claim")}
	completionLink = []attribute.KeyValue{telemetry.AttrLink.String("completion")}
)

// Close flushes what is pending and waits for in-flight round trips. Idempotent.
func (b *Batcher) Close() {
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	for b.pending > 0 {
		b.startFlushLocked()
	}
	b.mu.Unlock()
	b.wg.Wait()
	// Records settled by the last round trips' jobs: one more round trip deletes them.
	b.mu.Lock()
	forget := b.settled
	b.settled = nil
	b.mu.Unlock()
	if len(forget) > 0 {
		b.flush(&group{forget: forget, done: make(chan struct{})})
	}
}

func (b *Batcher) maybeFlushLocked() {
	if b.pending == 0 {
		return
	}
	if b.flushing >= b.cfg.MaxFlushes {
		return // a finishing flush picks these up
	}
	if b.pending >= b.active || len(b.full) > 0 {
		b.startFlushLocked()
		return
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(b.cfg.MaxDelay, func() {
			b.mu.Lock()
			b.timer = nil
			if b.flushing < b.cfg.MaxFlushes && b.pending > 0 {
				b.startFlushLocked()
			}
			b.mu.Unlock()
		})
	}
}

// startFlushLocked sends the oldest pending group.
func (b *Batcher) startFlushLocked() {
	var g *group
	if len(b.full) > 0 {
		g = b.full[0]
		b.full[0] = nil
		b.full = b.full[1:]
	} else {
		g, b.open = b.open, nil
	}
	b.pending -= g.size()
	g.forget, b.settled = b.settled, nil
	if b.timer != nil && b.pending == 0 {
		b.timer.Stop()
		b.timer = nil
	}
	b.flushing++
	b.flushes.Add(1)
	b.requests.Add(int64(g.size()))
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		start := time.Now()
		b.flush(g)
		b.flushNanos.Add(int64(time.Since(start)))
		b.mu.Lock()
		b.flushing--
		// Requests that arrived meanwhile have waited a whole round trip: send them now.
		if b.pending > 0 {
			b.startFlushLocked()
		}
		b.mu.Unlock()
	}()
}

func (b *Batcher) flush(g *group) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var span trace.Span
	if len(g.links) > 0 {
		// A trace of its own: it serves many jobs' traces, linked (the SDK keeps the first 128 links;
		// every job's span links here whatever the count).
		ctx, span = b.s.tracer.Start(ctx, "pubq batch", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithLinks(g.links...), trace.WithAttributes(telemetry.AttrBatchClaims.Int(len(g.claims)), telemetry.AttrBatchCompletions.Int(len(g.leases))))
		if sc := span.SpanContext(); sc.IsSampled() {
			g.span = sc // jobs link only to a round trip that is recorded (a ratio sampler may not)
		}
	}
	g.results = make([]ClaimResult, len(g.claims))
	g.lost = make([]bool, len(g.leases))
	var err error
	for try := 0; try < 3; try++ {
		err = b.flushOnce(ctx, g)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			break // deadlocks and serialization failures are retried; nothing was committed
		}
	}
	if err != nil && len(g.forget) > 0 {
		b.mu.Lock()
		b.settled = append(b.settled, g.forget...) // the next round trip tries again
		b.mu.Unlock()
	}
	g.err = err
	if span != nil {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End() // before the jobs go on, so the round trip ends within their spans
	}
	close(g.done)
}

// flushOnce runs the claims and completions in one pipelined round trip (one implicit transaction),
// then classifies what could not be claimed.
func (b *Batcher) flushOnce(ctx context.Context, g *group) error {
	// One statement row per key, keys sorted so concurrent flushes lock rows in the same order.
	order := sortedIndexes(len(g.claims), func(i, j int) int { return strings.Compare(g.claims[i].Key, g.claims[j].Key) })
	uniq := order[:0:0]
	for _, i := range order {
		if len(uniq) == 0 || g.claims[uniq[len(uniq)-1]].Key != g.claims[i].Key {
			uniq = append(uniq, i)
		}
	}
	lorder := sortedIndexes(len(g.leases), func(i, j int) int { return compareLeases(g.leases[i], g.leases[j]) })

	batch := &pgx.Batch{}
	if len(uniq) > 0 {
		batch.Queue(claimSQL, claimArgs(g.claims, uniq, b.cfg.Owner, b.cfg.Lease)...)
	}
	if len(lorder) > 0 {
		keys, fences := leaseLiterals(g.leases, lorder)
		batch.Queue(completeSQL, keys, fences)
	}
	if len(g.forget) > 0 {
		ids := newArrayLiteral(12 * len(g.forget))
		for _, id := range g.forget {
			ids.addInt(id)
		}
		batch.Queue(forgetClaimsSQL, ids.String())
	}
	// state per unique claim: claimed here, or to classify.
	claimed := make([]bool, len(uniq))
	var record int64 // the claim record of the keys claimed here, and how many they are
	nClaimed := 0
	for i := range g.lost {
		g.lost[i] = true // until the statement returns the lease
	}
	br := b.s.pool.SendBatch(ctx, batch)
	if len(uniq) > 0 {
		rows, err := br.Query()
		if err != nil {
			br.Close()
			return fmt.Errorf("pubq: claiming jobs: %w", err)
		}
		for rows.Next() {
			raw := rows.RawValues()
			attempt, err1 := rawInt(rows, raw, 1)
			fence, err2 := rawInt(rows, raw, 2)
			rec, err3 := rawInt(rows, raw, 3)
			if err := errors.Join(err1, err2, err3); err != nil {
				rows.Close()
				br.Close()
				return fmt.Errorf("pubq: claiming jobs: %w", err)
			}
			// Binary search of the returned key among the sorted unique keys, on the row's bytes.
			u, found := slices.BinarySearchFunc(uniq, raw[0], func(i int, k []byte) int { return compareKey(g.claims[i].Key, k) })
			if !found {
				rows.Close()
				br.Close()
				return fmt.Errorf("pubq: claiming jobs: the database returned an unknown key %q", raw[0])
			}
			claimed[u] = true
			record = rec
			nClaimed++
			g.results[uniq[u]] = ClaimResult{Status: Claimed, State: "running", Attempt: int(attempt), Fence: fence, Record: rec}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			br.Close()
			return fmt.Errorf("pubq: claiming jobs: %w", err)
		}
	}
	if len(lorder) > 0 {
		rows, err := br.Query()
		if err != nil {
			br.Close()
			return fmt.Errorf("pubq: completing jobs: %w", err)
		}
		for rows.Next() {
			raw := rows.RawValues()
			fence, err := rawInt(rows, raw, 1)
			if err != nil {
				rows.Close()
				br.Close()
				return fmt.Errorf("pubq: completing jobs: %w", err)
			}
			l, found := slices.BinarySearchFunc(lorder, raw[0], func(i int, k []byte) int {
				if c := compareKey(g.leases[i].Key, k); c != 0 {
					return c
				}
				return cmp.Compare(g.leases[i].Fence, fence)
			})
			if found {
				g.lost[lorder[l]] = false
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			br.Close()
			return fmt.Errorf("pubq: completing jobs: %w", err)
		}
	}
	if len(g.forget) > 0 {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("pubq: deleting claim records: %w", err)
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("pubq: committing batch: %w", err)
	}
	if record != 0 {
		b.mu.Lock()
		b.unsettled[record] = recordState{left: nClaimed}
		b.mu.Unlock()
	}
	// Classify keys not claimed: finished, held by a live lease, or scheduled for later.
	rest := newArrayLiteral(0)
	restN := 0
	for u, i := range uniq {
		if !claimed[u] {
			rest.addString(g.claims[i].Key)
			restN++
			// Pruned between the two statements unless classified below: nothing to run, nothing to keep.
			g.results[i] = ClaimResult{Status: Done, State: "pruned"}
		}
	}
	if restN > 0 {
		if err := b.classify(ctx, g, uniq, rest.String()); err != nil {
			// The batch is committed: its claims and completions stand. The unclassified keys were not
			// claimed here; their deliveries ask again shortly, as if another delivery held them.
			for u, i := range uniq {
				if !claimed[u] {
					g.results[i] = ClaimResult{Status: Busy, State: "unknown", Wait: time.Second}
				}
			}
		}
	}
	// The same key twice in one batch: the first delivery runs it, the others wait on its lease.
	for n, i := range order {
		if n > 0 && g.claims[order[n-1]].Key == g.claims[i].Key {
			r := g.results[order[n-1]]
			if r.Status == Claimed {
				r = ClaimResult{Status: Busy, State: "running", Wait: b.cfg.Lease}
			}
			g.results[i] = r
		}
	}
	return nil
}

// classify fills the results of the keys (an array literal) that the claim did not take.
func (b *Batcher) classify(ctx context.Context, g *group, uniq []int, keys string) error {
	rows, err := b.s.pool.Query(ctx, classifySQL, keys)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k, state string
		var wait float64
		var due bool
		if err := rows.Scan(&k, &state, &wait, &due); err != nil {
			return err
		}
		if u, found := slices.BinarySearchFunc(uniq, k, func(i int, k string) int { return strings.Compare(g.claims[i].Key, k) }); found {
			g.results[uniq[u]] = classifyState(state, wait, due)
		}
	}
	return rows.Err()
}

// classifyState says what a delivery does with a job it could not claim, from the job's state read
// just after the claim: wait seconds left on the holder's lease, and whether run_at has come.
func classifyState(state string, wait float64, due bool) ClaimResult {
	r := ClaimResult{State: state}
	switch {
	case state == "succeeded" || state == "dead" || state == "cancelled":
		r.Status = Done
	case state == "running":
		r.Status, r.Wait = Busy, time.Duration(wait*float64(time.Second))
	case state == "pending" && due:
		// Claimable, yet the claim just missed it: its holder released it between the two statements
		// (a shutdown). No outbox row will deliver it again, so this delivery must claim it: ask again.
		r.Status = Busy
	default:
		r.Status = NotDue // scheduled: the outbox owns its next delivery
	}
	return r
}

// sortedIndexes returns 0..n-1 sorted by cmp (stable, so duplicates keep their arrival order).
func sortedIndexes(n int, cmp func(i, j int) int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, cmp)
	return idx
}

func compareLeases(a, b Lease) int {
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return cmp.Compare(a.Fence, b.Fence)
}

// compareKey compares a key with a row's raw bytes without converting them (a string(b) passed to a
// function allocates, and this runs a dozen times per job).
func compareKey(s string, b []byte) int {
	for i := 0; i < len(s) && i < len(b); i++ {
		if s[i] != b[i] {
			return cmp.Compare(s[i], b[i])
		}
	}
	return cmp.Compare(len(s), len(b))
}

// rawInt decodes column i of a row read with RawValues: an int4 or int8, in binary or text format.
func rawInt(rows pgx.Rows, raw [][]byte, i int) (int64, error) {
	v := raw[i]
	if rows.FieldDescriptions()[i].Format == pgx.TextFormatCode {
		return strconv.ParseInt(string(v), 10, 64)
	}
	switch len(v) {
	case 4:
		return int64(int32(binary.BigEndian.Uint32(v))), nil
	case 8:
		return int64(binary.BigEndian.Uint64(v)), nil
	}
	return 0, fmt.Errorf("column %d: unexpected %d-byte integer", i, len(v))
}
