-- Pruning finished jobs and keeping the files bounded.

-- name: prunable_jobs
SELECT {job_columns} FROM jobs
WHERE status IN ({terminal_statuses}) AND end_time < ? AND pruned_at IS NULL
ORDER BY end_time

-- name: delete_batches
-- A job's batches, a bounded number per transaction: (first id, last id, rows).
DELETE FROM batches WHERE id IN (SELECT id FROM batches WHERE id BETWEEN ? AND ? LIMIT ?)

-- name: delete_failures
DELETE FROM failures WHERE rowid IN
    (SELECT rowid FROM failures WHERE batch BETWEEN ? AND ? LIMIT ?)

-- name: delete_chunks
DELETE FROM chunks WHERE id BETWEEN ? AND ?

-- name: mark_pruned
-- The job's own row stays.
UPDATE jobs SET pruned_at = ? WHERE job_id = ? AND status IN ({terminal_statuses})

-- name: checkpoint
-- Copies the WAL into the database and truncates it, so it cannot grow without bound.
PRAGMA wal_checkpoint(TRUNCATE)

-- name: free_pages
PRAGMA freelist_count
