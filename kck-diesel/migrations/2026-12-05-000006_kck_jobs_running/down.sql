DROP INDEX kck_jobs_running;
