-- What every role shares: transactions, a job's key, its counters and its columns.
-- A batch's id packs its job's key and its sequence number (key << 32 | seq).

-- name: begin_immediate
BEGIN IMMEDIATE

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- name: schema_version
PRAGMA user_version

-- name: job_key
SELECT key FROM jobs WHERE job_id = ?

-- name: move_counters
-- A job's batch counters, moved inside the transaction that moved its batches.
UPDATE jobs SET queued_count = queued_count + ?, leased_count = leased_count + ?,
    succeeded_count = succeeded_count + ?, dead_count = dead_count + ?,
    failure_count = failure_count + ?, duration_sum = duration_sum + ?
WHERE key = ?

-- name: job_columns
job_id, api_name, api_version, kind, status, workers, config, timeout, max_receive_count,
priority, total_batch_count, created_at, end_time, error, has_on_complete, retry_of,
batch_timeout, pruned_at, paused, paused_at, paused_seconds

-- name: count_columns
queued_count, leased_count, succeeded_count, dead_count, failure_count, duration_sum
