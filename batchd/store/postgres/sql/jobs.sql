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

-- name: pause_job
-- Sets a pause flag (1: the job's own, 2: its API's); the pause's clock starts with the
-- first flag. Every SET expression reads the row as it was.
UPDATE jobs SET paused = paused | $1::integer,
    paused_at = CASE WHEN paused = 0 THEN $2::double precision ELSE paused_at END
WHERE job_id = $3 AND status IN ({active_statuses})

-- name: resume_job
-- Clears a pause flag; with the last one cleared, the time paused is added up.
UPDATE jobs SET paused = paused & ~$1::integer,
    paused_seconds = paused_seconds
        + CASE WHEN paused != 0 AND (paused & ~$1::integer) = 0
            THEN $2::double precision - paused_at ELSE 0 END,
    paused_at = CASE WHEN (paused & ~$1::integer) = 0 THEN NULL ELSE paused_at END
WHERE job_id = $3 AND status IN ({active_statuses})

-- name: api_pause_lock
-- An API's pause and its admissions take turns (admissions share it): a job admitted
-- while its API is being paused is either seen paused by the admission or by the pause.
SELECT pg_advisory_xact_lock(hashtext('batchd pause ' || $1))

-- name: api_pause_lock_shared
SELECT pg_advisory_xact_lock_shared(hashtext('batchd pause ' || $1))

-- name: paused_by_api
-- A job admitted while its API is paused starts paused.
UPDATE jobs SET paused = 2, paused_at = created_at
WHERE key = $1 AND EXISTS (SELECT 1 FROM paused_apis WHERE name = jobs.api_name)

-- name: active_jobs_of_api
SELECT job_id FROM jobs WHERE api_name = $1 AND status IN ({active_statuses}) ORDER BY key

-- name: pause_api
INSERT INTO paused_apis (name, paused_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING

-- name: resume_api
DELETE FROM paused_apis WHERE name = $1

-- name: paused_apis
SELECT name FROM paused_apis ORDER BY name
