ALTER TABLE kck_jobs DROP COLUMN deltas;
