-- Placeholder on the job-logs branch: number 3 is reserved for the API archives
-- migration, which replaces this file when the branches merge (numbers run without gaps).
-- (A script of comments alone is an empty query, which asyncpg refuses.)
SELECT 1;
