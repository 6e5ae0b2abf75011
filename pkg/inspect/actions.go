package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/store"
	"github.com/pubq/pubq/pkg/telemetry"
)

// Action names, as recorded in pubq.audit.
const (
	ActionRetry  = "retry"
	ActionCancel = "cancel"
	ActionReplay = "replay"
	ActionPurge  = "purge"
)

// ActionJob says what an action did (or, on a dry run, would do) to one job.
type ActionJob struct {
	Key     string `json:"key"`
	Queue   string `json:"queue,omitempty"`
	Kind    string `json:"kind,omitempty"`
	From    string `json:"from,omitempty"` // state before; empty when the job was not found
	To      string `json:"to,omitempty"`   // state after, when changed
	Changed bool   `json:"changed"`
	Reason  string `json:"reason,omitempty"` // why it was left alone
	// Failed says the action applied to the job but could not be done (Reason says why), unlike a job
	// left alone because it was in another state.
	Failed bool `json:"failed,omitempty"`
}

// ActionResult is what an action did.
type ActionResult struct {
	Action  string      `json:"action"`
	Actor   string      `json:"actor"`
	DryRun  bool        `json:"dry_run,omitempty"`
	Matched int         `json:"matched"` // jobs named or matched by the filter
	Changed int         `json:"changed"` // jobs changed (on a dry run: that would be)
	Failed  int         `json:"failed"`  // jobs the action applied to but could not change
	Jobs    []ActionJob `json:"jobs"`
	// Until is where a filter's time window ended (by the database's clock): a confirmation that
	// passes it back acts on the same window as this preview.
	Until time.Time `json:"until,omitzero"`
}

// Summary is one line for humans, e.g. "replayed 3 of 4 jobs (1 left alone)".
func (r *ActionResult) Summary() string {
	verb := map[string]string{ActionRetry: "retried now", ActionCancel: "cancelled", ActionReplay: "replayed", ActionPurge: "purged"}[r.Action]
	if r.DryRun {
		verb = "would have " + verb
	}
	s := fmt.Sprintf("%s %d of %d job(s)", verb, r.Changed, r.Matched)
	if left := r.Matched - r.Changed - r.Failed; left > 0 {
		s += fmt.Sprintf(" (%d left alone)", left)
	}
	if r.Failed > 0 {
		s += fmt.Sprintf(" (%d failed)", r.Failed)
	}
	if r.Matched == 1 && r.Changed == 0 && len(r.Jobs) == 1 && r.Jobs[0].Reason != "" {
		s += ": " + r.Jobs[0].Reason
	}
	return s
}

func (r *ActionResult) add(j ActionJob) {
	r.Matched++
	if j.Changed {
		r.Changed++
	}
	if j.Failed {
		r.Failed++
	}
	r.Jobs = append(r.Jobs, j)
}

// checkActor returns the actor, trimmed, or an error: actions are attributable or do not happen.
func checkActor(actor string) (string, error) {
	actor = strings.TrimSpace(actor)
	if actor == "" {
		return "", ErrNoActor
	}
	if len(actor) > 200 || strings.IndexFunc(actor, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return "", fmt.Errorf("%w: the actor must be at most 200 printable characters", ErrNoActor)
	}
	return actor, nil
}

// jobRow is what actions read of a job.
type jobRow struct {
	key, id, queue, kind, state string
	attempt                     int
	payload                     []byte
	traceParent                 string
	enqueuedAt                  time.Time
	finishedAt                  *time.Time
	deadReason, lastError       string
	runAt                       time.Time
	attributes                  map[string]string // the job's own, as enqueued (nil: none stored)
}

const jobCols = `j.key, j.id, j.queue, j.kind, j.state, j.attempt, j.payload, coalesce(j.trace_parent, ''), j.enqueued_at,
	j.finished_at, coalesce(j.dead_reason, ''), coalesce(j.last_error, ''), j.run_at, j.attributes`

