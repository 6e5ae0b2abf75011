-- On-call's bulk replay walks dead jobs in (finished_at, key) order, a batch at a time; across queues
-- the (state, queue, finished_at) index cannot give that order, so every batch sorted every dead job.
-- Partial: a completion (running -> succeeded) inserts nothing here; only dead-lettering pays.
CREATE INDEX IF NOT EXISTS jobs_dead_idx ON pubq.jobs (finished_at, key) WHERE state = 'dead';
