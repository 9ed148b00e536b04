DROP INDEX kck_jobs_failed;
CREATE INDEX kck_entries_primer ON kck_entries (primer);
DROP INDEX kck_entries_listing;
