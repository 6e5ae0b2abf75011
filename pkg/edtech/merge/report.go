package merge

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// Report says what a merge did, or what a dry run would do. A dry run's report equals the real
// run's on the same data (only DryRun differs).
type Report struct {
	SurvivorID  int64 `json:"survivor_id"`
	DuplicateID int64 `json:"duplicate_id"`
	DryRun      bool  `json:"dry_run"`
	// AlreadyMergedInto is set when the duplicate had been merged before (into this id): the call
	// was a no-op and Tables is empty.
	AlreadyMergedInto int64 `json:"already_merged_into,omitempty"`
	// Tables lists every table that holds a student column or was touched by a fold, students
	// first, then by name.
	Tables []TableReport `json:"tables"`
	// Folds lists every row deleted by a fold, in the order deleted: Verify checks the children of
	// exactly these keys (and of the kept rows) instead of sweeping their tables.
	Folds []Fold `json:"folds,omitempty"`

	// graph is the foreign-key graph the merge read from the catalog, for VerifyReport in the same
	// transaction.
	graph *graph
}

// TableReport is one table's part of a merge.
type TableReport struct {
	Table string `json:"table"`
	// Moved counts rows whose student column(s) were rewritten from the duplicate to the survivor.
	Moved int64 `json:"moved"`
	// Folded counts rows re-pointed from a duplicate-side row that collided with the survivor's
	// row (for example the grades of the duplicate's submission) to the survivor's row.
	Folded int64 `json:"folded"`
	// Deleted counts duplicate-side rows deleted after their children were folded.
	Deleted int64 `json:"deleted"`
	// Filled counts survivor rows of one-row-per-student tables whose NULL columns were filled
	// from the duplicate's row before it was deleted.
	Filled int64 `json:"filled"`
	// SurvivorRowsBefore and DuplicateRowsBefore count rows with a student column equal to each
	// account before the merge (a message between the two counts for both); SurvivorRows counts
	// the survivor's rows after it. Zero for tables without a student column.
	SurvivorRowsBefore  int64 `json:"survivor_rows_before"`
	DuplicateRowsBefore int64 `json:"duplicate_rows_before"`
	SurvivorRows        int64 `json:"survivor_rows"`
}

// Fold is one row a merge deleted and the row its children were re-pointed to, each as a
// {"column": value} object of the row's key and every column an FK references.
type Fold struct {
	Table   string          `json:"table"`
	Kept    json.RawMessage `json:"kept"`
	Deleted json.RawMessage `json:"deleted"`
	// Row is the deleted row in full ({"column": value}, as to_jsonb gives it): what the duplicate's
	// side held that its kept twin may not (a later submission, a grade, a status), kept in the audit so
	// nothing a fold removes is lost for good.
	Row json.RawMessage `json:"row,omitempty"`
}

// Table returns the named table's report and whether it is present.
func (r *Report) Table(name string) (TableReport, bool) {
	for _, t := range r.Tables {
		if t.Table == name {
			return t, true
		}
	}
	return TableReport{}, false
}

// Totals sums the per-table counts.
func (r *Report) Totals() TableReport {
	var s TableReport
	s.Table = "total"
	for _, t := range r.Tables {
		s.Moved += t.Moved
		s.Folded += t.Folded
		s.Deleted += t.Deleted
		s.Filled += t.Filled
	}
	return s
}

// Format writes the report for humans (the on-call CLI), one line per table.
func (r *Report) Format(w io.Writer) error {
	mode := "merge"
	if r.DryRun {
		mode = "dry run"
	}
	if _, err := fmt.Fprintf(w, "%s: duplicate %d into survivor %d\n", mode, r.DuplicateID, r.SurvivorID); err != nil {
		return fmt.Errorf("merge: formatting report: %w", err)
	}
	if r.AlreadyMergedInto != 0 {
		_, err := fmt.Fprintf(w, "nothing to do: %d was already merged into %d\n", r.DuplicateID, r.AlreadyMergedInto)
		if err != nil {
			return fmt.Errorf("merge: formatting report: %w", err)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "table\tmoved\tfolded\tdeleted\tfilled\tsurvivor rows\tduplicate rows")
	for _, t := range r.Tables {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d → %d\t%d → 0\n",
			t.Table, t.Moved, t.Folded, t.Deleted, t.Filled, t.SurvivorRowsBefore, t.SurvivorRows, t.DuplicateRowsBefore)
	}
	s := r.Totals()
	fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", s.Table, s.Moved, s.Folded, s.Deleted, s.Filled)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("merge: formatting report: %w", err)
	}
	return nil
}
