DROP TABLE kck_code_versions;
