DROP TABLE kck_leases;
DROP TABLE kck_edges;
DROP TABLE kck_entries;
DROP SEQUENCE kck_versions;