// dest is where a row of jobCols scans to.
func (r *jobRow) dest() []any {
	return []any{&r.key, &r.id, &r.queue, &r.kind, &r.state, &r.attempt, &r.payload, &r.traceParent,
		&r.enqueuedAt, &r.finishedAt, &r.deadReason, &r.lastError, &r.runAt, &r.attributes}
}

func scanJobs(rows pgx.Rows) ([]jobRow, error) {
	var out []jobRow
	var r jobRow
	_, err := pgx.ForEachRow(rows, r.dest(), func() error {
		out = append(out, r)
		r.attributes = nil // the next row's JSON must not be decoded into this row's map
		return nil
	})
	return out, err
}

// lockJob reads one job FOR UPDATE: the action's decision and its write see the same state.
func lockJob(ctx context.Context, tx pgx.Tx, key string) (jobRow, error) {
	rows, err := tx.Query(ctx, `SELECT `+jobCols+` FROM pubq.jobs j WHERE j.key = $1 FOR UPDATE`, key)
	if err != nil {
		return jobRow{}, err
	}
	got, err := scanJobs(rows)
	if err != nil {
		return jobRow{}, err
	}
	if len(got) == 0 {
		return jobRow{}, ErrNotFound
	}
	return got[0], nil
}

type auditRow struct {
	key    string // empty: an action on a selection (the detail says which)
	detail map[string]any
}

func writeAudit(ctx context.Context, tx pgx.Tx, actor, action string, rows []auditRow) error {
	if len(rows) == 0 {
		return nil
	}
	keys, details := make([]string, len(rows)), make([]string, len(rows))
	for n, r := range rows {
		b, err := json.Marshal(r.detail)
		if err != nil {
			return err
		}
		keys[n], details[n] = r.key, string(b)
	}
	_, err := tx.Exec(ctx, `INSERT INTO pubq.audit (actor, action, job_key, detail)
		SELECT $1, $2, nullif(r.k, ''), r.d::jsonb FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS r(k, d, n) ORDER BY r.n`,
		actor, action, keys, details)
	if err != nil {
		return fmt.Errorf("writing audit: %w", err)
	}
	return nil
}

// message builds the delivery of a job to its queue's topic from the stored row: the wire envelope of
// job.Encode, attempt (0: absent, a fresh start) and a link to the previous attempt's trace.
func (i *Inspector) message(ctx context.Context, r jobRow, attempt int, spanName string) (store.OutboxMessage, error) {
	if i.cfg == nil {
		return store.OutboxMessage{}, errors.New("no queue configuration loaded")
	}
	q, ok := i.cfg.Queue(r.queue)
	if !ok {
		return store.OutboxMessage{}, fmt.Errorf("queue %q is not in the queue configuration", r.queue)
	}
	if r.payload == nil {
		return store.OutboxMessage{}, errors.New("no payload is stored for this job")
	}
	j := &job.Job{ID: r.id, Kind: r.kind, Key: r.key, Payload: r.payload, EnqueuedAt: r.enqueuedAt, Attempt: attempt, Attributes: r.attributes}
	data, attrs, err := j.Encode()
	if err != nil {
		return store.OutboxMessage{}, fmt.Errorf("stored job does not encode: %w", err)
	}
	if r.traceParent != "" {
		attrs[job.AttrPrevTraceParent] = r.traceParent
	}
	// The new delivery's trace starts at this operator action, linked to the previous attempt.
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(telemetry.JobAttributes(r.queue, r.kind, r.key, r.id, 0)...), trace.WithNewRoot()}
	if prev := telemetry.SpanContextFromTraceParent(r.traceParent, ""); prev.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: prev}))
	}
	_, span := i.tracer.Start(ctx, spanName, opts...)
	span.End()
	return store.OutboxMessage{JobKey: r.key, Topic: q.Topic, Data: data, Attributes: attrs, TraceParent: telemetry.TraceParent(span.SpanContext())}, nil
}

