package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
	"github.com/pubq/pubq/pkg/worker"
)

// The job kinds (queues.yaml routes them: account.merge and students.scan on default,
// students.scan_range on bulk).
const (
	KindMerge     = "account.merge"
	KindScan      = "students.scan"
	KindScanRange = "students.scan_range"
)

// MaxRanges is the most ranges one students.scan fans out into: one enqueue batch. The nightly
// schedule asks for 64; thousands would be a typo, not a plan.
const MaxRanges = publish.MaxBatch

// Enqueuer enqueues jobs inside the running job's transaction; *publish.Client is one.
type Enqueuer interface {
	EnqueueTx(ctx context.Context, tx pgx.Tx, rs ...publish.Request) ([]publish.Result, error)
}

// Config configures the handlers.
type Config struct {
	// Publisher enqueues the fan-out (range jobs, merge jobs) in the job's transaction. Required.
	Publisher Enqueuer
	// SkipVerify turns off merge.Verify after each real merge (it reads only the pair's rows).
	SkipVerify bool
	// VerifyDatabase verifies each real merge with merge.VerifyDatabase, which sweeps every row
	// below students for orphans: about 70 merges' worth of database time at 200k students.
	VerifyDatabase bool
	// Logger receives one line per merge and per fan-out, logged with the worker's context: a
	// telemetry.NewLogger logger adds the job's fields (job_key, …) and trace from it. Default: slog.Default().
	Logger *slog.Logger
}

// Handlers are the edtech jobs' handlers.
type Handlers struct {
	cfg Config
}

// New checks cfg and returns the handlers.
func New(cfg Config) (*Handlers, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("jobs: Config.Publisher is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Handlers{cfg: cfg}, nil
}

// Register registers the three kinds on mux as transactional handlers.
func (h *Handlers) Register(mux *worker.Mux) {
	mux.HandleTx(KindMerge, worker.TxHandlerFunc(h.Merge))
	mux.HandleTx(KindScan, worker.TxHandlerFunc(h.Scan))
	mux.HandleTx(KindScanRange, worker.TxHandlerFunc(h.ScanRange))
}

// Merge is the account.merge handler: merge.Run in the job's transaction (so the merge commits with
// the job's completion, exactly once), following a merged-away survivor, then merge.Verify after a
// real merge. A pair merged before is a successful no-op; errors retrying cannot fix (bad or
// missing ids) dead-letter the job at once; a failed verification fails the attempt, which rolls
// the merge back, and is retried.
func (h *Handlers) Merge(ctx context.Context, tx pgx.Tx, j *job.Job) error {
	var req merge.MergeRequest
	if err := j.Unmarshal(&req); err != nil {
		return err
	}
	res, err := MergePair(ctx, tx, req, MergeOptions{Verify: !h.cfg.SkipVerify, VerifyDatabase: h.cfg.VerifyDatabase, FollowSurvivor: true})
	if err != nil {
		if merge.IsPermanent(err) {
			return job.Permanent(err)
		}
		return err
	}
	rep := res.Report
	t := rep.Totals()
	// The worker's ctx names the job (telemetry.WithJob): job_key and the rest come from it.
	h.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "account merge",
		slog.Int64("survivor_id", rep.SurvivorID), slog.Int64("duplicate_id", rep.DuplicateID),
		slog.Bool("dry_run", rep.DryRun), slog.Int64("already_merged_into", rep.AlreadyMergedInto),
		slog.Int64("requested_survivor_id", res.RequestedSurvivorID), slog.Bool("verified", res.Verified),
		slog.Int64("moved", t.Moved), slog.Int64("folded", t.Folded), slog.Int64("deleted", t.Deleted), slog.Int64("filled", t.Filled))
	return nil
}

