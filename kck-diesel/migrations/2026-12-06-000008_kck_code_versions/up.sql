-- The code versions of each primer that caches on this store run: the
-- latest start of a cache running each, and when one was last there. The
-- newest version among those still there wins a rolling deploy (see
-- `Coordination::newest_code_version`). Additive, like every migration:
-- an older binary never reads it.
CREATE TABLE kck_code_versions (
    primer       text        NOT NULL,
    code_version text        NOT NULL,
    started_at   timestamptz NOT NULL,
    seen_at      timestamptz NOT NULL,
    PRIMARY KEY (primer, code_version)
);
