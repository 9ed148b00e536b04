-- Claims take pending jobs in (priority, due time, id) order straight from
-- the index, and the next due time comes from an index of its own.
DROP INDEX kck_jobs_due;
CREATE INDEX kck_jobs_due ON kck_jobs (priority DESC, due_at, id) WHERE status = 'pending';
CREATE INDEX kck_jobs_next ON kck_jobs (due_at) WHERE status = 'pending';
