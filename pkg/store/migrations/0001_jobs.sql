-- pubq's schema. One row per idempotency key in pubq.jobs is the source of truth for a job's state;
-- pubq.outbox holds messages to publish after a commit (enqueue-in-tx, delayed jobs, retries,
-- dead letters); pubq.attempts keeps each finished-with-failure attempt for on-call.
CREATE SCHEMA IF NOT EXISTS pubq;

CREATE TABLE pubq.jobs (
    key           text PRIMARY KEY,
    id            text NOT NULL,
    queue         text NOT NULL,
    kind          text NOT NULL,
    -- pending: enqueued, waiting for delivery; scheduled: waiting for run_at (delayed job or retry);
    -- running: claimed under a lease; succeeded / dead / cancelled: finished.
    state         text NOT NULL CHECK (state IN ('pending', 'scheduled', 'running', 'succeeded', 'dead', 'cancelled')),
    attempt       int NOT NULL DEFAULT 0,       -- attempts started so far
    max_attempts  int NOT NULL DEFAULT 0,       -- 0: the queue config decides
    fence         bigint NOT NULL DEFAULT 0,    -- bumped at every claim; completions must present it
    run_at        timestamptz NOT NULL DEFAULT now(),
    lease_owner   text,
    lease_until   timestamptz,
    payload       bytea,
    payload_hash  bytea,                        -- sha256 of the payload as enqueued, for key conflicts
    last_error    text,
    dead_reason   text,
    trace_parent  text,                         -- W3C traceparent of the latest attempt (or the enqueue)
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
) WITH (fillfactor = 70); -- room for HOT updates: a job's row is rewritten at claim and at completion

-- Serves pruning (finished_at), rescue (running + lease_until) and on-call listings by state.
CREATE INDEX jobs_state_idx ON pubq.jobs (state, queue, finished_at);

CREATE TABLE pubq.attempts (
    job_key      text NOT NULL,
    attempt      int NOT NULL,
    fence        bigint NOT NULL,
    worker       text,
    started_at   timestamptz,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text NOT NULL,
    error        text,
    trace_parent text,
    PRIMARY KEY (job_key, fence)
);

CREATE TABLE pubq.outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_key          text,
    topic            text NOT NULL,
    data             bytea NOT NULL,
    attributes       jsonb NOT NULL DEFAULT '{}',
    trace_parent     text,                     -- the relay publishes as a child of this context
    available_at     timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    publish_attempts int NOT NULL DEFAULT 0,
    last_error       text
);
CREATE INDEX outbox_available_idx ON pubq.outbox (available_at);

-- Operator actions (retry, cancel, replay, purge): who, when, what.
CREATE TABLE pubq.audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    job_key text,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_job_idx ON pubq.audit (job_key, at);
