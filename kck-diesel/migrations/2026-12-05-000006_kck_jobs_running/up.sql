-- A key's pending job waits while a job of the key runs: claims look the
-- running job up by key.
CREATE INDEX kck_jobs_running ON kck_jobs (key) WHERE status = 'running';
