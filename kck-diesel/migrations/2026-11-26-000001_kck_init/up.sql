-- kck's tables. Every write takes its version from one sequence, so
-- versions grow across keys and a removed key never reuses one.
CREATE SEQUENCE kck_versions;

-- One row per data product.
CREATE TABLE kck_entries (
    key            text        PRIMARY KEY,
    primer         text        NOT NULL,
    value          jsonb       NOT NULL,
    version        bigint      NOT NULL,
    computed_at    timestamptz NOT NULL,
    changed_at     timestamptz NOT NULL,
    stale_at       timestamptz,
    refresh_at     timestamptz,
    expires_at     timestamptz,
    content_hash   bytea       NOT NULL,
    code_version   text        NOT NULL,
    compute_micros bigint      NOT NULL,
    error_message  text,
    error_at       timestamptz,
    error_attempts integer     NOT NULL DEFAULT 0
);
CREATE INDEX kck_entries_primer ON kck_entries (primer);
-- For the scheduler: the keys due for their periodic refresh.
CREATE INDEX kck_entries_refresh_at ON kck_entries (refresh_at) WHERE refresh_at IS NOT NULL;

-- "dependent read dependency while computing", looked up both ways, with
-- the content hash of the value it read.
CREATE TABLE kck_edges (
    dependent  text    NOT NULL,
    dependency text    NOT NULL,
    seen       bytea,
    position   integer NOT NULL,
    PRIMARY KEY (dependent, dependency)
);
CREATE INDEX kck_edges_dependency ON kck_edges (dependency, dependent);

-- Who computes which key right now, until when.
CREATE TABLE kck_leases (
    key        text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
