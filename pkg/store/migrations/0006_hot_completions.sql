-- Completions become HOT updates. A completion (running -> succeeded) rewrote every index entry of the
-- job, because jobs_state_idx and jobs_dead_idx name state and finished_at: with those indexes a
-- claim + completion cost Postgres ~13.5 µs per job, without them ~6 (200,000 jobs in batches of 500).
-- PostgreSQL 15 updates in place (HOT) only when no indexed column changes, a partial index's
-- predicate included, so no index may tell a running job from a succeeded one:
--   * each claim round trip records the keys it claimed in one pubq.claims row, which the rescuer and
--     on-call's "running"/"stuck" read (the running jobs are among those keys); the worker deletes
--     the row once every job of it has an outcome, the rescuer sweeps rows none of whose jobs runs;
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

-- One row per claim round trip: the keys it claimed. No per-job row: that would cost every job an insert
-- and a delete (~3.5 µs of Postgres). keys is not compressed (a few KB per row; compressing costs more).
CREATE TABLE IF NOT EXISTS pubq.claims (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner text NOT NULL,
    at    timestamptz NOT NULL DEFAULT now(),
    keys  text[] NOT NULL
);
ALTER TABLE pubq.claims ALTER COLUMN keys SET STORAGE EXTERNAL;
INSERT INTO pubq.claims (owner, keys)
SELECT 'migration 0006', array_agg(key) FROM pubq.jobs WHERE state = 'running' HAVING count(*) > 0;
