-- A job's own attributes as enqueued (not the pubq envelope), so deliveries rebuilt from the row (a
-- rescue, an operator's replay or retry-now) carry them as the first delivery did. NULL for jobs
-- published straight to Pub/Sub: the claim does not store them (it would cost every job).
ALTER TABLE pubq.jobs ADD COLUMN IF NOT EXISTS attributes jsonb;
