package merge_test

import (
	"os"

	"github.com/pubq/pubq/pkg/edtech/merge"
)

func ExampleReport_Format() {
	rep := &merge.Report{SurvivorID: 17, DuplicateID: 42, Tables: []merge.TableReport{
		{Table: "enrollments", Moved: 1, Deleted: 1, SurvivorRowsBefore: 1, DuplicateRowsBefore: 2, SurvivorRows: 2},
		{Table: "grade_comments", Folded: 2},
	}}
	_ = rep.Format(os.Stdout)
	// Output:
	// merge: duplicate 42 into survivor 17
	// table           moved  folded  deleted  filled  survivor rows  duplicate rows
	// enrollments     1      0       1        0       1 → 2          2 → 0
	// grade_comments  0      2       0        0       0 → 0          0 → 0
	// total           1      2       1        0
}
