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

-- name: pause_job
-- Sets a pause flag (1: the job's own, 2: its API's); the pause's clock starts with the
-- first flag. Every SET expression reads the row as it was.
UPDATE jobs SET paused = paused | ?1,
    paused_at = CASE WHEN paused = 0 THEN ?2 ELSE paused_at END
WHERE job_id = ?3 AND status IN ({active_statuses})

-- name: resume_job
-- Clears a pause flag; with the last one cleared, the time paused is added up.
UPDATE jobs SET paused = paused & ~?1,
    paused_seconds = paused_seconds
        + CASE WHEN paused != 0 AND (paused & ~?1) = 0 THEN ?2 - paused_at ELSE 0 END,
    paused_at = CASE WHEN (paused & ~?1) = 0 THEN NULL ELSE paused_at END
WHERE job_id = ?3 AND status IN ({active_statuses})

-- name: paused_by_api
-- A job admitted while its API is paused starts paused.
UPDATE jobs SET paused = 2, paused_at = created_at
WHERE key = ?1 AND EXISTS (SELECT 1 FROM paused_apis WHERE name = jobs.api_name)

-- name: active_jobs_of_api
SELECT job_id FROM jobs WHERE api_name = ? AND status IN ({active_statuses}) ORDER BY key

-- name: pause_api
INSERT INTO paused_apis (name, paused_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING

-- name: resume_api
DELETE FROM paused_apis WHERE name = ?

-- name: paused_apis
SELECT name FROM paused_apis ORDER BY name
