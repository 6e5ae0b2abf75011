package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/retry"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// errShutdown is the cause of handler contexts cancelled when ShutdownTimeout ran out.
var errShutdown = errors.New("pubq: worker shut down before the job finished")

// process handles one delivery from start to ack or nack.
func (w *Worker) process(mctx context.Context, rq *runQueue, pm *pubsub.Message) {
	m := &delivery{Message: pm}
	if w.cfg.OnDone != nil {
		defer func() { w.cfg.OnDone(m.job, m.acked) }()
	}
	w.handle(mctx, rq, m)
}

// delivery remembers what became of a message, for Config.OnDone.
type delivery struct {
	*pubsub.Message
	job   *job.Job
	acked bool
}

func (d *delivery) Ack() { d.acked = true; d.Message.Ack() }

func (w *Worker) handle(mctx context.Context, rq *runQueue, m *delivery) {
	select {
	case <-w.stopping:
		m.Nack() // shutting down: start nothing new
		return
	default:
	}
	rq.batcher.Enter()
	defer rq.batcher.Leave()
	q := rq.q

	// The job outlives the receive context during a graceful shutdown, but keeps its trace.
	ctx := context.WithoutCancel(mctx)
	j, err := job.Decode(m.Data, m.Attributes, m.PublishTime)
	if err != nil {
		w.deadLetterRaw(ctx, rq, m, nil, job.ReasonUndecodable, err)
		return
	}
	j.Queue = q.Name
	m.job = j
	chain, ok := rq.chains[j.Kind] // only kinds routed to this queue and handled here
	if !ok {
		w.deadLetterRaw(ctx, rq, m, j, job.ReasonUnknownKind, fmt.Errorf("pubq: no handler for kind %q on queue %q", j.Kind, q.Name))
		return
	}
	policy := rq.policies[j.Kind]
	if rq.limiter != nil {
		// max_rate: wait for a token before claiming; the message keeps its flow-control slot meanwhile.
		rq.batcher.Leave()
		err := rq.limiter.Wait(mctx)
		rq.batcher.Enter()
		if err != nil {
			m.Nack() // shutting down while waiting
			return
		}
	}

	ctx, span := w.startSpan(ctx, mctx, m, j, chain.span)
	defer span.End()

	res, claimedAt, err := w.claim(ctx, rq, j, policy, span)
	if err != nil {
		span.RecordError(err)
		lctx := telemetry.WithJob(ctx, telemetry.Job{Queue: q.Name, Kind: j.Kind, Key: j.Key, ID: j.ID}) // no attempt yet
		w.log.WarnContext(lctx, "claim failed; message will be redelivered", "error", err)
		m.Nack()
		return
	}
	switch res.Status {
	case store.Done, store.NotDue:
		// A duplicate: the job finished, or a retry owned by the outbox is pending. Nothing to run.
		span.SetAttributes(attribute.String("pubq.duplicate", res.State))
		w.cfg.Metrics.DuplicateSkipped(ctx, q.Name, j.Kind)
		m.Ack()
		return
	case store.Busy:
		m.Nack() // shutting down while waiting for another delivery's lease
		return
	}
	j.Attempt = res.Attempt
	lease := store.Lease{Key: j.Key, Fence: res.Fence}
	// The claim record may go once this job is settled: acked (its outcome is durable) or handed over
	// (taken over, rescued or released, as a fenced statement proved). Otherwise (an outcome that could
	// not be recorded) the record stays for the rescuer, which sweeps it once the job stops running.
	handedOver := false
	defer func() { rq.batcher.Done(res.Record, m.acked || handedOver) }()
	if span.IsRecording() { // the rest of the job's attributes were set at the start
		span.SetAttributes(telemetry.AttrJobAttempt.Int(j.Attempt))
	}
	ctx = telemetry.WithJob(ctx, telemetry.Job{Queue: q.Name, Kind: j.Kind, Key: j.Key, ID: j.ID, Attempt: j.Attempt})
	if res.Attempt > policy.MaxAttempts {
		// Earlier attempts died with their workers; the job has had all its attempts.
		// Dead-lettered as exhausted, as the rescuer does when it finds such a job.
		handedOver = w.finishFailure(ctx, rq, m, j, lease, policy, span, fmt.Errorf("pubq: attempt %d exceeds max attempts %d (earlier workers were lost)", res.Attempt, policy.MaxAttempts), time.Now())
		return
	}

	start := time.Now()
	w.cfg.Metrics.Started(ctx, q.Name, j.Kind)
	w.cfg.Metrics.InFlight(ctx, q.Name, 1) // attempts, not deliveries: a duplicate waiting on a lease is not running
	defer w.cfg.Metrics.InFlight(ctx, q.Name, -1)
	// Publish → start, every attempt: the outbox publishes a delayed job or a retry when it is due, so
	// neither the delay nor the backoff counts as waiting. Enqueue time stands in without a publish time.
	waitFrom := m.PublishTime
	if waitFrom.IsZero() {
		waitFrom = j.EnqueuedAt
	}
	w.cfg.Metrics.QueueWait(ctx, q.Name, j.Kind, start.Sub(waitFrom))
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Registered with the lease keeper, which cancels it when the lease is lost or ShutdownTimeout ends.
	w.leases.add(lease, q.Name, cancel, claimedAt)
	defer func() { w.leases.remove(lease, m.acked || handedOver) }()
	if w.hardStopCtx.Err() != nil {
		cancel(errShutdown) // the hard stop came between the claim and the registration
	}

	var herr error
	if chain.tx {
		herr = w.runTx(hctx, rq.pool, chain.h, j, lease)
	} else {
		herr = chain.h.Work(hctx, j)
	}

	// A handler's success is decided before its context's cause: a job that finished just as the
	// shutdown timeout fired, or as a renewal saw the row its own commit had just finished, is done.
	cause := context.Cause(hctx)
	switch {
	case herr == nil && chain.tx:
		// Committed together with the job's completion (fenced): done.
	case herr == nil:
		// The completion is fenced: only the lease's holder can land it, whatever the lease keeper saw.
		w.leases.settling(lease)
		if err := rq.batcher.Complete(ctx, lease); err != nil {
			w.cfg.Metrics.Abandoned(ctx, q.Name, j.Kind, time.Since(start))
			if errors.Is(err, store.ErrLeaseLost) {
				handedOver = true
				w.leases.lost(ctx, lease, q.Name)
				span.SetStatus(codes.Error, "lease lost before completion")
			} else {
				span.RecordError(err)
			}
			m.Nack() // completion not durable: the redelivery finds the job still claimable or done
			return
		}
	case abandoned(cause, herr):
		// This worker no longer owns the outcome (taken over), or stops before it was reached. Only a
		// fenced statement's answer proves the job is someone else's now; failed renewals do not.
		handedOver = leaseTaken(cause, herr)
		if errors.Is(herr, store.ErrLeaseLost) {
			w.leases.lost(ctx, lease, q.Name) // the transactional completion was fenced off (if the keeper's cause, counted there)
		}
		w.cfg.Metrics.Abandoned(ctx, q.Name, j.Kind, time.Since(start))
		if cause == errShutdown {
			w.leases.settling(lease)
			switch err := w.store.Release(ctx, lease); {
			case errors.Is(err, store.ErrLeaseLost):
				handedOver = true // taken over meanwhile
				w.leases.lost(ctx, lease, q.Name)
			case err != nil:
				w.log.WarnContext(ctx, "releasing an unfinished job at shutdown failed; it runs again once its lease expires",
					"error", err)
			default:
				handedOver = true // released: pending again
			}
		}
		span.SetStatus(codes.Error, "abandoned: "+fmt.Sprint(cause))
		m.Nack()
		return
	}
	if herr == nil {
		w.cfg.Metrics.Succeeded(ctx, q.Name, j.Kind, time.Since(start))
		m.Ack()
		return
	}
	var ce *errCommit
	if errors.As(herr, &ce) {
		// The handler succeeded but its commit failed: neither done nor failed; the redelivery decides.
		w.cfg.Metrics.Abandoned(ctx, q.Name, j.Kind, time.Since(start))
		span.RecordError(herr)
		span.SetStatus(codes.Error, herr.Error())
		m.Nack()
		return
	}
	if outcome, _ := job.Classify(herr); outcome == job.OutcomeSnooze {
		w.cfg.Metrics.Snoozed(ctx, q.Name, j.Kind, time.Since(start)) // asked for later: not an error
	} else {
		w.cfg.Metrics.Failed(ctx, q.Name, j.Kind, time.Since(start))
		span.RecordError(herr)
		span.SetStatus(codes.Error, herr.Error())
	}
	handedOver = w.finishFailure(ctx, rq, m, j, lease, policy, span, herr, start)
}

