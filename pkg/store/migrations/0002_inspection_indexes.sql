-- Indexes for on-call listings and statistics. created_at and finished_at of an attempt never change
-- after insert, so these do not stop the hot path's HOT updates of a job row.
CREATE INDEX IF NOT EXISTS jobs_created_idx ON pubq.jobs (created_at);
CREATE INDEX IF NOT EXISTS attempts_finished_idx ON pubq.attempts (finished_at);
