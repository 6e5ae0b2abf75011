-- Completions become HOT updates. A completion (running -> succeeded) rewrote every index entry of the
-- job, because jobs_state_idx and jobs_dead_idx name state and finished_at: with those indexes a
-- claim + completion cost Postgres ~13.5 µs per job, without them ~7 (200,000 jobs in batches of 500).
-- PostgreSQL 15 updates in place (HOT) only when no indexed column changes, a partial index's
-- predicate included, so no index may tell a running job from a succeeded one:
--   * running jobs are listed in pubq.leases instead (a row from the claim to the job's leaving
--     'running', in the same statements), which the rescuer and on-call's "running"/"stuck" read;
--   * on-call's listings of pending, scheduled, dead and cancelled jobs use indexed_state and
--     indexed_at, generated from state: NULL for running and succeeded jobs, so the hot path never
--     touches the partial indexes over them;
--   * pruning walks (queue, created_at): a job finishes after it is created.
-- Listing succeeded jobs by finish time now scans the table; finding one is by key.
-- Adding the generated columns rewrites pubq.jobs under an exclusive lock: apply this migration while
-- the workers are stopped or quiet, then start the new binaries.
ALTER TABLE pubq.jobs SET (fillfactor = 50); -- room on the page for the completion's new row version

ALTER TABLE pubq.jobs
    ADD COLUMN IF NOT EXISTS indexed_state text GENERATED ALWAYS AS (
        CASE WHEN state IN ('running', 'succeeded') THEN NULL ELSE state END) STORED,
    ADD COLUMN IF NOT EXISTS indexed_at timestamptz GENERATED ALWAYS AS (
        CASE WHEN state IN ('running', 'succeeded') THEN NULL
             WHEN state IN ('dead', 'cancelled') THEN finished_at
             ELSE created_at END) STORED;

-- Per queue (listings, stats) and across queues (bulk replay walks dead jobs in time order).
CREATE INDEX IF NOT EXISTS jobs_indexed_queue_idx ON pubq.jobs (indexed_state, queue, indexed_at, key)
    WHERE indexed_state IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_indexed_idx ON pubq.jobs (indexed_state, indexed_at, key)
    WHERE indexed_state IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue_created_idx ON pubq.jobs (queue, created_at);

DROP INDEX IF EXISTS pubq.jobs_state_idx;
DROP INDEX IF EXISTS pubq.jobs_dead_idx;
DROP INDEX IF EXISTS pubq.jobs_created_idx;

-- The keys of running jobs. No foreign key: its check would cost every claim.
CREATE TABLE IF NOT EXISTS pubq.leases (
    key text PRIMARY KEY
);
INSERT INTO pubq.leases (key) SELECT key FROM pubq.jobs WHERE state = 'running' ON CONFLICT DO NOTHING;