// abandoned reports whether an attempt that did not succeed, with its context's cause and its
// handler's error herr, has no outcome of its own: its job was taken over (or may have been), or the
// worker stops before the handler finished.
func abandoned(cause, herr error) bool {
	return errors.Is(cause, ErrLeaseLost) || cause == errShutdown || errors.Is(herr, store.ErrLeaseLost)
}

// leaseTaken reports whether a run abandoned with cause (its context's) and herr (the handler's error)
// is known to be no longer running under its lease: a renewal or a fenced commit found the fence moved
// on. Renewals that merely failed (errLeaseUnconfirmed) prove nothing.
func leaseTaken(cause, herr error) bool {
	if cause == errLeaseUnconfirmed {
		return false
	}
	return cause == ErrLeaseLost || errors.Is(herr, store.ErrLeaseLost)
}

// errCommit wraps infrastructure failures of a transactional job's own commit: not the handler's fault.
type errCommit struct{ err error }

func (e *errCommit) Error() string { return "pubq: committing job: " + e.err.Error() }
func (e *errCommit) Unwrap() error { return e.err }

// runTx runs a transactional handler and commits its writes with the job's completion. What the
// handler enqueues (publish.EnqueueTx) is counted only if the transaction commits.
func (w *Worker) runTx(ctx context.Context, pool *pgxpool.Pool, chain Handler, j *job.Job, lease store.Lease) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pubq: beginning job transaction: %w", err)
	}
	ctx, settle := telemetry.CountOnCommit(ctx)
	committed := false
	defer func() { settle(committed) }()
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := chain.Work(context.WithValue(ctx, txKey{}, tx), j); err != nil {
		return err
	}
	w.leases.settling(lease)
	if err := store.CompleteTx(ctx, tx, lease); err != nil {
		return err // ErrLeaseLost: a zombie's writes roll back here
	}
	if err := tx.Commit(ctx); err != nil {
		return &errCommit{err}
	}
	committed = true
	return nil
}

