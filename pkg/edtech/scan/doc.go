// Package scan is the nightly duplicate-candidate scan. [Split] (the students.scan job) cuts the
// live students into id ranges with [Ranges]; [ScanRange] (the students.scan_range job) returns the
// likely duplicates whose newer account lies in one range, found by [FindCandidates] with one
// set-based statement over the partial indexes the schema migration creates. A [Rule] from the
// schedule's payload (`mode: dry_run|auto`) turns each [Pair] into an account.merge request.
//
// [FindCandidatesNaive] is the original N+1 implementation, kept so the benchmark can show what
// the set-based query buys (make -C pkg/edtech bench-200k).
package scan
