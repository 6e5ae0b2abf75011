package scan

import (
	"context"
	"errors"
	"fmt"

	"github.com/pubq/pubq/pkg/edtech/merge"
)

// ErrMode: a mode other than dry_run or auto.
var ErrMode = errors.New("scan: unknown mode")

// Mode decides what happens to the pairs a scan finds.
type Mode string

const (
	// ModeDryRun plans each merge and audits the plan; no data changes. The default.
	ModeDryRun Mode = "dry_run"
	// ModeAuto merges each pair.
	ModeAuto Mode = "auto"
)

// Rule turns found pairs into account.merge requests according to the configured mode
// (`mode: dry_run|auto` in the schedule's payload).
type Rule struct {
	// Mode is dry_run or auto; empty means dry_run, so a missing setting never merges.
	Mode Mode `json:"mode" yaml:"mode"`
}

// Validate rejects unknown modes, naming the field.
func (r Rule) Validate() error {
	switch r.Mode {
	case "", ModeDryRun, ModeAuto:
		return nil
	}
	return fmt.Errorf("%w: mode %q (want %q or %q)", ErrMode, r.Mode, ModeDryRun, ModeAuto)
}

// DryRun reports whether merges under this rule are only planned.
func (r Rule) DryRun() bool { return r.Mode != ModeAuto }

// Request is the account.merge payload for p under this rule.
func (r Rule) Request(p Pair) merge.MergeRequest {
	return merge.MergeRequest{SurvivorID: p.SurvivorID, DuplicateID: p.DuplicateID, DryRun: r.DryRun()}
}

// ScanRequest is the payload of the nightly students.scan job: how many ranges to fan out into,
// and the rule for what is found.
type ScanRequest struct {
	Ranges int  `json:"ranges"`
	Mode   Mode `json:"mode"`
}

// RangeRequest is the payload of one students.scan_range job.
type RangeRequest struct {
	Range Range `json:"range"`
	Mode  Mode  `json:"mode"`
}

// Split is the students.scan handler body: one RangeRequest per range, each carrying the rule.
func Split(ctx context.Context, db Querier, req ScanRequest) ([]RangeRequest, error) {
	if err := (Rule{Mode: req.Mode}).Validate(); err != nil {
		return nil, err
	}
	ranges, err := Ranges(ctx, db, req.Ranges)
	if err != nil {
		return nil, err
	}
	out := make([]RangeRequest, len(ranges))
	for i, r := range ranges {
		out[i] = RangeRequest{Range: r, Mode: req.Mode}
	}
	return out, nil
}