// claim claims j, waiting while another delivery holds it. It also returns when the claim that
// answered was sent: the lease runs from about then.
func (w *Worker) claim(ctx context.Context, rq *runQueue, j *job.Job, p *retry.Policy, span trace.Span) (store.ClaimResult, time.Time, error) {
	req := store.ClaimRequest{Key: j.Key, ID: j.ID, Queue: j.Queue, Kind: j.Kind, MaxAttempts: p.MaxAttempts,
		Payload: j.Payload, TraceParent: telemetry.TraceParent(span.SpanContext()), EnqueuedAt: j.EnqueuedAt}
	for {
		sent := time.Now()
		res, err := rq.batcher.Claim(ctx, req)
		if err != nil || res.Status != store.Busy {
			return res, sent, err
		}
		// Another delivery runs this job now. Hold this message (the client keeps extending its ack
		// deadline) until that lease ends, then ask again: the job is then done, or taken over here.
		wait := min(res.Wait+100*time.Millisecond, w.cfg.BusyPoll)
		span.AddEvent("waiting for the lease of another delivery", trace.WithAttributes(attribute.String("wait", wait.String())))
		rq.batcher.Leave() // not about to send a request: do not hold back the batcher
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			rq.batcher.Enter()
		case <-w.leases.finished(j.Key):
			// The delivery running it here just finished: ask now rather than at the poll.
			t.Stop()
			rq.batcher.Enter()
		case <-w.stopping:
			t.Stop()
			rq.batcher.Enter()
			return res, time.Time{}, nil
		}
	}
}

