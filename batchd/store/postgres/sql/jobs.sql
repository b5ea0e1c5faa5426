-- Admission and status changes.

-- name: insert_job
-- The batch count is set once the chunks are in (they may come from a spool on disk).
INSERT INTO jobs (job_id, api_name, api_version, kind, status, workers, config, timeout,
    max_receive_count, priority, total_batch_count, created_at, retry_of, batch_timeout)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13)
RETURNING key

-- name: insert_chunk
INSERT INTO chunks (id, payloads) VALUES ($1, $2)

-- name: set_batch_count
-- Returns the job as stored.
UPDATE jobs SET total_batch_count = $1, queued_count = $1 WHERE key = $2
RETURNING {job_columns}

-- name: set_status
-- A terminal status is final. Returns the job's key when it moved.
UPDATE jobs SET status = $1, end_time = $2, error = coalesce($3, error)
WHERE job_id = $4 AND status NOT IN ({terminal_statuses})
RETURNING key

-- name: refund_leases
-- The leases of a job that ended are void: its batches go back, the attempt unburnt.
UPDATE batches SET state = 'queued', attempts = attempts - 1, lease_token = NULL,
    lease_expires_at = NULL
WHERE state = 'leased' AND id BETWEEN $1 AND $2

-- name: set_has_on_complete
UPDATE jobs SET has_on_complete = $1 WHERE job_id = $2
