-- Admission and status changes.

-- name: insert_job
-- The batch count is set once the chunks are in (they may come from a spool on disk).
INSERT INTO jobs (job_id, api_name, api_version, kind, status, workers, config, timeout,
    max_receive_count, priority, total_batch_count, created_at, retry_of, batch_timeout)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)

-- name: insert_chunk
INSERT INTO chunks (id, payloads) VALUES (?, ?)

-- name: set_batch_count
UPDATE jobs SET total_batch_count = ?1, queued_count = ?1 WHERE key = ?2

-- name: job_by_key
SELECT {job_columns} FROM jobs WHERE key = ?

-- name: set_status
-- A terminal status is final.
UPDATE jobs SET status = ?, end_time = ?, error = coalesce(?, error)
WHERE job_id = ? AND status NOT IN ({terminal_statuses})

-- name: refund_leases
-- The leases of a job that ended are void: its batches go back, the attempt unburnt.
UPDATE batches SET state = 'queued', attempts = attempts - 1, lease_token = NULL,
    lease_expires_at = NULL
WHERE state = 'leased' AND id BETWEEN ? AND ?

-- name: set_has_on_complete
UPDATE jobs SET has_on_complete = ? WHERE job_id = ?
