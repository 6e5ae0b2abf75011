package merge

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// MergeRequest is the payload of an account.merge job.
type MergeRequest struct {
	SurvivorID  int64 `json:"survivor_id"`
	DuplicateID int64 `json:"duplicate_id"`
	DryRun      bool  `json:"dry_run"`
}

// Validate checks the ids before any database work.
func (r MergeRequest) Validate() error {
	switch {
	case r.SurvivorID <= 0:
		return fmt.Errorf("%w: survivor_id must be positive, got %d", ErrInvalidRequest, r.SurvivorID)
	case r.DuplicateID <= 0:
		return fmt.Errorf("%w: duplicate_id must be positive, got %d", ErrInvalidRequest, r.DuplicateID)
	case r.SurvivorID == r.DuplicateID:
		return fmt.Errorf("%w: %d", ErrSameStudent, r.SurvivorID)
	}
	return nil
}

// Run is the account.merge handler body: validate, then Merge in the job's transaction tx, which
// the runtime commits together with the job's completion. Re-delivering a finished merge is a
// no-op whose report carries AlreadyMergedInto.
func Run(ctx context.Context, tx pgx.Tx, req MergeRequest) (*Report, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return Merge(ctx, tx, req.SurvivorID, req.DuplicateID, Options{DryRun: req.DryRun})
}

// IsPermanent reports whether retrying err cannot help (bad ids, survivor merged away): the
// runtime should dead-letter such a job instead of retrying it.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrSameStudent) ||
		errors.Is(err, ErrNotFound) || errors.Is(err, ErrSurvivorMerged)
}
