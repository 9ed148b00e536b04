DROP SEQUENCE kck_claims;
DROP TABLE kck_jobs;
