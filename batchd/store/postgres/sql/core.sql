-- What every role shares: the schema version, a job's key, its counters and its columns.
-- A batch's id packs its job's key and its sequence number (key << 32 | seq).

-- name: migration_lock
-- Held to the end of the migrating transaction: daemons opening together migrate in turn.
SELECT pg_advisory_xact_lock(hashtext('batchd schema'))

-- name: create_version_table
CREATE TABLE IF NOT EXISTS batchd_schema (version integer NOT NULL)

-- name: schema_version
SELECT coalesce(max(version), 0) FROM batchd_schema

-- name: set_schema_version
WITH gone AS (DELETE FROM batchd_schema) INSERT INTO batchd_schema (version) VALUES ($1)

-- name: ping
-- A health check's round trip.
SELECT 1

-- name: job_key
SELECT key FROM jobs WHERE job_id = $1

-- name: move_counters
-- A job's batch counters, moved inside the transaction that moved its batches.
UPDATE jobs SET queued_count = queued_count + $1, leased_count = leased_count + $2,
    succeeded_count = succeeded_count + $3, dead_count = dead_count + $4,
    failure_count = failure_count + $5, duration_sum = duration_sum + $6
WHERE key = $7

-- name: job_columns
job_id, api_name, api_version, kind, status, workers, config, timeout, max_receive_count,
priority, total_batch_count, created_at, end_time, error, has_on_complete, retry_of,
batch_timeout, pruned_at, paused, paused_at, paused_seconds

-- name: count_columns
queued_count, leased_count, succeeded_count, dead_count, failure_count, duration_sum