func truncErr(s string) string { return job.Truncate(s, 1024) }

// RetryNow runs a scheduled job (a retry or a delayed job) now: its run_at becomes now and its outbox
// message is due now (or, if that message is gone, a new one is written). A job in any other state is
// left alone and the result says why. ErrNotFound if no job has key.
func (i *Inspector) RetryNow(ctx context.Context, actor, key string) (*ActionResult, error) {
	actor, err := checkActor(actor)
	if err != nil {
		return nil, err
	}
	res := &ActionResult{Action: ActionRetry, Actor: actor, Jobs: []ActionJob{}}
	err = pgx.BeginFunc(ctx, i.pool, func(tx pgx.Tx) error {
		r, err := lockJob(ctx, tx, key)
		if err != nil {
			return err
		}
		aj := ActionJob{Key: key, Queue: r.queue, Kind: r.kind, From: r.state}
		detail := map[string]any{"from": r.state}
		if r.state != StateScheduled {
			aj.Reason = fmt.Sprintf("job is %s, not scheduled: nothing to retry", r.state)
			detail["result"], detail["reason"] = "noop", aj.Reason
		} else {
			// The scheduled delivery is the job's outbox row; dead-letter copies are not deliveries.
			rows, err := tx.Query(ctx, `UPDATE pubq.outbox SET available_at = least(available_at, now())
				WHERE job_key = $1 AND NOT attributes ? 'pubq_dead_reason' RETURNING id`, key)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE pubq.jobs SET run_at = now() WHERE key = $1 AND state = 'scheduled'`, key); err != nil {
				return err
			}
			if len(ids) == 0 {
				// No outbox row: its delivery was published, and may be waiting in a backlog or may be
				// lost (expired from the subscription, which was recreated). A new one is written: a
				// duplicate costs the claim one lookup; a lost delivery would leave the job scheduled.
				m, err := i.message(ctx, r, r.attempt+1, "pubq retry-now")
				if err != nil {
					return fmt.Errorf("job %q has no pending delivery and a new one cannot be built: %w", key, err)
				}
				if ids, err = store.InsertOutbox(ctx, tx, m); err != nil {
					return err
				}
				detail["outbox"] = "rewritten"
			} else if err := store.NotifyOutbox(ctx, tx); err != nil {
				return err
			}
			aj.To, aj.Changed = StateScheduled, true
			detail["result"], detail["previous_run_at"], detail["outbox_ids"] = "retry_now", r.runAt, ids
		}
		res.add(aj)
		return writeAudit(ctx, tx, actor, ActionRetry, []auditRow{{key, detail}})
	})
	return res, actionErr(ActionRetry, key, err)
}

// CancelRetry cancels a scheduled job: it becomes cancelled (finished, not dead) and its pending
// delivery is deleted from the outbox. If the delivery was already published, the worker's claim finds
// the job cancelled and drops it. Other states are left alone. ErrNotFound if no job has key.
func (i *Inspector) CancelRetry(ctx context.Context, actor, key string) (*ActionResult, error) {
	actor, err := checkActor(actor)
	if err != nil {
		return nil, err
	}
	res := &ActionResult{Action: ActionCancel, Actor: actor, Jobs: []ActionJob{}}
	err = pgx.BeginFunc(ctx, i.pool, func(tx pgx.Tx) error {
		r, err := lockJob(ctx, tx, key)
		if err != nil {
			return err
		}
		aj := ActionJob{Key: key, Queue: r.queue, Kind: r.kind, From: r.state}
		detail := map[string]any{"from": r.state}
		if r.state != StateScheduled {
			aj.Reason = fmt.Sprintf("job is %s, not scheduled: nothing to cancel", r.state)
			detail["result"], detail["reason"] = "noop", aj.Reason
		} else {
			if _, err := tx.Exec(ctx, `UPDATE pubq.jobs SET state = 'cancelled', finished_at = now(), dead_reason = NULL,
				lease_owner = NULL, lease_until = NULL WHERE key = $1 AND state = 'scheduled'`, key); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `DELETE FROM pubq.outbox WHERE job_key = $1 AND NOT attributes ? 'pubq_dead_reason'`, key)
			if err != nil {
				return err
			}
			aj.To, aj.Changed = StateCancelled, true
			detail["result"], detail["outbox_deleted"], detail["run_at"] = "cancelled", tag.RowsAffected(), r.runAt
		}
		res.add(aj)
		return writeAudit(ctx, tx, actor, ActionCancel, []auditRow{{key, detail}})
	})
	return res, actionErr(ActionCancel, key, err)
}

func actionErr(action, key string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	return fmt.Errorf("pubq: %s %q: %w", action, key, err)
}

// replayBatch is how many jobs one replay or purge transaction handles.
const replayBatch = 500

// Progress is told, after each batch of a bulk action, how many jobs were handled of the total.
type Progress func(done, total int)

// Replay replays dead jobs: each keeps its key, starts again at attempt 0 in state pending with its
// fence bumped (a zombie of the dead attempt can no longer commit), and an outbox row republishes its
// stored payload to its queue's topic without pubq_attempt and with pubq_prev_traceparent set to the
// dead attempt's traceparent. Jobs that are not dead are left alone (replaying twice runs the job once).
//
// f selects the jobs: Keys (all changed in one transaction; a single key that does not exist is
// ErrNotFound), or a queue, kind and/or time window over the dead jobs' finished_at (handled in
// batches of 500, each its own transaction; jobs that die while the replay runs are not picked up).
// An empty filter needs All. With dryRun nothing is written.
func (i *Inspector) Replay(ctx context.Context, actor string, f Filter, dryRun bool) (*ActionResult, error) {
	return i.ReplayProgress(ctx, actor, f, dryRun, nil)
}

// ReplayProgress is Replay reporting progress after each batch.
func (i *Inspector) ReplayProgress(ctx context.Context, actor string, f Filter, dryRun bool, progress Progress) (*ActionResult, error) {
	actor, err := checkActor(actor)
	if err != nil {
		return nil, err
	}
	if f.State != "" && f.State != StateDead {
		return nil, fmt.Errorf("%w: replay acts on dead jobs only, not %s", ErrInvalidFilter, f.State)
	}
	f.State, f.Cursor = StateDead, ""
	return i.bulk(ctx, bulkAction{
		name: ActionReplay, actor: actor, dryRun: dryRun, progress: progress,
		eligible: func(r jobRow) string {
			if r.state != StateDead {
				return fmt.Sprintf("job is %s, not dead: nothing to replay", r.state)
			}
			return ""
		},
		apply: i.replayRows,
	}, f)
}

// replayRows replays locked dead rows in tx and returns the audit rows; a row that cannot be
// republished (no payload, unknown queue) is left dead and reported.
func (i *Inspector) replayRows(ctx context.Context, tx pgx.Tx, rows []jobRow, res *ActionResult) ([]auditRow, error) {
	var msgs []store.OutboxMessage
	var keys []string
	var audits []auditRow
	for _, r := range rows {
		aj := ActionJob{Key: r.key, Queue: r.queue, Kind: r.kind, From: r.state}
		m, err := i.message(ctx, r, 0, "pubq replay")
		if err != nil {
			aj.Reason, aj.Failed = "cannot replay: "+err.Error(), true
			res.add(aj)
			audits = append(audits, auditRow{r.key, map[string]any{"result": "skipped", "from": r.state, "reason": aj.Reason}})
			continue
		}
		aj.To, aj.Changed = StatePending, true
		res.add(aj)
		msgs, keys = append(msgs, m), append(keys, r.key)
		audits = append(audits, auditRow{r.key, map[string]any{"result": "replayed", "from": r.state, "dead_reason": r.deadReason,
			"last_error": truncErr(r.lastError), "attempts": r.attempt, "prev_traceparent": r.traceParent, "topic": m.Topic}})
	}
	if len(keys) == 0 {
		return audits, nil
	}
	tag, err := tx.Exec(ctx, `UPDATE pubq.jobs SET state = 'pending', attempt = 0, fence = fence + 1, run_at = now(),
			finished_at = NULL, started_at = NULL, lease_owner = NULL, lease_until = NULL, dead_reason = NULL
		WHERE key = ANY($1) AND state = 'dead'`, keys)
	if err != nil {
		return nil, err
	}
	if int(tag.RowsAffected()) != len(keys) {
		// Cannot happen under FOR UPDATE; refuse rather than publish a job that did not change.
		return nil, fmt.Errorf("replay changed %d of %d locked jobs", tag.RowsAffected(), len(keys))
	}
	if _, err := store.InsertOutbox(ctx, tx, msgs...); err != nil {
		return nil, err
	}
	return audits, nil
}

// Purge deletes finished jobs (succeeded, dead, cancelled) and their attempts. f selects them like
// Replay's; a State must be a finished one. Purged keys can be enqueued again as new jobs, so a
// redelivery of an old message would run again: purge only jobs older than the queue's message
// retention unless that is what you want. With dryRun nothing is written.
func (i *Inspector) Purge(ctx context.Context, actor string, f Filter, dryRun bool) (*ActionResult, error) {
	return i.PurgeProgress(ctx, actor, f, dryRun, nil)
}

// PurgeProgress is Purge reporting progress after each batch.
func (i *Inspector) PurgeProgress(ctx context.Context, actor string, f Filter, dryRun bool, progress Progress) (*ActionResult, error) {
	actor, err := checkActor(actor)
	if err != nil {
		return nil, err
	}
	if f.State != "" && !finishedState(f.State) {
		return nil, fmt.Errorf("%w: purge deletes finished jobs (succeeded, dead, cancelled), not %s", ErrInvalidFilter, f.State)
	}
	f.Cursor = ""
	return i.bulk(ctx, bulkAction{
		name: ActionPurge, actor: actor, dryRun: dryRun, progress: progress,
		eligible: func(r jobRow) string {
			if !finishedState(r.state) {
				return fmt.Sprintf("job is %s, not finished: not purged", r.state)
			}
			return ""
		},
		apply: purgeRows,
	}, f)
}

func purgeRows(ctx context.Context, tx pgx.Tx, rows []jobRow, res *ActionResult) ([]auditRow, error) {
	keys := make([]string, len(rows))
	var audits []auditRow
	for n, r := range rows {
		keys[n] = r.key
		res.add(ActionJob{Key: r.key, Queue: r.queue, Kind: r.kind, From: r.state, Changed: true})
		audits = append(audits, auditRow{r.key, map[string]any{"result": "purged", "from": r.state, "finished_at": r.finishedAt}})
	}
	if _, err := tx.Exec(ctx, `DELETE FROM pubq.attempts WHERE job_key = ANY($1)`, keys); err != nil {
		return nil, err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM pubq.jobs WHERE key = ANY($1) AND state IN ('succeeded', 'dead', 'cancelled')`, keys)
	if err != nil {
		return nil, err
	}
	if int(tag.RowsAffected()) != len(keys) {
		return nil, fmt.Errorf("purge deleted %d of %d locked jobs", tag.RowsAffected(), len(keys))
	}
	return audits, nil
}

// bulkAction is Replay or Purge: which rows qualify and what to do to them.
type bulkAction struct {
	name, actor string
	dryRun      bool
	progress    Progress
	eligible    func(jobRow) string // "" or why the row is left alone
	apply       func(ctx context.Context, tx pgx.Tx, rows []jobRow, res *ActionResult) ([]auditRow, error)
}

func (i *Inspector) bulk(ctx context.Context, a bulkAction, f Filter) (*ActionResult, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	res := &ActionResult{Action: a.name, Actor: a.actor, DryRun: a.dryRun, Jobs: []ActionJob{}}
	var err error
	if len(f.Keys) > 0 {
		err = i.bulkKeys(ctx, a, f, res)
	} else {
		if !f.bounded() && !f.All {
			return nil, ErrUnboundedFilter
		}
		err = i.bulkFilter(ctx, a, f, res)
	}
	if err != nil {
		if len(f.Keys) == 1 && errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, f.Keys[0])
		}
		// Batches committed before the failure stay done; res says which.
		return res, fmt.Errorf("pubq: %s: %w", a.name, err)
	}
	return res, nil
}

