// Package jobs is the edtech platform's pubq handlers: account.merge, and the nightly duplicate scan
// students.scan, which fans out into students.scan_range jobs, which fan out into account.merge
// jobs. Every handler is transactional: its reads, its writes and the jobs it enqueues commit
// together with the job's completion, so each effect happens once however often Pub/Sub delivers.
//
// Keys carry the idempotency across the fan-out. A range job's key is its scan's key plus the range,
// so a scan enqueues each range once; a real merge's key is the pair (merge:<survivor>:<duplicate>),
// so however many scans find a pair, and whatever else enqueues it (pubqctl merge --enqueue), it is
// merged once. A dry run's key is its range job's key plus the pair: each scan plans each pair once,
// and a plan never takes the key its real merge will need.
//
// The worker binary registers the handlers ([Handlers.Register]); pubqctl merge runs the same
// [MergePair] directly against the database.
package jobs
