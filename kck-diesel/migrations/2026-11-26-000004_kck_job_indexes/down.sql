DROP INDEX kck_jobs_next;
DROP INDEX kck_jobs_due;
CREATE INDEX kck_jobs_due ON kck_jobs (priority DESC, due_at) WHERE status = 'pending';
