-- For the scheduler. read_at: when a product was last read, as reported by
-- the caches that served it; products nobody reads stop being refreshed on
-- schedule, and are then `retired` (their refresh_at cleared) until a read
-- makes them due again.
ALTER TABLE kck_entries ADD COLUMN read_at timestamptz;
ALTER TABLE kck_entries ADD COLUMN retired boolean NOT NULL DEFAULT false;

-- The next tick of each cron schedule: the scheduler that moves it forward
-- fires the tick, once across the cluster.
CREATE TABLE kck_ticks (
    name    text        PRIMARY KEY,
    next_at timestamptz NOT NULL
);
