-- Operators' listings page through entries by primer, then key, and count
-- a primer's entries: one index serves both, and replaces the index on
-- the primer alone.
CREATE INDEX kck_entries_listing ON kck_entries (primer, key);
DROP INDEX kck_entries_primer;
-- An operator's look at one product lists its jobs; failed ones are found
-- by key too.
CREATE INDEX kck_jobs_failed ON kck_jobs (key) WHERE status = 'failed';