// Scan is the students.scan handler: split the live students into ranges and enqueue one
// students.scan_range job per range in the job's transaction, keyed by this job's key and the range.
func (h *Handlers) Scan(ctx context.Context, tx pgx.Tx, j *job.Job) error {
	var req scan.ScanRequest
	if err := j.Unmarshal(&req); err != nil {
		return err
	}
	if req.Ranges > MaxRanges {
		return job.Permanent(fmt.Errorf("%w: %d ranges asked, at most %d", scan.ErrRanges, req.Ranges, MaxRanges))
	}
	if req.Mode == "" {
		req.Mode = scan.ModeDryRun // explicit in every range job's payload, for whoever reads it
	}
	ranges, err := scan.Split(ctx, tx, req)
	if errors.Is(err, scan.ErrRanges) || errors.Is(err, scan.ErrMode) {
		return job.Permanent(err)
	}
	if err != nil {
		return err
	}
	reqs := make([]publish.Request, len(ranges))
	for i, rr := range ranges {
		payload, err := json.Marshal(rr)
		if err != nil {
			return job.Permanent(fmt.Errorf("jobs: encoding range %d: %w", i, err))
		}
		reqs[i] = publish.Request{Kind: KindScanRange, Key: RangeKey(j.Key, rr.Range), Payload: payload}
	}
	fresh, err := h.enqueue(ctx, tx, reqs)
	if err != nil {
		return err
	}
	h.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "students scan split",
		slog.String("mode", string(req.Mode)), slog.Int("ranges", len(ranges)), slog.Int("enqueued", fresh))
	return nil
}

// ScanRange is the students.scan_range handler: the candidate pairs of one range, each enqueued as
// an account.merge job in the job's transaction; a real merge under the pair's key (MergeKey), a dry
// run under this job's key and the pair (PlanKey).
func (h *Handlers) ScanRange(ctx context.Context, tx pgx.Tx, j *job.Job) error {
	var req scan.RangeRequest
	if err := j.Unmarshal(&req); err != nil {
		return err
	}
	rule := scan.Rule{Mode: req.Mode}
	if err := errors.Join(req.Range.Validate(), rule.Validate()); err != nil {
		return job.Permanent(err)
	}
	pairs, err := scan.ScanRange(ctx, tx, req.Range)
	if err != nil {
		return err
	}
	reqs := make([]publish.Request, len(pairs))
	for i, p := range pairs {
		if reqs[i], err = MergeJob(rule.Request(p), j.Key); err != nil {
			return job.Permanent(err)
		}
	}
	fresh, err := h.enqueue(ctx, tx, reqs)
	if err != nil {
		return err
	}
	h.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "students scan range",
		slog.Int64("first", req.Range.First), slog.Int64("last", req.Range.Last),
		slog.Bool("dry_run", rule.DryRun()), slog.Int("pairs", len(pairs)), slog.Int("enqueued", fresh))
	return nil
}

// MergeJob is the account.merge job for req: the payload is req's JSON (byte for byte the same
// wherever it is built, so the same pair enqueued twice is a duplicate, not a key conflict) under
// MergeKey, or for a dry run under PlanKey(scope, ...).
func MergeJob(req merge.MergeRequest, scope string) (publish.Request, error) {
	if err := req.Validate(); err != nil {
		return publish.Request{}, err
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return publish.Request{}, fmt.Errorf("jobs: encoding a merge request: %w", err)
	}
	key := MergeKey(req.SurvivorID, req.DuplicateID)
	if req.DryRun {
		key = PlanKey(scope, req.SurvivorID, req.DuplicateID)
	}
	return publish.Request{Kind: KindMerge, Key: key, Payload: payload}, nil
}

// enqueue enqueues rs in the job's transaction, in batches the client accepts, and returns how
// many were new (the rest were enqueued before under the same keys).
func (h *Handlers) enqueue(ctx context.Context, tx pgx.Tx, rs []publish.Request) (int, error) {
	fresh := 0
	for len(rs) > 0 {
		n := min(len(rs), publish.MaxBatch)
		res, err := h.cfg.Publisher.EnqueueTx(ctx, tx, rs[:n]...)
		if err != nil {
			err = fmt.Errorf("jobs: enqueueing %d %s jobs: %w", n, rs[0].Kind, err)
			// A key taken with another payload, a kind no queue routes, an invalid job: the same
			// again on every attempt. Dead-letter now; replay after the fix.
			if errors.Is(err, publish.ErrKeyConflict) || errors.Is(err, publish.ErrUnknownKind) || errors.Is(err, publish.ErrInvalid) {
				return 0, job.Permanent(err)
			}
			return 0, err
		}
		for _, r := range res {
			if !r.Duplicate {
				fresh++
			}
		}
		rs = rs[n:]
	}
	return fresh, nil
}
