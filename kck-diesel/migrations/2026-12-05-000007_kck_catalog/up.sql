-- Operators' listings page through entries by primer, then key, and count
-- a primer's entries: one index serves both, and replaces the index on
-- the primer alone.
CREATE INDEX kck_entries_listing ON kck_entries (primer, key);
DROP INDEX kck_entries_primer;
