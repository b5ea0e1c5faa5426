-- Pruning finished jobs and keeping the tables bounded.

-- name: prunable_jobs
SELECT {job_columns} FROM jobs
WHERE status IN ({terminal_statuses}) AND end_time < $1 AND pruned_at IS NULL
ORDER BY end_time

-- name: delete_batches
-- A job's batches, a bounded number per transaction: (first id, last id, rows).
DELETE FROM batches WHERE id IN (SELECT id FROM batches WHERE id BETWEEN $1 AND $2 LIMIT $3)

-- name: delete_failures
DELETE FROM failures WHERE ctid IN
    (SELECT ctid FROM failures WHERE batch BETWEEN $1 AND $2 LIMIT $3)

-- name: delete_chunks
DELETE FROM chunks WHERE id BETWEEN $1 AND $2

-- name: mark_pruned
-- The job's own row stays.
UPDATE jobs SET pruned_at = $1 WHERE job_id = $2 AND status IN ({terminal_statuses})

-- name: vacuum
-- Space that pruning freed is made reusable, and empty pages at a table's end go back
-- to the file system. Runs outside a transaction.
VACUUM (TRUNCATE) batches, failures, chunks, job_logs
