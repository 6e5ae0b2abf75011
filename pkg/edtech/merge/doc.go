// Package merge folds a duplicate student account into a survivor, in the caller's transaction.
//
// Nothing here lists tables: every call reads the FK graph below students from pg_catalog
// (multi-column FKs, unique constraints and unique indexes included), so a table added next year is
// covered without a code change. A "student column" is an FK column whose referenced column is
// students.id, or transitively another student column (attendance_notes.student_id reaches
// students only through attendance's composite key).
//
// The reconciliation rule for rows that would break a unique key (both accounts enrolled in the
// same course, both with a profile, both submitting the same assignment): keep the survivor's row,
// re-point the duplicate row's children at it (recursively: submissions -> grades ->
// grade_comments), then delete the duplicate row. One-row-per-student tables (a unique key made
// only of student columns) differ: the survivor's NULL columns are first filled from the
// duplicate's row. The duplicate account itself is never deleted; it is marked merged_into.
//
// Order: all folds run before the move. A fold works top-down from the colliding row: its
// children are re-pointed (folding their own collisions first, depth-first) before the row is
// deleted, so no CASCADE or SET NULL ever fires. Collisions are judged against the final state
// (every duplicate id already replaced), so the tables can be visited in any order. The move is a
// single statement over all tables, so it needs no order at all.
//
// [Merge] (or [Run], the job handler's entry point) does the work; [Plan] is its dry run, whose
// report equals the real run's; [Verify] checks a finished merge; [Report.Format] renders a report
// for the on-call CLI.
package merge