// bulkKeys acts on named jobs in one transaction, reporting each key (found or not).
func (i *Inspector) bulkKeys(ctx context.Context, a bulkAction, f Filter, res *ActionResult) error {
	keys := dedupe(f.Keys)
	return pgx.BeginFunc(ctx, i.pool, func(tx pgx.Tx) error {
		lock := " FOR UPDATE"
		if a.dryRun {
			lock = ""
		}
		rows, err := tx.Query(ctx, `SELECT `+jobCols+` FROM pubq.jobs j WHERE j.key = ANY($1) ORDER BY j.key`+lock, keys)
		if err != nil {
			return err
		}
		found, err := scanJobs(rows)
		if err != nil {
			return err
		}
		if len(keys) == 1 && len(found) == 0 {
			return ErrNotFound
		}
		byKey := make(map[string]jobRow, len(found))
		for _, r := range found {
			byKey[r.key] = r
		}
		var todo []jobRow
		var audits []auditRow
		skip := func(aj ActionJob) {
			res.add(aj)
			audits = append(audits, auditRow{aj.Key, map[string]any{"result": "noop", "from": aj.From, "reason": aj.Reason}})
		}
		for _, k := range keys {
			r, ok := byKey[k]
			switch {
			case !ok:
				skip(ActionJob{Key: k, Reason: "no job has this key"})
			case f.Queue != "" && r.queue != f.Queue:
				skip(ActionJob{Key: k, Queue: r.queue, Kind: r.kind, From: r.state, Reason: "job is on queue " + r.queue + ", not " + f.Queue})
			case f.Kind != "" && r.kind != f.Kind:
				skip(ActionJob{Key: k, Queue: r.queue, Kind: r.kind, From: r.state, Reason: "job is of kind " + r.kind + ", not " + f.Kind})
			case a.eligible(r) != "":
				skip(ActionJob{Key: k, Queue: r.queue, Kind: r.kind, From: r.state, Reason: a.eligible(r)})
			case f.State != "" && r.state != f.State:
				skip(ActionJob{Key: k, Queue: r.queue, Kind: r.kind, From: r.state, Reason: "job is " + r.state + ", not " + f.State})
			default:
				todo = append(todo, r)
			}
		}
		if a.dryRun {
			dryRun(a.name, todo, res)
			return nil
		}
		if len(todo) > 0 {
			more, err := a.apply(ctx, tx, todo, res)
			if err != nil {
				return err
			}
			audits = append(audits, more...)
		}
		if a.progress != nil {
			a.progress(len(keys), len(keys))
		}
		return writeAudit(ctx, tx, a.actor, a.name, audits)
	})
}

