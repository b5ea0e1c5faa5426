-- Job logs on a shared database (batchd.store.postgres.joblogs). A job is named by its
-- job id; its key is found by the unique index on jobs.job_id.

-- name: lock_job_logs
-- The keys of the jobs one flush writes lines for, each locked to the end of the flush's
-- transaction, in key order (two nodes' flushes never deadlock): a job's lines commit in
-- the order of their ids. (The two-number advisory locks never meet the one-number lock
-- of the migrations; a key is below 2^31, since a batch id packs it shifted by 32.)
SELECT job_id, key, pg_advisory_xact_lock(1652, key::integer)
FROM (SELECT job_id, key FROM jobs WHERE job_id = ANY($1::text[]) ORDER BY key) AS locked

-- name: job_log_lines
-- A job's lines from id $2 on, in order: at most $3 rows, and past the first one at most
-- $4 bytes (octet_length reads a stored line's size without fetching it).
SELECT id, line FROM (
    SELECT id, line, sum(octet_length(line)) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING)
        - octet_length(line) AS before
    FROM (
        SELECT id, line FROM job_logs
        WHERE job = (SELECT key FROM jobs WHERE job_id = $1) AND id >= $2
        ORDER BY id LIMIT $3
    ) AS first_rows
) AS sized
WHERE before < $4
ORDER BY id

-- name: job_log_tail
-- The id of a job's $2th line from the end: where its last $2 lines start.
SELECT id FROM job_logs WHERE job = (SELECT key FROM jobs WHERE job_id = $1)
ORDER BY id DESC OFFSET $2 - 1 LIMIT 1

-- name: job_log_size
SELECT coalesce(sum(octet_length(line)), 0) FROM job_logs
WHERE job = (SELECT key FROM jobs WHERE job_id = $1)

-- name: delete_job_logs
-- A job's lines, a bounded number per transaction.
DELETE FROM job_logs WHERE job = (SELECT key FROM jobs WHERE job_id = $1) AND id IN (
    SELECT id FROM job_logs WHERE job = (SELECT key FROM jobs WHERE job_id = $1)
    ORDER BY id LIMIT $2
)
