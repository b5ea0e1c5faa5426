-- Leasing batches to workers, renewing, releasing and expiring the leases.

-- name: lease_queued
-- A paused job leases nothing: its flag is on the row this reads anyway, no query more.
-- Batches that have a row and wait (re-queued after a failure or a release), oldest first.
UPDATE batches SET state = 'leased', attempts = attempts + 1, lease_token = ?,
    lease_expires_at = ?
WHERE id IN (
    SELECT id FROM batches WHERE state = 'queued' AND id BETWEEN ? AND ? ORDER BY id LIMIT ?
) AND EXISTS (SELECT 1 FROM jobs WHERE key = ? AND status = 'running' AND paused = 0)
RETURNING id, attempts, payload

-- name: materialized_batches
-- How far the job's batches have rows; the rest are only in its chunks.
SELECT materialized, total_batch_count FROM jobs
WHERE key = ? AND status = 'running' AND paused = 0

-- name: chunk_holding
-- The chunk holding a batch: the last one that starts before it.
SELECT id, payloads FROM chunks WHERE id BETWEEN ? AND ? ORDER BY id DESC LIMIT 1

-- name: insert_leased_batch
INSERT INTO batches (id, state, attempts, lease_token, lease_expires_at, payload)
VALUES (?, 'leased', 1, ?, ?, ?)

-- name: set_materialized
UPDATE jobs SET materialized = ? WHERE key = ?

-- name: release_lease
-- Never started: back to the queue without burning an attempt.
UPDATE batches SET state = 'queued', attempts = attempts - 1, lease_token = NULL,
    lease_expires_at = NULL
WHERE id = ? AND state = 'leased' AND lease_token = ?

-- name: renew_lease
UPDATE batches SET lease_expires_at = ? WHERE id = ? AND state = 'leased' AND lease_token = ?

-- name: jobs_holding_leases
-- Only unfinished jobs hold leases: a job's end gives them back.
SELECT key, job_id, max_receive_count FROM jobs
WHERE status IN ({active_statuses}) AND leased_count > 0

-- name: expire_job_leases
-- Found by the job's id range, not an index: a batch on the usual path touches none.
UPDATE batches SET state = CASE WHEN attempts >= ? THEN 'dead' ELSE 'queued' END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id BETWEEN ? AND ? AND state = 'leased' AND lease_expires_at < ?
RETURNING id, state, attempts

-- name: insert_expiry
INSERT INTO failures (batch, attempt, error, traceback, failed_at) VALUES (?, ?, ?, NULL, ?)