// finishFailure records what a failed attempt leads to and acks only once that is durable. It reports
// whether the failure's fenced statement found the job taken over (the attempt is then settled: its
// outcome belongs to the new holder).
func (w *Worker) finishFailure(ctx context.Context, rq *runQueue, m *delivery, j *job.Job, lease store.Lease, p *retry.Policy, span trace.Span, herr error, start time.Time) (handedOver bool) {
	q := rq.q
	outcome, delay := job.Classify(herr)
	f := store.Failure{Lease: lease, Attempt: j.Attempt, Error: job.Truncate(herr.Error(), 4096), Worker: w.cfg.Owner,
		StartedAt: start, TraceParent: telemetry.TraceParent(span.SpanContext())}
	reason := ""
	switch outcome {
	case job.OutcomeRetry:
		if p.Exhausted(j.Attempt) {
			reason = job.ReasonExhausted
			break
		}
		if delay <= 0 {
			delay = p.Delay(j.Attempt)
		}
		f.Kind, f.Delay = store.FailRetry, delay
		f.Message = w.retryMessage(q.Topic, m, j, j.Attempt+1, f.TraceParent)
	case job.OutcomeSnooze:
		f.Kind, f.Delay = store.FailSnooze, delay
		f.Message = w.retryMessage(q.Topic, m, j, j.Attempt, f.TraceParent)
	case job.OutcomePermanent:
		reason = job.ReasonPermanent
	case job.OutcomeCancel:
		f.Kind = store.FailCancel
	}
	if reason != "" {
		f.Kind, f.DeadReason = store.FailDead, reason
		f.Message = store.OutboxMessage{Topic: q.DeadLetterTopic, Data: m.Data,
			Attributes: job.DeadLetterAttributes(m.Attributes, q.Name, reason, herr.Error(), j.Attempt, time.Now()), TraceParent: f.TraceParent}
	}
	w.leases.settling(lease)
	runAt, err := w.store.Fail(ctx, f)
	if errors.Is(err, store.ErrLeaseLost) {
		// Taken over while it failed (its lease had lapsed): the new holder's attempt decides the job.
		w.leases.lost(ctx, lease, q.Name)
		span.SetStatus(codes.Error, "lease lost before the failure was recorded")
		w.log.WarnContext(ctx, "lease lost before the failure was recorded; the job's new holder decides it", "error", herr.Error())
		m.Nack()
		return true
	}
	if err != nil {
		span.RecordError(err)
		w.log.WarnContext(ctx, "recording the failure failed; message will be redelivered", "error", err)
		m.Nack()
		return false
	}
	switch f.Kind {
	case store.FailRetry, store.FailSnooze:
		if f.Kind == store.FailRetry {
			w.cfg.Metrics.Retried(ctx, q.Name, j.Kind) // a snooze was counted as such
		}
		span.AddEvent("retry scheduled", trace.WithAttributes(attribute.String("pubq.retry_at", runAt.UTC().Format(time.RFC3339Nano)),
			attribute.String("pubq.outcome", outcome.String())))
	case store.FailDead:
		w.cfg.Metrics.DeadLettered(ctx, q.Name, j.Kind, reason)
		span.AddEvent("dead-lettered", trace.WithAttributes(attribute.String("pubq.dead_reason", reason),
			attribute.String("pubq.dead_letter_topic", q.DeadLetterTopic)))
		span.SetAttributes(attribute.String("pubq.dead_reason", reason))
		w.log.WarnContext(ctx, "job dead-lettered", "reason", reason, "error", herr.Error())
	}
	m.Ack()
	return false
}

// retryMessage is the delivery of the next attempt: the same data and attributes, the new attempt
// number, and a link to the failed attempt's span.
func (w *Worker) retryMessage(topic string, m *delivery, j *job.Job, attempt int, prev string) store.OutboxMessage {
	attrs := make(map[string]string, len(m.Attributes)+2)
	for k, v := range m.Attributes {
		if job.TraceContextAttribute(k) {
			continue // the relay's publish writes the new attempt's trace context
		}
		attrs[k] = v
	}
	attrs[job.AttrAttempt] = strconv.Itoa(attempt)
	if j.ID != "" {
		attrs[job.AttrID] = j.ID
	}
	if prev != "" {
		attrs[job.AttrPrevTraceParent] = prev
	}
	return store.OutboxMessage{Topic: topic, Data: m.Data, Attributes: attrs, TraceParent: prev}
}

