-- The refresh queue: one row per job. A job is pending, running (claimed by
-- a worker until lease_until, under a claim token), or failed for good.
CREATE TABLE kck_jobs (
    id          bigserial   PRIMARY KEY,
    key         text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'running', 'failed')),
    due_at      timestamptz NOT NULL,
    priority    smallint    NOT NULL DEFAULT 0,
    reasons     text[]      NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    token       bigint,
    worker      text,
    lease_until timestamptz,
    error       text
);
-- One pending job per key: new requests merge into it.
CREATE UNIQUE INDEX kck_jobs_pending ON kck_jobs (key) WHERE status = 'pending';
-- Claims read due pending jobs in priority order, and running jobs whose
-- lease ran out.
CREATE INDEX kck_jobs_due ON kck_jobs (priority DESC, due_at) WHERE status = 'pending';
CREATE INDEX kck_jobs_lease ON kck_jobs (lease_until) WHERE status = 'running';
-- Claim tokens: each claim gets a new one, which fences out earlier ones.
CREATE SEQUENCE kck_claims;
