-- Deltas carried by refresh jobs, in order: a JSON array of
-- {"from": key, "before": hash, "after": hash, "delta": <the delta>}.
ALTER TABLE kck_jobs ADD COLUMN deltas jsonb NOT NULL DEFAULT '[]'::jsonb;
