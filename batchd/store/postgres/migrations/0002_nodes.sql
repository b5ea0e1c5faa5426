-- Placeholder on the job-logs branch: number 2 is reserved for the cluster core's nodes
-- migration, which replaces this file when the branches merge (numbers run without gaps).
-- (A script of comments alone is an empty query, which asyncpg refuses.)
SELECT 1;
