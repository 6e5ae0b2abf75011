package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/pubq/pubq/pkg/edtech/scan"
	"github.com/pubq/pubq/pkg/job"
)

// MergeKey is the idempotency key of a real merge of duplicate into survivor: one merge per pair,
// whoever enqueues it.
func MergeKey(survivorID, duplicateID int64) string {
	return fmt.Sprintf("merge:%d:%d", survivorID, duplicateID)
}

// PlanKey is the key of a dry-run merge planned under scope (the enqueuing job's key): each scope
// plans a pair once, and a plan never holds the pair's real MergeKey.
func PlanKey(scope string, survivorID, duplicateID int64) string {
	return derive(scope, fmt.Sprintf("merge:%d:%d:dry_run", survivorID, duplicateID))
}

// RangeKey is the key of the students.scan_range job for r enqueued by the scan whose key is scanKey.
func RangeKey(scanKey string, r scan.Range) string {
	return derive(scanKey, fmt.Sprintf("range:%d-%d", r.First, r.Last))
}

// derive appends suffix to parent; a parent too long for the result to be a valid key is replaced by
// its hash, so derived keys stay deterministic and within job.MaxKeyBytes.
func derive(parent, suffix string) string {
	if parent == "" {
		return suffix
	}
	if len(parent)+1+len(suffix) > job.MaxKeyBytes {
		sum := sha256.Sum256([]byte(parent))
		parent = "sha256:" + hex.EncodeToString(sum[:16])
	}
	return parent + "/" + suffix
}
