-- On-call's retry-now and cancel find a job's pending delivery by key; the outbox holds every delayed
-- job and pending retry until due, so without this each such action scans all of them.
CREATE INDEX IF NOT EXISTS outbox_job_key_idx ON pubq.outbox (job_key);