// deadLetterRaw dead-letters a delivery that is not a runnable job, then acks it once that is durable.
func (w *Worker) deadLetterRaw(ctx context.Context, rq *runQueue, m *delivery, j *job.Job, reason string, cause error) {
	q := rq.q
	ctx, span := w.tracer.Start(ctx, "pubq dead-letter", trace.WithAttributes(attribute.String("pubq.dead_reason", reason),
		attribute.String("messaging.message.id", m.ID), attribute.String("pubq.job.queue", q.Name)))
	defer span.End()
	key, kind := "", ""
	if j != nil { // an unknown kind: the job is known, its handler is not
		key, kind = j.Key, j.Kind
		span.SetAttributes(telemetry.JobAttributes(q.Name, j.Kind, j.Key, j.ID, 0)...)
		ctx = telemetry.WithJob(ctx, telemetry.Job{Queue: q.Name, Kind: j.Kind, Key: j.Key, ID: j.ID, Attempt: j.Attempt})
	}
	msg := store.OutboxMessage{Topic: q.DeadLetterTopic, Data: m.Data, Attributes: job.DeadLetterAttributes(m.Attributes, q.Name, reason, cause.Error(), 0, time.Now()),
		TraceParent: telemetry.TraceParent(span.SpanContext())}
	written, err := w.store.DeadLetter(ctx, key, q.Name, kind, reason, cause.Error(), msg)
	if written || err != nil {
		span.RecordError(cause)
		span.SetStatus(codes.Error, cause.Error())
	}
	if err != nil {
		span.RecordError(err)
		w.log.ErrorContext(ctx, "dead-lettering failed; message will be redelivered", "error", err, "reason", reason)
		m.Nack()
		return
	}
	// The kind label only names kinds this queue handles: anyone who can publish to the topic chooses
	// the others, and each would be a new series for ever.
	label := kind
	if _, handled := rq.chains[kind]; !handled {
		label = "unknown"
	}
	if !written {
		// Its key is finished or runs elsewhere: a duplicate, not a second dead letter.
		span.SetAttributes(attribute.String("pubq.duplicate", "finished or running elsewhere"))
		w.cfg.Metrics.DuplicateSkipped(ctx, q.Name, label)
		m.Ack()
		return
	}
	w.cfg.Metrics.DeadLettered(ctx, q.Name, label, reason)
	w.log.WarnContext(ctx, "message dead-lettered", "reason", reason, "error", cause.Error(), "message_id", m.ID, "queue", q.Name)
	m.Ack()
}

// previousAttemptLink is shared read-only by every retry's link (the SDK copies what it changes).
var previousAttemptLink = []attribute.KeyValue{telemetry.AttrLink.String("previous_attempt")}

// startSpan starts the handler's span as a child of the Pub/Sub client's process span, or — for a message
// published with a plain W3C traceparent and no client tracing — as a child of that context, linked to
// the process span. When the receiving client does not trace (no process span) but the publisher's did,
// the span continues the publisher's googclient_traceparent itself. A retry's span links to the failed
// attempt's span.
func (w *Worker) startSpan(ctx, mctx context.Context, m *delivery, j *job.Job, name string) (context.Context, trace.Span) {
	process := trace.SpanContextFromContext(mctx)
	var linkProcess bool
	if gtp, viaClient := m.Attributes[job.AttrPubSubTraceParent]; viaClient {
		if !process.IsValid() {
			if sc := telemetry.SpanContextFromTraceParent(gtp, m.Attributes[job.AttrPubSubTraceState]); sc.IsValid() {
				ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
			}
		}
	} else if tp, ok := m.Attributes[job.AttrTraceParent]; ok {
		if sc := telemetry.SpanContextFromTraceParent(tp, m.Attributes[job.AttrTraceState]); sc.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
			linkProcess = process.IsValid()
		}
	}
	if w.untraced {
		// The trace context found above still reaches the job's row and the retry's link.
		return ctx, trace.SpanFromContext(ctx)
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	if linkProcess {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: process}))
	}
	if prev := telemetry.SpanContextFromTraceParent(m.Attributes[job.AttrPrevTraceParent], ""); prev.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: prev, Attributes: previousAttemptLink}))
	}
	ctx, span := w.tracer.Start(ctx, name, opts...)
	if span.IsRecording() { // attributes cost allocations; an unsampled span needs none
		// Set once, without duplicates; the attempt follows when the claim says which one this is.
		attrs := telemetry.JobAttributes(j.Queue, j.Kind, j.Key, j.ID, 0) // room for one more
		if m.ID != "" {
			attrs = append(attrs, telemetry.AttrMessagingMessageID.String(m.ID))
		}
		span.SetAttributes(attrs...)
	}
	return ctx, span
}