// dryRun reports what apply would do to rows without doing it.
func dryRun(action string, rows []jobRow, res *ActionResult) {
	for _, r := range rows {
		to := StatePending
		if action == ActionPurge {
			to = ""
		}
		res.add(ActionJob{Key: r.key, Queue: r.queue, Kind: r.kind, From: r.state, To: to, Changed: true})
	}
}

// bulkFilter walks the matching jobs in (time, key) order, a batch per transaction. The window ends
// when the action starts, so jobs that reach the state during the walk (a replayed job dying again)
// are not acted on twice.
func (i *Inspector) bulkFilter(ctx context.Context, a bulkAction, f Filter, res *ActionResult) error {
	var start time.Time
	if err := i.pool.QueryRow(ctx, `SELECT now()`).Scan(&start); err != nil {
		return err
	}
	if f.Until.IsZero() || f.Until.After(start) {
		f.Until = start
	}
	res.Until = f.Until
	if !f.Since.IsZero() && !f.Until.After(f.Since) {
		return nil // the window is in the future: nothing matches
	}
	stateCond := ""
	if f.State == "" && a.name == ActionPurge {
		stateCond = " AND j.state IN ('succeeded', 'dead', 'cancelled')"
	}
	var args []any
	where := f.where(&args) + stateCond
	total := 0
	if err := i.pool.QueryRow(ctx, `SELECT count(*) FROM pubq.jobs j WHERE `+where, args...).Scan(&total); err != nil {
		return err
	}
	if a.progress != nil {
		a.progress(0, total)
	}
	t := f.timeExpr()
	lock := " FOR UPDATE OF j"
	if a.dryRun {
		lock = ""
	}
	var curT time.Time
	var curKey string
	first, done := true, 0
	walkErr := func() error {
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			qargs := append([]any(nil), args...)
			cond := where
			if !first {
				qargs = append(qargs, curT, curKey)
				cond += fmt.Sprintf(" AND (%s, j.key) > ($%d, $%d)", t, len(qargs)-1, len(qargs))
			}
			qargs = append(qargs, replayBatch)
			sql := fmt.Sprintf(`SELECT %s, %s FROM pubq.jobs j WHERE %s ORDER BY %s, j.key LIMIT $%d%s`,
				jobCols, t, cond, t, len(qargs), lock)
			n := 0
			// The batch's outcome joins res only once its transaction commits: an interrupted batch
			// changed nothing and must not be counted (in the result or the summary audit row).
			batchRes := &ActionResult{Action: res.Action, Actor: res.Actor, DryRun: res.DryRun}
			err := pgx.BeginFunc(ctx, i.pool, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, sql, qargs...)
				if err != nil {
					return err
				}
				var batch []jobRow
				var r jobRow
				var at time.Time
				_, err = pgx.ForEachRow(rows, append(r.dest(), &at), func() error {
					batch = append(batch, r)
					r.attributes = nil
					curT, curKey = at, r.key
					return nil
				})
				if err != nil {
					return err
				}
				n = len(batch)
				var todo []jobRow
				for _, r := range batch {
					if a.eligible(r) == "" { // re-checked: the row may have changed since the count
						todo = append(todo, r)
					}
				}
				if len(todo) == 0 {
					return nil
				}
				if a.dryRun {
					dryRun(a.name, todo, batchRes)
					return nil
				}
				audits, err := a.apply(ctx, tx, todo, batchRes)
				if err != nil {
					return err
				}
				return writeAudit(ctx, tx, a.actor, a.name, audits)
			})
			if err != nil {
				return err
			}
			for _, j := range batchRes.Jobs {
				res.add(j)
			}
			first = false
			done += n
			if a.progress != nil && n > 0 {
				a.progress(done, max(total, done))
			}
			if n == 0 {
				return nil
			}
		}
	}()
	if a.dryRun || res.Matched == 0 {
		return walkErr
	}
	// One row for the selection as a whole, so "who replayed the payments on Tuesday" has an answer,
	// also when the walk stopped part way (an error, Ctrl-C): the batches before it are committed.
	detail := map[string]any{"result": "bulk", "filter": f, "matched": res.Matched, "changed": res.Changed}
	if walkErr != nil {
		detail["result"], detail["error"] = "bulk_interrupted", walkErr.Error()
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := pgx.BeginFunc(wctx, i.pool, func(tx pgx.Tx) error {
		return writeAudit(wctx, tx, a.actor, a.name, []auditRow{{"", detail}})
	}); err != nil {
		return errors.Join(walkErr, err)
	}
	return walkErr
}

func dedupe(keys []string) []string {
	seen := make(map[string]bool, len(keys))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}
