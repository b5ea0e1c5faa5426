-- Leasing batches to workers, renewing, releasing and expiring the leases.

-- name: lease_queued
-- A paused job leases nothing: its flag is on the row this reads anyway, no query more.
-- Batches that have a row and wait (re-queued after a failure or a release), oldest
-- first; rows another transaction is leasing are skipped, not waited for.
UPDATE batches SET state = 'leased', attempts = attempts + 1, lease_token = $1,
    lease_expires_at = $2
WHERE id IN (
    SELECT id FROM batches WHERE state = 'queued' AND id BETWEEN $3 AND $4 ORDER BY id
    LIMIT $5 FOR UPDATE SKIP LOCKED
) AND EXISTS (SELECT 1 FROM jobs WHERE key = $6 AND status = 'running' AND paused = 0)
RETURNING id, attempts, payload

-- name: materialized_batches
-- How far the job's batches have rows; the rest are only in its chunks. The row stays
-- locked to the commit: one transaction at a time gives a job's batches their rows.
SELECT materialized, total_batch_count FROM jobs
WHERE key = $1 AND status = 'running' AND paused = 0
FOR NO KEY UPDATE

-- name: chunk_holding
-- The chunk holding a batch: the last one that starts before it.
SELECT id, payloads FROM chunks WHERE id BETWEEN $1 AND $2 ORDER BY id DESC LIMIT 1

-- name: insert_leased_batches
-- One statement for the grant: ($1 first id, $2 token, $3 expiry, $4 payloads in order).
INSERT INTO batches (id, state, attempts, lease_token, lease_expires_at, payload)
SELECT $1 + ordinality - 1, 'leased', 1, $2, $3, payload
FROM unnest($4::bytea[]) WITH ORDINALITY AS grant_rows (payload, ordinality)

-- name: set_materialized
UPDATE jobs SET materialized = $1 WHERE key = $2

-- name: release_leases
-- Never started: back to the queue without burning an attempt. ($1 ids, $2 tokens.)
UPDATE batches b SET state = 'queued', attempts = attempts - 1, lease_token = NULL,
    lease_expires_at = NULL
FROM unnest($1::bigint[], $2::bigint[]) AS held (id, token)
WHERE b.id = held.id AND b.state = 'leased' AND b.lease_token = held.token

-- name: renew_leases
-- ($1 expiry, $2 ids, $3 tokens.)
UPDATE batches b SET lease_expires_at = $1
FROM unnest($2::bigint[], $3::bigint[]) AS held (id, token)
WHERE b.id = held.id AND b.state = 'leased' AND b.lease_token = held.token

-- name: jobs_holding_leases
-- Only unfinished jobs hold leases: a job's end gives them back.
SELECT key, job_id, max_receive_count FROM jobs
WHERE status IN ({active_statuses}) AND leased_count > 0
ORDER BY key

-- name: expire_job_leases
-- Found by the job's id range, not an index: a batch on the usual path touches none.
-- Only this node's tokens ($5 to $6): another node's leases are its own to renew, and
-- are expired by the sweep once that node is lost (a node's clock, or an outage that
-- held its outcomes, must not expire what another node still holds).
UPDATE batches SET state = CASE WHEN attempts >= $1 THEN 'dead' ELSE 'queued' END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id BETWEEN $2 AND $3 AND state = 'leased' AND lease_expires_at < $4
    AND lease_token BETWEEN $5 AND $6
RETURNING id, state, attempts

-- name: insert_expiries
-- ($1 batch ids, $2 attempts, $3 reason as UTF-8, $4 time.)
INSERT INTO failures (batch, attempt, error, traceback, failed_at)
SELECT batch, attempt, $3, NULL, $4 FROM unnest($1::bigint[], $2::int[]) AS e (batch, attempt)
