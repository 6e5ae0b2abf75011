package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pubq/pubq/pkg/edtech/merge"
)

// maxHops bounds how far FollowSurvivor follows merged_into; merges only ever point at live
// accounts, so a longer chain means the data is damaged.
const maxHops = 16

// MergeOptions tune MergePair.
type MergeOptions struct {
	// Verify runs merge.Verify in tx after a real merge and fails with merge.ErrVerify if it finds
	// a problem. It reads the pair's rows through indexes: milliseconds, like the merge.
	Verify bool
	// VerifyDatabase makes Verify run merge.VerifyDatabase instead, whose orphan check reads every
	// row below students (at 200k students about 0.7 s): for on-call checks, not the job.
	VerifyDatabase bool
	// FollowSurvivor: when the survivor has itself been merged away (merge.ErrSurvivorMerged),
	// merge the duplicate into the account the survivor ended up in. A scan pairs each duplicate
	// with its oldest live match, so two pairs can form a chain (A <- B by e-mail, B <- C by name);
	// following makes the outcome independent of the order in which their jobs run.
	FollowSurvivor bool
}

// MergeResult is what MergePair did.
type MergeResult struct {
	// Report is merge.Run's report; Report.SurvivorID is the account merged into.
	Report *merge.Report `json:"report"`
	// RequestedSurvivorID is the survivor asked for when FollowSurvivor redirected the merge to
	// Report.SurvivorID; 0 when it did not.
	RequestedSurvivorID int64 `json:"requested_survivor_id,omitempty"`
	// Verified is true when merge.Verify (or VerifyDatabase) ran and passed.
	Verified bool `json:"verified"`
}

// MergePair merges req in tx: merge.Run, following a merged-away survivor if asked, then
// merge.Verify after a real merge if asked. On error tx is left as it was (every attempt runs in
// a savepoint, so the rows a failed attempt locked are released too) and the caller decides
// whether to roll back; errors for which merge.IsPermanent holds will fail the same way again.
func MergePair(ctx context.Context, tx pgx.Tx, req merge.MergeRequest, opts MergeOptions) (*MergeResult, error) {
	res := &MergeResult{}
	cur := req
	for hop := 0; ; hop++ {
		rep, err := runInSavepoint(ctx, tx, cur)
		if err == nil {
			res.Report = rep
			break
		}
		if !opts.FollowSurvivor || !errors.Is(err, merge.ErrSurvivorMerged) {
			return nil, err
		}
		if hop == maxHops {
			return nil, fmt.Errorf("%w: more than %d hops from %d", err, maxHops, req.SurvivorID)
		}
		next, err := mergedInto(ctx, tx, cur.SurvivorID)
		if err != nil {
			return nil, err
		}
		if next == 0 {
			continue // un-merged meanwhile (by hand): try it again
		}
		if next == req.DuplicateID {
			return nil, fmt.Errorf("%w: survivor %d was merged into duplicate %d; they are one account already",
				merge.ErrSameStudent, cur.SurvivorID, req.DuplicateID)
		}
		res.RequestedSurvivorID = req.SurvivorID
		cur.SurvivorID = next
	}
	rep := res.Report
	if opts.Verify && !rep.DryRun && rep.AlreadyMergedInto == 0 {
		if err := merge.VerifyReport(ctx, tx, rep, opts.VerifyDatabase); err != nil {
			return nil, err
		}
		res.Verified = true
	}
	return res, nil
}

func runInSavepoint(ctx context.Context, tx pgx.Tx, req merge.MergeRequest) (*merge.Report, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("jobs: savepoint: %w", err)
	}
	rep, err := merge.Run(ctx, sp, req)
	if err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return nil, errors.Join(err, fmt.Errorf("jobs: rolling back to savepoint: %w", rerr))
		}
		return nil, err
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, fmt.Errorf("jobs: releasing savepoint: %w", err)
	}
	return rep, nil
}

// mergedInto reads the account id merged into, 0 when id is live.
func mergedInto(ctx context.Context, tx pgx.Tx, id int64) (int64, error) {
	var into *int64
	err := tx.QueryRow(ctx, `SELECT `+pgx.Identifier{merge.MergedIntoColumn}.Sanitize()+`::bigint FROM `+
		pgx.Identifier{merge.StudentsTable}.Sanitize()+` WHERE id = $1`, id).Scan(&into)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("%w: survivor %d", merge.ErrNotFound, id)
	case err != nil:
		return 0, fmt.Errorf("jobs: reading where %d was merged: %w", id, err)
	case into == nil:
		return 0, nil
	}
	return *into, nil
}
