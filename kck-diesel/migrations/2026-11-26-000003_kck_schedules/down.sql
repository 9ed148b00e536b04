DROP TABLE kck_ticks;
ALTER TABLE kck_entries DROP COLUMN retired;
ALTER TABLE kck_entries DROP COLUMN read_at;
